"""Early stopping across trials (`median`, `asha`, `hyperband`), decided from the database."""

from __future__ import annotations

from typing import Any

from tuner.early_stop._asha import ASHA, promotable, rungs
from tuner.early_stop._hyperband import Hyperband, bracket_of, bracket_weights
from tuner.early_stop._median import MedianStop
from tuner.early_stop.base import Curves, EarlyStop, best_so_far, read_curves

RULES: dict[str, type[EarlyStop]] = {r.name: r for r in (MedianStop, ASHA, Hyperband)}


def make_early_stop(rule: str | EarlyStop | None) -> EarlyStop | None:
    if rule is None or isinstance(rule, EarlyStop):
        return rule
    try:
        return RULES[rule]()
    except KeyError:
        raise ValueError(
            f"early_stop: unknown rule {rule!r} (choose from {', '.join(RULES)})"
        ) from None


def early_stop_from_dict(data: dict[str, Any] | None) -> EarlyStop | None:
    if not data:
        return None
    options = dict(data)
    return RULES[options.pop("name")](**options)


__all__ = ["ASHA", "Curves", "EarlyStop", "Hyperband", "MedianStop", "RULES", "best_so_far",
           "bracket_of", "bracket_weights", "early_stop_from_dict", "make_early_stop",
           "promotable", "read_curves", "rungs"]
