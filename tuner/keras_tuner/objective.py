"""KerasTuner's `Objective`: a metric's name and whether it is minimized or maximized."""

from __future__ import annotations

from typing import Any

from tuner.objectives import infer_direction

DEFAULT_OBJECTIVE = "default_objective"  # what run_trial or fit returns, when nothing is named


class Objective:
    def __init__(self, name: str, direction: str) -> None:
        if direction not in ("min", "max"):
            raise ValueError(f"direction: {direction!r} must be 'min' or 'max'")
        self.name, self.direction = name, direction

    @property
    def study_direction(self) -> str:
        return "maximize" if self.direction == "max" else "minimize"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Objective) and (self.name, self.direction)
                == (other.name, other.direction))

    def __hash__(self) -> int:
        return hash((self.name, self.direction))

    def __repr__(self) -> str:
        return f'Objective(name="{self.name}", direction="{self.direction}")'


class MultiObjective:
    """Several objectives, judged together: the study keeps the Pareto front of them (where
    KerasTuner would sum them into one number). Its name and direction are the first's."""

    def __init__(self, objectives: list[Objective]) -> None:
        self.objectives = objectives
        self.name, self.direction = objectives[0].name, objectives[0].direction

    @property
    def study_direction(self) -> str:
        return self.objectives[0].study_direction

    def __repr__(self) -> str:
        return f"MultiObjective({self.objectives!r})"


def create_objective(objective: Any) -> Objective | MultiObjective:
    """A tuner's `objective`: a name (its direction inferred, as KerasTuner does), an
    `Objective`, a list of them (several objectives), or None (the value run_trial or
    HyperModel.fit returns, minimized)."""
    if objective is None:
        return Objective(DEFAULT_OBJECTIVE, "min")
    if isinstance(objective, Objective):
        return objective
    if isinstance(objective, str):
        return Objective(objective, "max" if infer_direction(objective) == "maximize" else "min")
    if isinstance(objective, (list, tuple)) and objective:
        objectives = [create_objective(o) for o in objective]
        if any(not isinstance(o, Objective) or o.name == DEFAULT_OBJECTIVE for o in objectives):
            raise ValueError(f"objective: {objective!r} must list names or Objectives")
        return objectives[0] if len(objectives) == 1 else MultiObjective(objectives)
    raise ValueError(f"objective: {objective!r} is not a name, a keras_tuner.Objective or a "
                     "list of them")
