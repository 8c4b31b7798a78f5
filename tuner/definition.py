"""A study definition: the plain Python file a user writes.

It names what to tune and how to judge it:

    metric = "val_accuracy"          # optional, this is the default; or a list of objectives
    direction = "maximize"           # optional, inferred from the metric (a list for a list)
    constraints = {"params": ("<=", 50_000)}   # optional; see tuner.objectives
    def measures(model, data): ...   # optional: {name: number} measured after training
    epochs, batch_size, patience     # optional fit settings
    early_stop = "asha"              # optional: stop poor trials early, across trials
    space = Space(...)               # optional declarative space
    def load_data(): ...             # -> (x_train, y_train), (x_val, y_val)
    def build_model(hp): ...         # or `hypermodel = MyHyperModel()` (KerasTuner's)
    def objective(hp): ...           # or a plain function returning the metric (no Keras)

Workers import the same file by path, so it must exist on every host that runs trials.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.early_stop import make_early_stop
from tuner.errors import DefinitionError, SpaceError
from tuner.objectives import (
    Objective,
    infer_direction,
    parse_constraints,
    parse_objectives,
    to_settings,
)
from tuner.space import Space

_FIT_DEFAULTS = {"epochs": 10, "batch_size": 32, "patience": 3}


@dataclass(frozen=True, kw_only=True)
class StudyDefinition:
    """What a worker needs to run a trial, and what a study is judged by."""

    build_model: Callable[[Any], Any] | None = None
    hypermodel: Any = None
    objective: Callable[[Any], Any] | None = None  # hp -> value (or {metric: value})
    # KerasTuner's Tuner.run_trial(trial, *fit_args, **fit_kwargs): what `Tuner.search()`
    # defines, with the arguments search() was given (passed to every trial's fit).
    run_trial: Callable[..., Any] | None = None
    fit_args: tuple[Any, ...] = ()
    fit_kwargs: dict[str, Any] = field(default_factory=dict)
    load_data: Callable[[], Any] | None = None
    space: Space = field(default_factory=Space)
    # HyperParameters' keyword arguments for every trial (KerasTuner's `hyperparameters`
    # overriding what the model declares, tune_new_entries, allow_new_entries).
    hp_options: dict[str, Any] = field(default_factory=dict)
    metric: Any = "val_accuracy"  # a name, or a list of names for several objectives
    direction: Any = ""  # one per metric; inferred from each name when empty
    # Or the objectives themselves: `Objective`s, (name, direction) pairs or names; then
    # `metric` and `direction` become the first one's.
    objectives: Any = ()
    constraints: Any = None  # {"params": ("<=", 50_000)}: a trial breaking one is infeasible
    measures: Callable[[Any, Any], Any] | None = None  # (model, data) -> {name: number}
    epochs: int = _FIT_DEFAULTS["epochs"]
    batch_size: int = _FIT_DEFAULTS["batch_size"]
    patience: int | None = _FIT_DEFAULTS["patience"]
    early_stop: Any = None  # "median" | "asha" | "hyperband" | an EarlyStop, across trials
    retries: int = 0  # a trial that raises runs again this often (not on FailedTrialError)
    name: str | None = None
    path: str | None = None
    source_hash: str | None = None

    def __post_init__(self) -> None:
        if (self.build_model is None and self.hypermodel is None and self.objective is None
                and self.run_trial is None):
            where = self.path or "the study definition"
            raise DefinitionError(
                f"{where} defines none of build_model(hp), a KerasTuner `hypermodel` "
                "or objective(hp)"
            )
        try:
            objectives = (_objectives(self.objectives) if self.objectives
                          else parse_objectives(self.metric, self.direction))
            constraints = parse_constraints(self.constraints)
        except ValueError as exc:
            raise DefinitionError(str(exc)) from None
        object.__setattr__(self, "objectives", objectives)
        object.__setattr__(self, "constraints", constraints)
        object.__setattr__(self, "metric", objectives[0].name)
        object.__setattr__(self, "direction", objectives[0].direction)
        if self.measures is not None and not callable(self.measures):
            raise DefinitionError("measures must be a function (model, data) -> {name: number}")
        if not isinstance(self.space, Space):
            raise DefinitionError(f"space must be a tuner.Space, got {type(self.space).__name__}")
        try:
            object.__setattr__(self, "early_stop", make_early_stop(self.early_stop))
        except ValueError as exc:
            raise DefinitionError(str(exc)) from None
        if len(objectives) > 1 and self.early_stop is not None and self.early_stop.name == "median":
            raise DefinitionError("early_stop='median' judges one objective; with several, "
                                  "use 'asha' or 'hyperband' (they rank by Pareto fronts)")
        for key in ("epochs", "batch_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise DefinitionError(f"{key}={value!r} must be a positive integer")

    def build(self, hp: Any) -> Any:
        if self.hypermodel is not None:
            return self.hypermodel.build(hp)
        return self.build_model(hp)  # type: ignore[misc]

    @property
    def settings(self) -> dict[str, Any]:
        rule = self.early_stop.to_dict() if self.early_stop is not None else None
        return {"epochs": self.epochs, "batch_size": self.batch_size, "patience": self.patience,
                "early_stop": rule, "retries": self.retries,
                **to_settings(self.objectives, self.constraints)}


def _objectives(given: Any) -> tuple[Objective, ...]:
    """Objectives given as `Objective`s (ours or KerasTuner's: name and direction), (name,
    direction) pairs or names."""
    if isinstance(given, (str, Objective)) or not isinstance(given, (list, tuple)):
        given = [given]
    names, directions = [], []
    for item in given:
        if isinstance(item, str):
            name, direction = item, ""
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            name, direction = item
        elif hasattr(item, "name") and hasattr(item, "direction"):
            name, direction = item.name, item.direction
        else:
            raise ValueError(f"objectives: {item!r} is not an objective (name, direction)")
        direction = {"max": "maximize", "min": "minimize"}.get(direction, direction)
        names.append(name)
        directions.append(direction)
    if not any(directions):
        return parse_objectives(names)
    return parse_objectives(names, [d or infer_direction(n)
                                    for n, d in zip(names, directions, strict=True)])


def file_hash(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_definition(path: str | Path) -> StudyDefinition:
    """Import a study file and read its definition; every problem is a `DefinitionError`."""
    path = Path(path)
    if not path.is_file():
        raise DefinitionError(f"study file {str(path)!r} does not exist")
    module_name = f"tuner_study_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise DefinitionError(f"{path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except (SpaceError, DefinitionError) as exc:
        raise DefinitionError(f"{path}: {exc}") from None
    except Exception as exc:
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        raise DefinitionError(
            f"{path} failed to import: {type(exc).__name__}: {exc} "
            f"(at {Path(frame.filename).name}:{frame.lineno})"
        ) from None
    options = {
        key: getattr(module, key)
        for key in ("build_model", "hypermodel", "objective", "load_data", "space", "metric",
                    "direction", "constraints", "measures",
                    "epochs", "batch_size", "patience", "early_stop", "name")
        if hasattr(module, key)
    }
    if "load_data" not in options and "objective" not in options:
        raise DefinitionError(f"{path} has no load_data() function")
    options["name"] = options.get("name") or path.stem
    if not isinstance(options["name"], str):
        raise DefinitionError(f"{path}: name = {options['name']!r} must be a string")
    return StudyDefinition(**options, path=str(path.resolve()), source_hash=file_hash(path))


def load_study_file(name: str, path: str | None, source: str | None,
                    expected_hash: str | None) -> StudyDefinition:
    """The study file as a worker finds it: at the coordinator's absolute `path`, or at
    `source` (that path relative to the coordinator's working directory) under this
    process's working directory. It must be the coordinator's copy, byte for byte."""
    if not path:
        raise DefinitionError(
            f"study {name!r} was defined in Python, not in a file a worker can import; "
            "run it with the InProcess executor"
        )
    from tuner import shipping  # a package of a definition made in Python
    candidates = [Path(path)] + ([Path.cwd() / source] if source else [])
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise DefinitionError(
            f"study {name!r}: its file is not on this host (looked for "
            + " and ".join(repr(str(c)) for c in candidates)
            + "); copy it there, or start the worker in the folder the study was run from"
        )
    digest = file_hash(found)
    if expected_hash and digest != expected_hash:
        raise DefinitionError(
            f"study {name!r}: {found} differs from the coordinator's copy "
            f"(sha256 {digest[:12]}… here, {expected_hash[:12]}… there); "
            "copy the coordinator's file to this host"
        )
    return shipping.unpack(found) if shipping.is_package(found) else load_definition(found)
