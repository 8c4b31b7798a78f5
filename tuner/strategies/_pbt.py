"""Population-based training (Jaderberg et al. 2017), asynchronous.

A population of members trains in segments of `interval` epochs; each segment is one
trial, checkpointed at its end. When a member's segment ends at epoch e, the member is
ranked against the members that have reached epoch e too (equal training, so a fair
comparison; whoever is first at e just goes on):
- in the bottom quantile, it exploits: it continues from the checkpoint of a member
  drawn from the top quantile, with that member's hyperparameters, which it explores
  (perturbs by 0.8 or 1.2, steps to a neighbouring choice, or resamples);
- otherwise it continues from its own checkpoint with its own hyperparameters.
Only mutable parameters (learning rate, dropout, batch size...) are explored; the others
(the architecture) stay as sampled, since weights are copied between members.
No member waits for another. Each trial's `attrs` hold the lineage: member, generation,
the segment of epochs, the checkpoint it started from and whom it copied.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from tuner.artifacts import Artifacts
from tuner.space import Float, Int, Param, Space
from tuner.states import TrialState
from tuner.storage.records import Trial
from tuner.strategies.base import WAIT, Proposal, Strategy, sample_missing, trial_seed

log = logging.getLogger(__name__)


def quantiles(scores: Mapping[int, float], fraction: float) -> tuple[list[int], list[int]]:
    """The bottom and top `fraction` of members by score (higher is better); at least one
    each once two members have scores, and never the same member in both."""
    ranked = sorted(scores, key=lambda member: (scores[member], member))
    if len(ranked) < 2:
        return [], []
    count = min(max(1, math.floor(len(ranked) * fraction)), len(ranked) // 2)
    return ranked[:count], ranked[-count:]


def perturb(param: Param, value: Any, rng: np.random.Generator,
            factors: Sequence[float] = (0.8, 1.2)) -> Any:
    """Nudge a value: a continuous one times 0.8 or 1.2 (kept in range), a discrete one
    to a neighbouring value."""
    if isinstance(param, (Int, Float)) and param.step is None:
        scaled = min(max(value * float(rng.choice(factors)), param.low), param.high)
        return int(round(scaled)) if isinstance(param, Int) else float(scaled)
    values = param.grid()
    index = values.index(value) if value in values else 0
    neighbours = [i for i in (index - 1, index + 1) if 0 <= i < len(values)]
    return values[int(rng.choice(neighbours))] if neighbours else value


def explore(params: Mapping[str, Any], space: Space, mutable: Sequence[str],
            rng: np.random.Generator, resample_probability: float) -> dict[str, Any]:
    """A perturbed copy of `params`: each mutable parameter is resampled from the space
    with `resample_probability`, else perturbed."""
    explored = dict(params)
    for name in mutable:
        if name not in explored:
            continue  # inactive in this configuration
        param = space[name]
        if rng.random() < resample_probability:
            explored[name] = param.sample(rng)
        else:
            explored[name] = perturb(param, explored[name], rng)
    return explored


@dataclass(frozen=True)
class PBTSegment:
    """What PBT records on each trial it proposes (`Trial.attrs`): member `member`'s
    `generation`-th stretch of `epochs` epochs from epoch `start`, continuing the checkpoint
    of trial `restore` (None: from scratch); `copied_from` is the member it exploited, if it
    did."""

    member: int
    generation: int
    copied_from: int | None
    start: int
    epochs: int
    restore: int | None

    @property
    def end(self) -> int:
        """The epoch it trains up to (exclusive), counted from 0 as Keras does."""
        return self.start + self.epochs

    def to_attrs(self) -> dict[str, Any]:
        """The trial's attrs as stored: the database format."""
        return {
            "member": self.member, "generation": self.generation, "copied_from": self.copied_from,
            "segment": {"start": self.start, "epochs": self.epochs, "restore": self.restore},
        }

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any] | None) -> PBTSegment | None:
        """The segment `attrs` (as `to_attrs` made them) record; None for a trial PBT did not
        propose."""
        if not attrs or "member" not in attrs:
            return None
        part = attrs["segment"]
        return cls(member=attrs["member"], generation=attrs["generation"],
                   copied_from=attrs["copied_from"], start=part["start"],
                   epochs=part["epochs"], restore=part["restore"])

    @classmethod
    def of(cls, trial: Trial) -> PBTSegment | None:
        """`trial`'s segment; None for a trial PBT did not propose."""
        return cls.from_attrs(trial.attrs)


def _segment(trial: Trial) -> PBTSegment:
    """The segment of a trial PBT proposed (the only trials it tracks)."""
    segment = PBTSegment.of(trial)
    if segment is None:
        raise KeyError(f"trial {trial.number} is not a PBT segment")
    return segment


def end_epoch(trial: Trial) -> int:
    return _segment(trial).end


class PBT(Strategy):
    """`population` members (default: the `trials` asked for), ranked every `interval`
    epochs; the bottom `quantile` copies from the top one and explores."""

    name = "pbt"
    multi_objective = False  # its members exploit by one value

    def __init__(self, population: int | None = None, interval: int = 2,
                 quantile: float = 0.25, resample_probability: float = 0.25,
                 mutable: Sequence[str] | None = None) -> None:
        if population is not None and population < 2:
            raise ValueError(f"population: {population} must be at least 2")
        if interval < 1:
            raise ValueError(f"interval: {interval} must be at least 1")
        if not 0 < quantile <= 0.5:
            raise ValueError(f"quantile: {quantile} must be in (0, 0.5]")
        if not 0 <= resample_probability <= 1:
            raise ValueError(f"resample_probability: {resample_probability} must be in [0, 1]")
        self.population = population
        self.interval = interval
        self.quantile = quantile
        self.resample_probability = resample_probability
        self.mutable = list(mutable) if mutable is not None else None

    def options(self) -> dict[str, Any]:
        return {"population": self.population, "interval": self.interval,
                "quantile": self.quantile, "resample_probability": self.resample_probability,
                "mutable": self.mutable}

    def check(self, space: Space) -> None:
        self._mutable = self.mutable if self.mutable is not None else [
            p.name for p in space if p.mutable]
        unknown = [name for name in self._mutable if name not in space]
        if unknown:
            raise ValueError(f"mutable: not parameters of the space: {', '.join(unknown)} "
                             f"(its parameters: {', '.join(space.names)})")
        if not self._mutable:
            raise ValueError("PBT needs mutable parameters: mark them, e.g. "
                             "Float(1e-4, 1e-1, log=True, mutable=True), or name them "
                             "(--mutable learning_rate,dropout; PBT(mutable=[...]))")

    # -- the population, rebuilt from the trials ------------------------------------------
    def start(self, space: Space, *, direction: str, seed: int, trials: Sequence[Trial],
              settings: Mapping[str, Any] | None = None) -> None:
        super().start(space, direction=direction, seed=seed, trials=trials, settings=settings)
        self.epochs = int(self.settings.get("epochs", 1))
        url = self.settings.get("artifacts")
        self.artifacts = Artifacts(url) if url else None
        self._latest: dict[int, Trial] = {}  # member -> its latest finished segment
        self._at: dict[int, dict[int, Trial]] = {}  # member -> end epoch -> COMPLETE segment
        self._pending: dict[int, Trial] = {}  # member -> its queued or running segment
        self._best: Trial | None = None  # the best segment so far: its model is the answer
        for trial in sorted(trials, key=lambda t: t.number):
            if PBTSegment.of(trial) is not None:
                self._note(trial)
        self._clean_checkpoints()

    def _note(self, trial: Trial) -> None:
        member = _segment(trial).member
        if not trial.state.is_finished():
            self._pending[member] = trial
            return
        self._latest[member] = trial
        if trial.state == TrialState.COMPLETE and trial.value is not None:
            self._at.setdefault(member, {})[end_epoch(trial)] = trial
        if member in self._pending and self._pending[member].number == trial.number:
            del self._pending[member]
        if trial.state == TrialState.COMPLETE and trial.value is not None and (
                self._best is None or self.sign * trial.value > self.sign * self._best.value):
            self._best = trial

    def trial_budget(self, requested: int) -> int:
        """`trials` sets the population; the budget is every member's segments."""
        if self.population is None:
            self.population = max(2, requested)
        return self.population * math.ceil(self.epochs / self.interval)

    # -- proposing ------------------------------------------------------------------------
    def ask(self, number: int, space: Space) -> Proposal | None:
        rng = np.random.default_rng(trial_seed(self.seed, number))
        members = set(self._latest) | set(self._pending)
        if len(members) < (self.population or 2):  # grow the population first
            member = len(members)
            return self._propose(number, member, space.sample(rng), start=0, restore=None,
                                 generation=0, copied_from=None)
        ready = [m for m, t in sorted(self._latest.items())
                 if m not in self._pending and t.state == TrialState.COMPLETE
                 and end_epoch(t) < self.epochs]
        if not ready:
            return WAIT if self._pending else None
        # The least trained member first, so the population moves on together.
        member = min(ready, key=lambda m: (end_epoch(self._latest[m]), m))
        own = self._latest[member]
        epoch = end_epoch(own)
        source, copied_from, params = own, None, dict(own.params)
        scores = {m: self.sign * at[epoch].value for m, at in self._at.items() if epoch in at}
        bottom, top = quantiles(scores, self.quantile)
        if member in bottom:
            copied_from = top[int(rng.integers(len(top)))]
            source = self._at[copied_from][epoch]
            params = explore(source.params, space, self._mutable, rng, self.resample_probability)
        generation = _segment(own).generation + 1
        return self._propose(number, member, params, start=epoch,
                             restore=source.number, generation=generation,
                             copied_from=copied_from)

    def _propose(self, number: int, member: int, params: dict[str, Any], *, start: int,
                 restore: int | None, generation: int, copied_from: int | None) -> Proposal:
        attrs = PBTSegment(member=member, generation=generation, copied_from=copied_from,
                           start=start, epochs=min(self.interval, self.epochs - start),
                           restore=restore).to_attrs()
        self._pending[member] = Trial(id=0, number=number, state=TrialState.QUEUED,
                                      params=params, attrs=attrs)
        return Proposal(params, attrs)

    def complete(self, number: int, params: Mapping[str, Any], space: Space) -> dict[str, Any]:
        # Drawn as a new member's values are, from (seed, trial number): the same anywhere.
        values = sample_missing(params, space, np.random.default_rng(trial_seed(self.seed, number)))
        for member, trial in self._pending.items():
            if trial.number == number:  # the segment as it will run
                self._pending[member] = replace(trial, params=values)
        return values

    def tell(self, trial: Trial) -> None:
        if PBTSegment.of(trial) is not None:
            self._note(trial)
            self._clean_checkpoints()

    # -- checkpoints ----------------------------------------------------------------------
    def _clean_checkpoints(self) -> None:
        """Keep each member's latest checkpoint; those at epochs a live member has yet to
        reach (it may copy them); those of segments not finished yet (a running one writes
        its own just before it finishes) and those they start from; and the best one (its
        model is the study's answer). Delete the rest."""
        if self.artifacts is None:
            return
        # How far the slowest live member is: a member not created yet is at epoch 0, a
        # failed one is out of the race.
        progress = [_segment(self._pending[m]).start if m in self._pending
                    else end_epoch(self._latest[m])
                    for m in set(self._latest) | set(self._pending)
                    if m in self._pending or self._latest[m].state == TrialState.COMPLETE]
        complete = self.population is not None and len(progress) >= self.population
        behind = min(progress) if complete and progress else 0
        keep = {t.number for t in self._latest.values()}
        keep |= {t.number for at in self._at.values() for e, t in at.items() if e >= behind}
        keep |= {t.number for t in self._pending.values()}
        keep |= {_segment(t).restore for t in self._pending.values()}
        if self._best is not None:
            keep.add(self._best.number)
        for number in self.artifacts.numbers():
            if number not in keep:
                self.artifacts.delete(number)
