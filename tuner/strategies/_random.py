from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tuner.space import Space
from tuner.strategies.base import Strategy, sample_missing, trial_seed


class RandomSearch(Strategy):
    """Independent uniform (or log-uniform) samples; trial n's sample depends only on the
    study's seed and n, so a resumed or parallel study draws the same configurations."""

    name = "random"
    learns = False

    def ask(self, number: int, space: Space) -> dict[str, Any]:
        return space.sample(np.random.default_rng(trial_seed(self.seed, number)))

    def complete(self, number: int, params: Mapping[str, Any], space: Space) -> dict[str, Any]:
        # From the generator `ask` used: a trial gets what it would be asked with now, so its
        # values do not depend on when the coordinator learnt of the new parameters.
        return sample_missing(params, space, np.random.default_rng(trial_seed(self.seed, number)))
