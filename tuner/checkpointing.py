"""How often a Keras trial saves what it needs to carry on after a crash.

`--checkpoint-every 60s` (the default), `5m`, `3 epochs` or `off`. A trial requeued after
its worker died resumes from its last checkpoint on any worker, so a crash costs at most
one interval of training, not the trial.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

_FORM = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|sec|seconds?|m|min|minutes?|e|epochs?)\s*",
                   re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class CheckpointEvery:
    """Checkpoint after the first epoch that ends `seconds` after the last checkpoint, or
    every `epochs` epochs."""

    seconds: float | None = 60.0
    epochs: int | None = None

    @classmethod
    def parse(cls, text: str) -> CheckpointEvery | None:
        """`60s`, `5m`, `3 epochs` (`3e`), or `off` (None: no checkpoints)."""
        if text.strip().lower() in ("off", "0", "none", "never"):
            return None
        match = _FORM.fullmatch(text)
        if match is None or float(match[1]) <= 0:
            raise ValueError(f"checkpoint_every: {text!r} is not an interval (write e.g. "
                             "60s, 5m, 3 epochs, or off)")
        number, unit = float(match[1]), match[2].lower()
        if unit.startswith("e"):
            if not number.is_integer():
                raise ValueError(f"checkpoint_every: {text!r}: epochs are whole numbers")
            return cls(seconds=None, epochs=int(number))
        return cls(seconds=number * (60 if unit.startswith("m") else 1))

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> CheckpointEvery | None:
        """A study's setting: the default for studies stored without one."""
        stored = settings.get("checkpoint_every", asdict(cls()))
        return None if stored is None else cls(**stored)

    def to_settings(self) -> dict[str, Any]:
        return asdict(self)

    def due(self, epochs_since: int, seconds_since: float) -> bool:
        if self.epochs is not None:
            return epochs_since >= self.epochs
        return self.seconds is not None and seconds_since >= self.seconds

    def __str__(self) -> str:
        if self.epochs is not None:
            return f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}"
        return f"{self.seconds:g}s"
