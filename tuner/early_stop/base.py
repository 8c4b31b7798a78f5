"""Early stopping across trials: should a running trial stop after this epoch?

A rule sees only the per-epoch curves stored in the database (every trial's metric per
epoch), so whichever host asks gets the same answer. Curves arrive signed so that
higher is better; the rule never needs the direction.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from tuner.storage import Storage, StudyRecord

Curve = Sequence[float | None]


def best_so_far(curve: Curve, epochs: int) -> float | None:
    """The best value among the first `epochs` epochs of a curve."""
    values = [v for v in curve[:epochs] if v is not None]
    return max(values) if values else None


@dataclass(frozen=True)
class Curves:
    """What a rule decides from: every trial's signed per-epoch values."""

    values: Mapping[int, Curve]  # trial number -> value per epoch, higher is better
    finished: frozenset[int]  # trials that ran to their end (COMPLETE or PRUNED)
    max_epochs: int
    seed: int
    # With several objectives: trial number -> each epoch's signed objective values (None
    # for an epoch that lacks one); rules then rank by Pareto fronts.
    vectors: Mapping[int, Sequence[tuple[float, ...] | None]] | None = None


class EarlyStop(ABC):
    name: ClassVar[str]

    @abstractmethod
    def should_stop(self, number: int, epochs_done: int, curves: Curves) -> bool:
        """True if trial `number`, having finished `epochs_done` epochs, should stop now."""

    #: stop by pausing at a rung (checkpointed) rather than for good: `promotions` then
    #: resumes the paused trials the rung's rule lets go on as other trials arrive
    promotion: bool = False

    def promotions(self, paused: Mapping[int, int], curves: Curves) -> list[int]:
        """Which paused trials (number -> epochs done) may go on now: those the rule
        would no longer stop at the rung where they paused, by the curves as they are."""
        return sorted(n for n, epochs in paused.items()
                      if not self.should_stop(n, epochs, curves))

    def to_dict(self) -> dict[str, Any]:
        fields = asdict(self)  # type: ignore[call-overload]
        if not fields.get("promotion", True):  # as studies stored before it existed
            del fields["promotion"]
        return {"name": self.name, **fields}


def read_curves(storage: Storage, study: StudyRecord) -> Curves:
    """The study's curves as a rule reads them: signed so that higher is better."""
    if not study.multi_objective:
        values, finished = storage.curves(study.id)
        signed = {n: [None if v is None else study.sign * v for v in curve]
                  for n, curve in values.items()}
        return Curves(signed, finished, study.settings["epochs"], study.seed)
    # Several objectives: each epoch's signed vector, read in the same one query; the
    # first objective's curve is its first component.
    objectives = study.objectives
    epochs, finished = storage.curves(study.id, [o.name for o in objectives])
    vectors = {n: [None if None in epoch else tuple(
                   o.sign * v for o, v in zip(objectives, epoch, strict=True))
                   for epoch in curve]
               for n, curve in epochs.items()}
    signed = {n: [None if epoch[0] is None else objectives[0].sign * epoch[0]
                  for epoch in curve] for n, curve in epochs.items()}
    return Curves(signed, finished, study.settings["epochs"], study.seed, vectors)
