"""Shared fixtures: real databases on loopback, study files, and a CLI runner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
STUDIES = Path(__file__).parent / "studies"

SERVER_URLS = {
    "postgresql": os.environ.get("TUNER_TEST_POSTGRESQL",
                                 "postgresql+psycopg://postgres@127.0.0.1/test"),
    "mariadb": os.environ.get("TUNER_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1/test"),
}
_TABLES = ("trial_epochs", "trials", "workers", "studies", "alembic_version")


def stored_trial(storage: Any, trial_id: int) -> Any:
    """A trial as the database holds it now, by id."""
    (trial,) = storage.trials_by_id([trial_id])
    return trial


def objective_study(storage: Any, name: str, objectives: list[tuple[str, str]],
                    constraints: list[tuple[str, str, float]],
                    trials: list[tuple[list[float] | None, dict[str, float] | None]]) -> Any:
    """A study judged by several objectives (and constraints), written directly: each
    trial's (values, measures) completes it, or (None, None) fails it; parameter `units`
    is the trial's number + 1."""
    from tuner.objectives import Constraint, Objective, to_settings
    from tuner.space import Int, Space
    from tuner.states import TrialState

    settings = {"epochs": 1, **to_settings([Objective(*o) for o in objectives],
                                           [Constraint(*c) for c in constraints])}
    study = storage.create_study(name, metric=objectives[0][0], direction=objectives[0][1],
                                 strategy="random", seed=1,
                                 space=Space(units=Int(1, 100)).to_dict(), settings=settings)
    storage.enqueue_trials(study.id, [(n, {"units": n + 1}, None) for n in range(len(trials))])
    worker = storage.register_worker(host="h", pid=1, device="cpu", study_id=study.id)
    for values, measures in trials:
        trial = storage.claim_trial(study.id, worker)
        if values is None:
            assert storage.finish_trial(trial.id, worker, TrialState.FAILED, error="boom")
            continue
        storage.report_epoch(trial.id, worker, 0, values[0], {objectives[0][0]: values[0]})
        assert storage.finish_trial(trial.id, worker, TrialState.COMPLETE, value=values[0],
                                    best_epoch=0, values=values, measures=measures)
        assert stored_trial(storage, trial.id).values == values
    storage.stop_worker(worker)
    return storage.study_by_id(study.id)


# Two objectives and a latency constraint. #2 would dominate every other trial, but breaks
# the constraint; #7 never measured its latency (broken too); #5 is dominated by #4.
TRADEOFF = {
    "objectives": [("acc", "maximize"), ("params", "minimize")],
    "constraints": [("latency_ms", "<=", 2.0)],
    "trials": [([0.90, 100.0], {"params": 100.0, "latency_ms": 1.0}),
               ([0.80, 50.0], {"params": 50.0, "latency_ms": 1.5}),
               ([0.95, 40.0], {"params": 40.0, "latency_ms": 5.0}),
               ([0.70, 200.0], {"params": 200.0, "latency_ms": 1.0}),
               ([0.85, 80.0], {"params": 80.0, "latency_ms": 0.5}),
               ([0.85, 90.0], {"params": 90.0, "latency_ms": 0.5}),
               (None, None),
               ([0.99, 10.0], {"params": 10.0})],
}
TRADEOFF_FRONT = [0, 4, 1]  # best first by accuracy
TRADEOFF_INFEASIBLE = [2, 7]


def empty_database(url: str) -> str:
    """Drop the project's tables so the schema is created afresh by the code under test."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for table in _TABLES:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test against every backend; servers must be up (`make services`)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tuner.db'}"
    return empty_database(SERVER_URLS[request.param])


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tuner.db'}"


def cli_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TUNER_STORAGE", None)
    return env


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run the `tuner` command as a user would, in a separate process."""
    return subprocess.run(
        [sys.executable, "-m", "tuner.cli", *args], cwd=ROOT, env=cli_env(),
        capture_output=True, text=True, timeout=timeout,
    )


def _as_from_a_terminal() -> None:
    # A shell running the tests in the background ignores SIGINT, and the ignoring is
    # inherited: give the command Ctrl-C back, as a terminal's foreground job has it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start `tuner` in its own process group, as a terminal would (for Ctrl-C and kill)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tuner.cli", *args], cwd=ROOT, env=env or cli_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=_as_from_a_terminal,
    )


SHOWCASE_NAMES = {"learners": "learners", "pbt": "pbt_digits", "faults": '<b>faults</b> & "co"'}


@pytest.fixture(scope="session")
def showcase(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database of real small studies, for the read-only views (dashboard, reports,
    exports): a grid with early stopping (COMPLETE and PRUNED trials, learning curves),
    a PBT population (lineage) and a study of failing trials whose name is HTML."""
    from tuner import InProcess, Study

    folder = tmp_path_factory.mktemp("showcase")
    url = f"sqlite:///{folder / 'tuner.db'}"
    runs = [("learners", {"strategy": "grid", "early_stop": "asha", "seed": 4}, 8),
            ("pbt_digits", {"strategy": "pbt", "seed": 3,
                            "artifacts": str(folder / "artifacts")}, 4),
            ("faults", {"strategy": "grid", "seed": 1, "name": SHOWCASE_NAMES["faults"]}, 5)]
    for file, options, trials in runs:
        study = Study.create(definition=STUDIES / f"{file}.py", storage=url, **options)
        study.optimize(trials=trials, executor=InProcess())
    return url
