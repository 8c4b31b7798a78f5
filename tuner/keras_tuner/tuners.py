"""KerasTuner's tuners over this service's studies.

A `Tuner` is a thin layer over `Study`: `search(*args, **kwargs)` makes a study definition
of its hypermodel, its `run_trial` and the arguments given, and runs it through the one
coordinator, worker loop and runner; every trial and epoch is in the study's database.
With `workers=N` the definition goes to N worker processes by value (`tuner.shipping`).
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from tuner import shipping
from tuner.coordinator import CoordinatorOptions, StudyStopped
from tuner.definition import StudyDefinition
from tuner.errors import StudyNotFound, TunerError
from tuner.executors import Executor, InProcess
from tuner.hyperparameters import HyperParameters
from tuner.keras_tuner import errors, oracles
from tuner.keras_tuner.hypermodel import as_hypermodel
from tuner.keras_tuner.trial import Trial
from tuner.space import Bool, Choice, Fixed, Float, Int, Param, Space
from tuner.states import TrialState
from tuner.storage import Storage
from tuner.study import Study, discover_space

log = logging.getLogger(__name__)


class Tuner:
    """KerasTuner's `Tuner`: searches with `oracle` over what `hypermodel` builds, or over
    anything an overridden `run_trial(trial, *args, **kwargs)` returns a value for.

    This service's own arguments, for when they are wanted: `workers` (trials at once, each
    in its own process), `storage` (the study's database URL; by default a SQLite file in
    `directory/project_name`), `executor` (agents, a Ray cluster), `early_stop`
    ("asha", "median", "hyperband" or a rule), `keep_models` (the trials whose best
    weights are kept for `get_best_models`).
    """

    def __init__(self, oracle: oracles.Oracle | None = None, hypermodel: Any = None,
                 max_model_size: int | None = None, optimizer: Any = None, loss: Any = None,
                 metrics: Any = None, distribution_strategy: Any = None,
                 directory: str | None = None, project_name: str | None = None,
                 logger: Any = None, tuner_id: str | None = None, overwrite: bool = False,
                 executions_per_trial: int = 1, *, workers: int = 1, storage: str | None = None,
                 executor: Executor | None = None, early_stop: Any = None,
                 keep_models: int = 10) -> None:
        if hypermodel is None and type(self).run_trial is Tuner.run_trial:
            raise ValueError("hypermodel: give a build function or a HyperModel, or subclass "
                             "the tuner and override run_trial()")
        if executions_per_trial < 1 or workers < 1 or keep_models < 0:
            raise ValueError("executions_per_trial and workers must be >= 1, keep_models >= 0")
        self.oracle = oracle or oracles.RandomSearchOracle()
        self.oracle.tuner = self
        self.hypermodel = as_hypermodel(hypermodel)
        self.max_model_size, self.optimizer, self.loss, self.metrics = (
            max_model_size, optimizer, loss, metrics)
        self.distribution_strategy = distribution_strategy
        self.directory = str(directory) if directory is not None else "."
        self.project_name = project_name or "untitled_project"
        self.tuner_id = tuner_id or "tuner0"
        self.logger = logger
        self.overwrite, self.executions_per_trial = overwrite, executions_per_trial
        self.workers, self.storage, self.executor = workers, storage, executor
        self.early_stop, self.keep_models = early_stop, keep_models
        self._study: Study | None = None
        # The space as the model declares it with default values, as KerasTuner shows it
        # before a search (parameters met only in fit or other branches join later).
        self._declared = discover_space(self._definition((), {}))

    @property
    def project_dir(self) -> str:
        return os.path.join(self.directory, self.project_name)

    @property
    def storage_url(self) -> str:
        if self.storage is not None:
            return self.storage
        return f"sqlite:///{Path(self.project_dir).resolve() / 'tuner.db'}"

    # -- searching --------------------------------------------------------------------------
    def search(self, *fit_args: Any, **fit_kwargs: Any) -> None:
        """Run trials until the study has `max_trials` in all (earlier searches count unless
        `overwrite`). The arguments go to every trial's `run_trial`, hence to `fit`."""
        fit_kwargs = {"verbose": 0, **fit_kwargs, **self.oracle.fit_overrides()}
        definition = self._definition(fit_args, fit_kwargs)
        folder = Path(self.project_dir)
        folder.mkdir(parents=True, exist_ok=True)
        if self.overwrite:
            self._forget()
        # Packed into the project's folder for worker processes, and for `tuner best
        # --export` to rebuild the models (trials in this process need no data packed);
        # what cannot leave this process runs here.
        executor = self.executor or (InProcess() if self.workers == 1 else None)
        here = isinstance(executor, InProcess)
        try:
            packed = shipping.pack(replace(definition, fit_args=(), fit_kwargs={}) if here
                                   else definition, folder / "artifacts" / "definition")
            definition = replace(definition, path=packed.path, source_hash=packed.source_hash)
        except shipping.CannotShip as exc:
            if executor is None:
                log.warning("workers=%d: the search's code or data cannot go to other "
                            "processes (%s); its trials run in this process", self.workers, exc)
                executor = InProcess()
        study = Study.create(
            self.project_name, definition=definition, storage=self.storage_url,
            strategy=self.oracle.strategy(), seed=self.oracle.seed,
            epochs=definition.epochs, early_stop=definition.early_stop,
            artifacts=str(folder.resolve() / "artifacts"), load_if_exists=True,
            allow_changed_file=True,  # as KerasTuner, a project resumes with today's code
        )
        self._study = study
        self.overwrite = False  # a second search() in this process goes on with this one
        options = CoordinatorOptions(
            max_consecutive_failures=self.oracle.max_consecutive_failed_trials,
            keep_models=self.keep_models)
        try:
            study.optimize(trials=self.oracle.trial_budget(study.space), workers=self.workers,
                           executor=executor, options=options)
        except StudyStopped as exc:
            raise errors.FatalError(str(exc)) from None

    def _definition(self, fit_args: tuple[Any, ...], fit_kwargs: dict[str, Any]
                    ) -> StudyDefinition:
        objective = self.oracle.objective
        return StudyDefinition(
            hypermodel=_Built(self) if self.hypermodel is not None else None,
            run_trial=self.run_trial, fit_args=fit_args, fit_kwargs=fit_kwargs,
            objectives=[(o.name, o.study_direction)
                        for o in getattr(objective, "objectives", [objective])],
            epochs=fit_kwargs.get("epochs", 1),
            patience=None, early_stop=self.early_stop or self.oracle.early_stop(),
            space=self.oracle.hyperparameters.space.copy(),
            hp_options=self.oracle.hp_options(), retries=self.oracle.max_retries_per_trial,
            name=self.project_name,
        )

    def _forget(self) -> None:
        """overwrite=True: the project's study goes, with its weights and packed code."""
        try:
            Study.load(self.project_name, storage=self.storage_url).delete()
        except StudyNotFound:
            pass
        shutil.rmtree(Path(self.project_dir) / "artifacts", ignore_errors=True)

    # -- one trial --------------------------------------------------------------------------
    def run_trial(self, trial: Trial, *args: Any, **kwargs: Any) -> Any:
        """Build and fit the hypermodel `executions_per_trial` times; return the Histories
        (the trial's value is the mean of their best epochs). Override to tune anything:
        return a value, or a dict holding the objective's."""
        hp = trial.hyperparameters
        original = kwargs.pop("callbacks", None) or []
        histories = []
        for execution in range(self.executions_per_trial):
            callbacks = copy.deepcopy(original)
            self._configure_tensorboard_dir(callbacks, trial, execution)
            callbacks += [*trial.callbacks(execution), _Hooks(self, trial)]
            model = self._try_build(hp)
            histories.append(self.hypermodel.fit(hp, model, *args, callbacks=callbacks,
                                                 **kwargs))
        return histories

    def _try_build(self, hp: HyperParameters) -> Any:
        import keras

        if self.distribution_strategy is not None:
            with self.distribution_strategy.scope():
                model = self.hypermodel.build(hp)
        else:
            model = self.hypermodel.build(hp)
        if not isinstance(model, keras.Model):
            raise errors.FatalTypeError(
                "the model-building function (or HyperModel.build) must return a Keras Model, "
                f"not {type(model).__name__}")
        if self.max_model_size and model.count_params() > self.max_model_size:
            raise errors.FailedTrialError(
                f"Oversized model: {model.count_params()} parameters. Skip model.")
        self._override_compile_args(model)
        return model

    def _override_compile_args(self, model: Any) -> None:
        if not (self.optimizer or self.loss or self.metrics):
            return
        import keras

        optimizer = self.optimizer or model.optimizer
        if self.optimizer is not None and not isinstance(self.optimizer, str):
            optimizer = keras.optimizers.deserialize(keras.optimizers.serialize(self.optimizer))
        metrics = self.metrics or [m for m in model.metrics
                                   if m.name not in ("loss", "compile_metrics")]
        model.compile(optimizer=optimizer, loss=self.loss or model.loss, metrics=metrics)

    def _configure_tensorboard_dir(self, callbacks: list[Any], trial: Trial,
                                   execution: int) -> None:
        """Each trial's TensorBoard logs in a folder of their own, with its hyperparameters
        for the HParams tab (on TensorFlow), as KerasTuner does."""
        for callback in list(callbacks):
            if type(callback).__name__ != "TensorBoard":
                continue
            callback.log_dir = os.path.join(str(callback.log_dir), str(trial.trial_id),
                                            f"execution{execution}")
            if "tensorflow" in sys.modules and _keras_backend() == "tensorflow":
                from tensorboard.plugins.hparams import api as hparams_api

                callbacks.append(hparams_api.KerasCallback(
                    writer=callback.log_dir, hparams=dict(trial.hyperparameters.values),
                    trial_id=trial.trial_id))

    # KerasTuner's hooks, called from every fit of a trial.
    def on_epoch_begin(self, trial: Trial, model: Any, epoch: int, logs: Any = None) -> None:
        pass

    def on_epoch_end(self, trial: Trial, model: Any, epoch: int, logs: Any = None) -> None:
        pass

    def on_batch_begin(self, trial: Trial, model: Any, batch: int, logs: Any = None) -> None:
        pass

    def on_batch_end(self, trial: Trial, model: Any, batch: int, logs: Any = None) -> None:
        pass

    # -- results -----------------------------------------------------------------------------
    @property
    def study(self) -> Study:
        """The study behind this tuner (this search's, or the project's stored one)."""
        if self._study is None:
            self._study = Study.load(self.project_name, storage=self.storage_url)
        return self._study

    @property
    def space(self) -> Space:
        return self.study.space if self._has_study() else self._declared

    def best_trials(self, num_trials: int = 1) -> list[Trial]:
        ranked = self.study.ranked(states={TrialState.COMPLETE})[:num_trials]
        return [Trial.from_stored(t, HyperParameters(self.space, t.params)) for t in ranked]

    def get_best_hyperparameters(self, num_trials: int = 1) -> list[HyperParameters]:
        return [trial.hyperparameters for trial in self.best_trials(num_trials)]

    def get_best_models(self, num_models: int = 1) -> list[Any]:
        """The best trials' models, trained: their best epoch's weights, as each trial
        saved them (the best `keep_models` trials keep theirs)."""
        return [self.study.load_model(int(t.trial_id)) for t in self.best_trials(num_models)]

    def load_model(self, trial: Trial) -> Any:
        return self.study.load_model(int(trial.trial_id))

    @property
    def remaining_trials(self) -> int | None:
        budget = self.oracle.trial_budget(self.space)
        done = len(self.study.trials) if self._has_study() else 0
        return max(0, budget - done)

    def results_summary(self, num_trials: int = 10) -> None:
        """Print the best trials, as KerasTuner does."""
        print("Results summary")
        print(f"Results in {self.project_dir}")
        print(f"Showing {num_trials} best trials")
        print(f"{self.oracle.objective}")
        for trial in self.best_trials(num_trials):
            print()
            trial.summary()

    def search_space_summary(self, extended: bool = False) -> None:
        """Print the search space, as KerasTuner does."""
        space = self.space
        print("Search space summary")
        print(f"Default search space size: {len(space)}")
        for param in space:
            kind, config = _as_keras_tuner(param)
            print(f"{param.name} ({kind})")
            print(config)

    def _has_study(self) -> bool:
        if self._study is not None:
            return True
        try:
            self._study = Study.load(self.project_name, storage=Storage(
                self.storage_url, create=False))
        except TunerError:  # no database or no such study yet
            return False
        return True

    # -- going to other processes --------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        """A worker process gets the tuner's code and settings, not its database handles."""
        state = dict(self.__dict__)
        state.update(_study=None, executor=None)
        return state


class _Built:
    """The tuner's hypermodel as its trials build it (compile arguments overridden, size
    checked): what rebuilds a trial's model to load its weights, anywhere."""

    def __init__(self, tuner: Tuner) -> None:
        self.tuner = tuner

    def build(self, hp: HyperParameters) -> Any:
        return self.tuner._try_build(hp)

    def fit(self, hp: HyperParameters, model: Any, *args: Any, **kwargs: Any) -> Any:
        return self.tuner.hypermodel.fit(hp, model, *args, **kwargs)


class _Hooks:
    """Calls the tuner's on_epoch/on_batch hooks from a fit (KerasTuner's TunerCallback)."""

    def __new__(cls, tuner: Tuner, trial: Trial) -> Any:
        import keras

        class Hooks(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                tuner.on_epoch_begin(trial, self.model, epoch, logs=logs)

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                tuner.on_epoch_end(trial, self.model, epoch, logs=logs)

            def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
                tuner.on_batch_begin(trial, self.model, batch, logs)

            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                tuner.on_batch_end(trial, self.model, batch, logs)

        return Hooks()


def _keras_backend() -> str:
    import keras

    return keras.backend.backend()


def _as_keras_tuner(param: Param) -> tuple[str, dict[str, Any]]:
    """A parameter as KerasTuner's search_space_summary shows one: its class and config."""
    conditions = [{"class_name": "Parent", "config": {"name": parent, "values": list(values)}}
                  for parent, values in param.when]
    if isinstance(param, Fixed):
        return "Fixed", {"conditions": conditions, "value": param.value}
    if isinstance(param, Bool):
        return "Boolean", {"default": param.default, "conditions": conditions}
    if isinstance(param, Choice):
        ordered = param.ordered if param.ordered is not None else all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in param.values)
        return "Choice", {"default": param.initial, "conditions": conditions,
                          "values": list(param.values), "ordered": ordered}
    assert isinstance(param, (Int, Float))
    step = param.step if param.step is not None else (1 if isinstance(param, Int) else None)
    return type(param).__name__, {
        "default": param.default, "conditions": conditions, "min_value": param.low,
        "max_value": param.high, "step": step, "sampling": "log" if param.log else "linear"}


class RandomSearch(Tuner):
    def __init__(self, hypermodel: Any = None, objective: Any = None, max_trials: int = 10,
                 seed: int | None = None, hyperparameters: HyperParameters | None = None,
                 tune_new_entries: bool = True, allow_new_entries: bool = True,
                 max_retries_per_trial: int = 0, max_consecutive_failed_trials: int = 3,
                 **kwargs: Any) -> None:
        oracle = oracles.RandomSearchOracle(
            objective=objective, max_trials=max_trials, seed=seed,
            hyperparameters=hyperparameters, tune_new_entries=tune_new_entries,
            allow_new_entries=allow_new_entries, max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials)
        super().__init__(oracle, hypermodel, **kwargs)


class GridSearch(Tuner):
    def __init__(self, hypermodel: Any = None, objective: Any = None,
                 max_trials: int | None = None, seed: int | None = None,
                 hyperparameters: HyperParameters | None = None, tune_new_entries: bool = True,
                 allow_new_entries: bool = True, max_retries_per_trial: int = 0,
                 max_consecutive_failed_trials: int = 3, **kwargs: Any) -> None:
        oracle = oracles.GridSearchOracle(
            objective=objective, max_trials=max_trials, seed=seed,
            hyperparameters=hyperparameters, tune_new_entries=tune_new_entries,
            allow_new_entries=allow_new_entries, max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials)
        super().__init__(oracle, hypermodel, **kwargs)


class BayesianOptimization(Tuner):
    def __init__(self, hypermodel: Any = None, objective: Any = None, max_trials: int = 10,
                 num_initial_points: int | None = None, alpha: float = 1e-4, beta: float = 2.6,
                 seed: int | None = None, hyperparameters: HyperParameters | None = None,
                 tune_new_entries: bool = True, allow_new_entries: bool = True,
                 max_retries_per_trial: int = 0, max_consecutive_failed_trials: int = 3,
                 **kwargs: Any) -> None:
        oracle = oracles.BayesianOptimizationOracle(
            objective=objective, max_trials=max_trials, num_initial_points=num_initial_points,
            alpha=alpha, beta=beta, seed=seed, hyperparameters=hyperparameters,
            tune_new_entries=tune_new_entries, allow_new_entries=allow_new_entries,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials)
        super().__init__(oracle, hypermodel, **kwargs)


class Hyperband(Tuner):
    def __init__(self, hypermodel: Any = None, objective: Any = None, max_epochs: int = 100,
                 factor: int = 3, hyperband_iterations: int = 1, seed: int | None = None,
                 hyperparameters: HyperParameters | None = None, tune_new_entries: bool = True,
                 allow_new_entries: bool = True, max_retries_per_trial: int = 0,
                 max_consecutive_failed_trials: int = 3, **kwargs: Any) -> None:
        oracle = oracles.HyperbandOracle(
            objective=objective, max_epochs=max_epochs, factor=factor,
            hyperband_iterations=hyperband_iterations, seed=seed,
            hyperparameters=hyperparameters, tune_new_entries=tune_new_entries,
            allow_new_entries=allow_new_entries, max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials)
        super().__init__(oracle, hypermodel, **kwargs)


class PBT(Tuner):
    """Population-based training (not in KerasTuner): `population` members trained
    together, the weaker ones copying the stronger ones' weights and exploring their
    mutable hyperparameters every `interval` epochs. `search(..., epochs=E)` trains each
    member E epochs; `get_best_models()` returns the best member as trained."""

    def __init__(self, hypermodel: Any = None, objective: Any = None,
                 population: int = 8, interval: int = 2, quantile: float = 0.25,
                 resample_probability: float = 0.25, mutable: list[str] | None = None,
                 seed: int | None = None, hyperparameters: HyperParameters | None = None,
                 tune_new_entries: bool = True, allow_new_entries: bool = True,
                 max_retries_per_trial: int = 0, max_consecutive_failed_trials: int = 3,
                 **kwargs: Any) -> None:
        oracle = oracles.PBTOracle(
            objective=objective, population=population, interval=interval, quantile=quantile,
            resample_probability=resample_probability, mutable=mutable, seed=seed,
            hyperparameters=hyperparameters, tune_new_entries=tune_new_entries,
            allow_new_entries=allow_new_entries, max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials)
        super().__init__(oracle, hypermodel, **kwargs)
