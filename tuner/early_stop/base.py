"""Early stopping across trials: should a running trial stop after this epoch?

A rule sees only the per-epoch curves stored in the database (every trial's metric per
epoch), so whichever host asks gets the same answer. Curves arrive signed so that
higher is better; the rule never needs the direction.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

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


class EarlyStop(ABC):
    name: ClassVar[str]

    @abstractmethod
    def should_stop(self, number: int, epochs_done: int, curves: Curves) -> bool:
        """True if trial `number`, having finished `epochs_done` epochs, should stop now."""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}  # type: ignore[call-overload]
