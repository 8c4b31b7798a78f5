"""The Python API: create or load a study, optimize it, read its results.

    study = Study.create("digits", definition="studies/digits_mlp.py", strategy="bayes")
    study.optimize(trials=20, workers=2)
    study.best_trial.params, study.trials_dataframe()

Every number comes from the database, so the CLI, reports and this API always agree.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import random
import sys
import tempfile
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

from tuner import analysis, processes, shipping
from tuner.artifacts import Artifacts, best_models
from tuner.checkpointing import CheckpointEvery
from tuner.coordinator import Coordinator, CoordinatorOptions, Progress
from tuner.definition import StudyDefinition, load_definition
from tuner.early_stop import EarlyStop, early_stop_from_dict
from tuner.errors import (
    DefinitionError,
    NoTunerDatabase,
    StudyExists,
    StudyNotFound,
    TunerError,
)
from tuner.executors import Executor, InProcess, make_executor
from tuner.hyperparameters import HyperParameters
from tuner.objectives import Objective
from tuner.ranking import sort_trials
from tuner.space import Space, describe
from tuner.states import TrialState
from tuner.storage import (
    DEFAULT_URL,
    LEASE_GRACE,
    Storage,
    StudyRecord,
    Trial,
    WorkerRecord,
    safe_url,
    shown_epoch,
)
from tuner.strategies import PBTSegment, Strategy, make_strategy, strategy_name

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


def _checkpoint_setting(every: CheckpointEvery | None) -> dict[str, Any] | None:
    return None if every is None else every.to_settings()


def discover_space(definition: StudyDefinition) -> Space:
    """The declared space plus what `build_model(hp)` registers when built with defaults.

    Parameters behind branches the defaults do not take are found later, by the trials
    that take them. A build that fails here is left for the trials to report.
    """
    if definition.objective is not None or (definition.hypermodel is None
                                            and definition.build_model is None):
        return definition.space  # an objective or run_trial: calling it runs a whole trial
    hp = HyperParameters(definition.space, definition.space.defaults(), **definition.hp_options)
    try:
        definition.build(hp)
    except TunerError:
        raise
    except Exception as exc:
        log.warning("building the model with default parameters failed: %s", exc)
    finally:
        _clear_keras_session()
    return hp.space


def _clear_keras_session() -> None:
    keras = sys.modules.get("keras")
    if keras is not None:
        keras.backend.clear_session()


class Study:
    def __init__(self, storage: Storage, record: StudyRecord,
                 strategy: Strategy | None = None, definition: StudyDefinition | None = None,
                 *, created: bool = False):
        self.storage = storage
        self._record = record
        self._strategy = strategy
        self._definition = definition
        self.created = created  # by this object, rather than loaded

    # -- creating and loading ----------------------------------------------------------
    @classmethod
    def create(
        cls, name: str | None = None, *, definition: str | Path | StudyDefinition,
        storage: str | Storage = DEFAULT_URL, strategy: str | Strategy | None = None,
        seed: int | None = None, epochs: int | None = None,
        early_stop: str | EarlyStop | None = None, artifacts: str | None = None,
        load_if_exists: bool = False, allow_changed_file: bool = False,
        checkpoint_every: str | CheckpointEvery | None = None,
        objectives: Any = None, constraints: Any = None,
    ) -> Study:
        """Create a study (or resume it with `load_if_exists`, checking it is the same).

        `strategy` defaults to "bayes" for a new study; on a resume, options left out
        (strategy, epochs, early_stop) keep the study's own. A resume whose study file
        changed (its space, code or settings) is refused unless `allow_changed_file`,
        which records the change on the study. `artifacts` is where weights and
        checkpoints go: a folder or any fsspec URL, by default `tuner-artifacts/<name>`
        beside the SQLite file (or in this folder for a database server).
        `checkpoint_every` ("60s" by default, "5m", "3 epochs", "off") is how often a Keras
        trial saves a checkpoint to resume from if its worker dies; given on a resume, it
        replaces the study's own. `objectives` (names, (name, direction) pairs or
        `Objective`s) and `constraints` (`{"params": ("<=", 50_000)}`) replace the
        definition's.
        """
        every = (CheckpointEvery.parse(checkpoint_every) if isinstance(checkpoint_every, str)
                 else checkpoint_every)
        if seed is not None and not 0 <= seed < 2**31:
            raise ValueError(f"seed: {seed} must be in [0, 2**31)")  # the column's range
        store = storage if isinstance(storage, Storage) else Storage(storage)
        definition = _as_definition(definition)
        if objectives is not None:
            definition = replace(definition, objectives=objectives)
        if constraints is not None:
            definition = replace(definition, constraints=constraints)
        name = check_name(name or definition.name)
        record = store.find_study(name)
        if record is not None and not load_if_exists:
            raise StudyExists(f"a study named {name!r} already exists")
        chosen = None
        if record is not None:  # options left out keep the study's own
            if strategy is None or strategy == record.strategy:  # a name keeps its options
                strategy = record.strategy
                chosen = make_strategy(strategy, record.settings.get("strategy_options"))
            epochs = epochs or record.settings.get("epochs")
            early_stop = early_stop or early_stop_from_dict(record.settings.get("early_stop"))
        if epochs is not None:
            definition = replace(definition, epochs=epochs)
        if early_stop is not None:
            definition = replace(definition, early_stop=early_stop)
        strategy = strategy or "bayes"
        chosen = chosen or make_strategy(strategy)
        checkpoints = every if checkpoint_every is not None else (
            CheckpointEvery() if record is None else CheckpointEvery.from_settings(record.settings))
        if definition.early_stop is not None and definition.early_stop.promotion and (
                checkpoints is None):
            raise ValueError("early_stop: promotion pauses trials at a checkpoint, so it "
                             "needs checkpoints (checkpoint_every, not off)")
        space = discover_space(definition)
        if record is None:
            check_objectives(chosen, definition)  # a refused run leaves nothing behind
            chosen.check(space)
            try:
                record = store.create_study(
                    name, metric=definition.metric, direction=definition.direction,
                    strategy=strategy_name(strategy),
                    seed=random.randrange(2**31) if seed is None else seed,
                    space=space.to_dict(), settings={
                        **definition.settings, "strategy_options": chosen.options(),
                        "source": _relative_to_cwd(definition.path),
                        "artifacts": artifacts or default_artifacts(store, name),
                        "checkpoint_every": _checkpoint_setting(
                            CheckpointEvery() if checkpoint_every is None else every)},
                    definition=definition.path, definition_hash=definition.source_hash,
                )
                return cls(store, record, chosen, definition, created=True)
            except StudyExists:  # created meanwhile by another run: resume it
                if not load_if_exists:
                    raise
                return cls.create(name, definition=definition, storage=store,
                                  strategy=strategy, seed=seed, artifacts=artifacts,
                                  load_if_exists=True, allow_changed_file=allow_changed_file,
                                  checkpoint_every=checkpoint_every)
        changes = differences(record, definition, space, strategy_name(strategy),
                              chosen.options(), seed)
        if changes["fixed"] or (changes["file"] and not allow_changed_file):
            raise StudyExists(
                f"study {record.name!r} exists with " + "; ".join(
                    changes["fixed"] + changes["file"])
                + (". Resume it with the same options, or pick another --name"
                   if changes["fixed"] else
                   ". Restore the study's own file, pick another --name, or resume anyway "
                   "with --allow-changed-file (allow_changed_file=True), which records the "
                   "change on the study")
            )
        if changes["file"]:
            record = store.record_changed_definition(
                record.id, path=definition.path, source_hash=definition.source_hash,
                space=space.to_dict(), settings=definition.settings,
                change={"changes": changes["file"], "hash": definition.source_hash})
        if checkpoint_every is not None:  # how a trial is kept safe, not what it computes
            store.update_settings(record.id, {"checkpoint_every": _checkpoint_setting(every)})
            record = store.study_by_id(record.id)
        return cls(store, record, chosen, definition)

    @classmethod
    def load(cls, name: str, *, storage: str | Storage = DEFAULT_URL) -> Study:
        try:
            store = storage if isinstance(storage, Storage) else Storage(storage, create=False)
        except NoTunerDatabase as exc:
            raise StudyNotFound(f"no study named {name!r}: {exc}") from None
        return cls(store, store.get_study(name))

    # -- running --------------------------------------------------------------------
    def optimize(
        self, trials: int, *, workers: int | None = None, executor: Executor | None = None,
        options: CoordinatorOptions = CoordinatorOptions(),
        on_progress: Callable[[Progress], None] | None = None, show_progress: bool = True,
    ) -> Progress:
        """Run until the study has `trials` trials in all (earlier runs count).

        Progress shows as `tuner run` shows it (a live panel in a terminal or notebook, a
        line per trial elsewhere) unless `on_progress` takes the reports or not
        `show_progress`."""
        if trials < 1:
            raise ValueError(f"trials: {trials} must be at least 1")
        definition = self.definition
        if definition.path is None and not isinstance(executor, InProcess) and (
                executor is not None or workers == 0 or (workers or 1) > 1):
            definition, executor = self._shipped(definition, workers, executor)
        if executor is None:  # a definition still made in Python runs in this process
            executor = make_executor(workers, in_process=definition.path is None)
        with contextlib.ExitStack() as stack:
            if on_progress is None and show_progress:
                from tuner.display import ProgressDisplay, make_console

                on_progress = stack.enter_context(ProgressDisplay(make_console()))
            return Coordinator(self.storage, self._record, self.strategy, executor,
                               budget=trials, options=options,
                               on_progress=on_progress).run(definition)

    def _shipped(self, definition: StudyDefinition, workers: int | None,
                 executor: Executor | None) -> tuple[StudyDefinition, Executor | None]:
        """A definition made in Python goes to worker processes packed into the study's
        folder (code by value, arrays memory-mapped); one that cannot leave this process
        (a generator, a tf.data pipeline) keeps its trials here, said in one line, unless
        `executor` (or workers=0, `tuner worker` agents) is what must run them."""
        artifacts = self._record.settings.get("artifacts") or ""
        folder = (Path(artifacts) / "definition" if "://" not in artifacts
                  else Path(tempfile.mkdtemp(prefix="tuner-definition-")))
        try:
            packed = shipping.pack(definition, folder)
        except shipping.CannotShip as exc:
            if executor is not None or workers == 0:
                raise TunerError(f"study {self.name!r} cannot go to the executor's workers: "
                                 f"{exc}") from None
            log.warning("workers=%s: study %r has code or data that cannot go to other "
                        "processes (%s); its trials run in this process", workers, self.name,
                        exc)
            return definition, None
        return packed, executor

    # -- reading --------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._record.name

    @property
    def record(self) -> StudyRecord:
        return self._record

    @property
    def direction(self) -> str:
        return self._record.direction

    @property
    def metric(self) -> str:
        return self._record.metric

    @property
    def strategy(self) -> Strategy:
        if self._strategy is None:
            self._strategy = make_strategy(self._record.strategy,
                                           self._record.settings.get("strategy_options"))
        return self._strategy

    @property
    def definition(self) -> StudyDefinition:
        """The study file, as stored: refused if it changed since (resume it with
        `Study.create(..., load_if_exists=True, allow_changed_file=True)` to accept that)."""
        if self._definition is None:
            record = self._record
            if not record.definition:
                raise DefinitionError(f"study {self.name!r} was defined in Python, not a file")
            definition = (shipping.unpack(record.definition)
                          if shipping.is_package(record.definition)
                          else load_definition(record.definition))
            if record.definition_hash and definition.source_hash != record.definition_hash:
                raise DefinitionError(
                    f"study {self.name!r}: {record.definition} changed since the study last "
                    "ran; resume it with `tuner run FILE --allow-changed-file` to accept that")
            self._definition = definition
        return self._definition

    @property
    def space(self) -> Space:
        return Space.from_dict(self.storage.study_by_id(self._record.id).space)

    @property
    def trials(self) -> list[Trial]:
        return self.storage.trials(self._record.id)

    @property
    def best_trial(self) -> Trial:
        """The completed trial with the best value (with several objectives, the front's
        best on the first: see `best_trials` for the whole front)."""
        best = self.storage.best_trial(self._record)
        if best is None:
            raise StudyNotFound(f"study {self.name!r} has no complete trial yet")
        return best

    def trial(self, number: int) -> Trial:
        """Trial `number` of the study."""
        found = self.storage.trials(self._record.id, numbers=[number])
        if not found:
            raise StudyNotFound(f"study {self.name!r} has no trial #{number}")
        return found[0]

    @property
    def best_trials(self) -> list[Trial]:
        """The Pareto front: the completed trials that keep every constraint and that no
        other such trial beats on every objective, best first on the first objective (with
        one objective, those sharing the best value)."""
        return self._record.front(self.storage.trials(self._record.id,
                                                      states={TrialState.COMPLETE}))

    @property
    def objectives(self) -> tuple[Objective, ...]:
        return self._record.objectives

    @property
    def best_params(self) -> dict[str, Any]:
        return self.best_trial.params

    @property
    def best_value(self) -> float:
        return self.best_trial.value  # type: ignore[return-value]

    def counts(self) -> dict[TrialState, int]:
        return self.storage.counts(self._record.id)

    def ranked(self, *, states: set[TrialState] | None = None, sort: str = "rank") -> list[Trial]:
        """Trials best first: COMPLETE by value, then PRUNED by value, then the rest (or in
        the order of another column or a parameter: see `sort_trials`)."""
        return sort_trials(self.storage.trials(self._record.id, states=states),
                           self._record.sign, sort, self._record)

    def build_best_model(self) -> Any:
        """The best configuration's (untrained) Keras model, built by the study's definition."""
        return self.definition.build(HyperParameters(self.space, self.best_params))

    def schedule(self, trial: Trial | None = None) -> list[Trial]:
        """The trials whose checkpoints led to `trial` (the best by default), oldest first:
        under PBT, the hyperparameter schedule that produced that model."""
        return analysis.schedule(self.trials, trial or self.best_trial)

    def load_model(self, trial: Trial | int | None = None) -> Any:
        """A trial's trained model (the best trial's by default) at its best epoch: built by
        the study's definition, with the weights the trial saved (the best `keep_models`
        trials keep theirs; a PBT segment's model is its checkpoint)."""
        from workers.checkpoints import load_best, load_checkpoint

        if trial is None:
            trial = self.best_trial
        elif isinstance(trial, int):
            trial = self.trial(trial)
        folder_url = self._record.settings.get("artifacts") or ""
        segment = bool(trial.attrs and "segment" in trial.attrs)
        store = Artifacts(folder_url) if segment else best_models(folder_url)
        if not folder_url or not store.exists(trial.number):
            raise TunerError(
                f"trial {trial.number} kept no trained weights: only the best trials keep "
                "theirs (CoordinatorOptions.keep_models); rebuild it with "
                "build_best_model() and train it instead")
        definition = self.definition
        model = definition.build(HyperParameters(self.space, trial.params,
                                                 **definition.hp_options))
        with tempfile.TemporaryDirectory() as folder:
            store.get(trial.number, Path(folder))
            (load_checkpoint if segment else load_best)(model, Path(folder))
        return model

    def export_best_model(self, path: str | Path) -> Trial:
        """Save the best trial's trained model (at its best epoch) as a `.keras` file."""
        best = self.best_trial
        self.load_model(best).save(str(path))
        return best

    def export_trials(self, format: str = "csv", trials: Sequence[Trial] | None = None) -> str:
        """The trials (every one by default) as `tuner export` writes them: CSV, a row each
        as in `trials_dataframe`, or JSON, with each trial's parameters and per-epoch
        metrics."""
        trials = self.trials if trials is None else trials
        rows = [trial_row(t) for t in trials]
        if format == "json":
            per_epoch = self.storage.epochs(t.id for t in trials)
            for row, trial in zip(rows, trials, strict=True):
                row["params"] = trial.params
                row["epoch_metrics"] = [{**e, "epoch": shown_epoch(e["epoch"])}
                                        for e in per_epoch[trial.id]]
            judged_by = ({"objectives": [{"name": o.name, "direction": o.direction}
                                         for o in self.objectives],
                          "constraints": [str(c) for c in self._record.constraints]}
                         if self._record.measured else {})
            return json.dumps({"study": self.name, "metric": self.metric,
                               "direction": self.direction, **judged_by, "trials": rows},
                              indent=2)
        if format != "csv":
            raise ValueError(f"format: {format!r} is neither csv nor json")
        columns: list[str] = []
        for row in rows:
            columns += [c for c in row if c not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()

    def trials_dataframe(self) -> pd.DataFrame:
        """One row per trial; parameters as `params_<name>` columns, like Optuna's."""
        import pandas as pd

        return pd.DataFrame([trial_row(t) for t in self.trials])

    def delete(self, *, grace: float | None = None) -> None:
        """Delete the study and its trials; refused while a live coordinator or worker
        (heartbeat within `grace` seconds: by default the lease grace the study last ran
        with) holds it."""
        if grace is None:
            grace = self._record.settings.get("lease_grace", LEASE_GRACE)
        self.storage.delete_study(self.name, grace=grace, alive=processes.alive)


def list_workers(storage: str | Storage = DEFAULT_URL, *,
                 alive_only: bool = True) -> list[WorkerRecord]:
    """The workers registered in the database (live ones by default): host, pid, device,
    the study and number of the trial each runs now, last heartbeat, trials done."""
    store = storage if isinstance(storage, Storage) else Storage(storage, create=False)
    return store.workers(alive_only=alive_only)


def rebuild_code(name: str, storage: str, params: dict[str, Any]) -> str:
    """Python that loads the study's best model, or rebuilds one with `params` (`tuner
    best`, reports)."""
    return (
        "from tuner import HyperParameters, Study\n\n"
        f"study = Study.load({name!r}, storage={safe_url(storage)!r})\n"
        "model = study.load_model()        # trained, at its best epoch\n"
        "model = study.build_best_model()  # untrained: fit it on your data\n\n"
        "# or, in the study file's own terms:\n"
        f"model = build_model(HyperParameters.from_values({params!r}))\n"
    )


def trial_row(trial: Trial) -> dict[str, Any]:
    row: dict[str, Any] = {
        "number": trial.number, "state": trial.state.value, "value": trial.value,
        "best_epoch": shown_epoch(trial.best_epoch), "epochs": trial.epochs,
        "duration_s": trial.duration,
        "retries": trial.retries, "worker_id": trial.worker_id,
    }
    if (segment := PBTSegment.of(trial)) is not None:  # PBT lineage
        row.update(member=segment.member, generation=segment.generation,
                   first_epoch=segment.start + 1, restored_from=segment.restore,
                   copied_from=segment.copied_from)
    # Several objectives or constraints: what each reads, as measured (`values_<name>`).
    row.update({f"values_{k}": v for k, v in (trial.measures or {}).items()})
    row.update({f"params_{k}": v for k, v in trial.params.items()})
    row["error"] = trial.error
    return row


def default_artifacts(storage: Storage, name: str) -> str:
    """Where a study keeps its weights and checkpoints unless told: beside its SQLite
    file (`tuner-artifacts/NAME` in the file's folder), else in this folder."""
    url = make_url(storage.url)
    database = url.database if url.get_backend_name() == "sqlite" else None
    folder = Path(database).resolve().parent if database and database != ":memory:" else Path()
    return str((folder / "tuner-artifacts" / name).resolve())


def _relative_to_cwd(path: str | None) -> str | None:
    """Where a worker started in the same folder on another host finds the study file."""
    if path is None:
        return None
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return None


def _as_definition(definition: str | Path | StudyDefinition) -> StudyDefinition:
    if isinstance(definition, StudyDefinition):
        return definition
    return load_definition(definition)


MAX_NAME = 200  # the studies table's column
_ADDED_SETTINGS = {"retries": 0}  # settings newer than some stored studies: theirs


def check_name(name: str) -> str:
    """A study name is printed in terminals and pages: no control characters."""
    if not name or len(name) > MAX_NAME:
        raise ValueError(f"name: a study name has 1 to {MAX_NAME} characters, got {len(name)}")
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise ValueError(f"name: {name!r} holds control characters")
    return name


def _objectives_text(objectives: Sequence[Objective]) -> str:
    return ", ".join(f"{o.name!r} {o.direction}" for o in objectives)


def check_objectives(strategy: Strategy, definition: StudyDefinition) -> None:
    """Refuse a strategy that judges by one value for a study with several objectives or
    with constraints."""
    if ((len(definition.objectives) > 1 or definition.constraints)
            and not strategy.multi_objective):
        what = "several objectives" if len(definition.objectives) > 1 else "constraints"
        raise ValueError(f"strategy: {strategy_name(strategy)} ranks by one value, so it "
                         f"cannot search a study with {what}; use bayes, nsga2, evolution, "
                         "random or grid")


def differences(record: StudyRecord, definition: StudyDefinition, space: Space, strategy: str,
                options: dict[str, Any], seed: int | None) -> dict[str, list[str]]:
    """How a resume differs from the stored study: "fixed" differences always make its
    trials incomparable (strategy, metric, direction, seed); "file" ones (the file's hash,
    space or settings) are accepted when the user says so."""
    fixed, file = [], []
    if record.strategy != strategy:
        fixed.append(f"strategy {record.strategy!r} (asked: {strategy!r})")
    stored_options = record.settings.get("strategy_options")
    if stored_options is not None and stored_options != options:
        fixed.append(f"strategy options {stored_options} (asked: {options})")
    if record.objectives != definition.objectives:
        fixed.append(f"objectives {_objectives_text(record.objectives)} "
                     f"(asked: {_objectives_text(definition.objectives)})")
    if seed is not None and record.seed != seed:
        fixed.append(f"seed {record.seed} (asked: {seed})")
    if record.definition_hash and definition.source_hash and (
            record.definition_hash != definition.source_hash):
        file.append(f"another study file (sha256 {record.definition_hash[:12]}… stored, "
                    f"{definition.source_hash[:12]}… now)")
    stored_space = Space.from_dict(record.space)
    changed = [f"{p.name} {describe(stored_space[p.name])} → {describe(p)}" for p in space
               if p.name in stored_space and stored_space[p.name] != p]
    changed += [f"new parameter {p.name} {describe(p)}" for p in space
                if p.name not in stored_space]
    if changed:
        file.append("a changed space (" + "; ".join(changed) + ")")
    stored = {key: record.settings.get(key, _ADDED_SETTINGS.get(key))
              for key in definition.settings}
    if stored != definition.settings:
        file.append(f"settings {stored} (asked: {definition.settings})")
    return {"fixed": fixed, "file": file}
