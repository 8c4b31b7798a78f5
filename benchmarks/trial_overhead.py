"""How much a trial costs the tuner, over what the same training costs in plain Keras.

    .venv/bin/python benchmarks/trial_overhead.py --trials 30
    .venv/bin/python benchmarks/trial_overhead.py --storage postgresql+psycopg://postgres@127.0.0.1/test
    .venv/bin/python benchmarks/trial_overhead.py --json overhead.json

The workload is deliberately tiny, so that the fixed cost of a trial shows: 64 digits
(scikit-learn's load_digits) for training and the next 64 for validation, a Dense(16) ->
Dense(10) MLP, Adam, one epoch at batch size 32, no early stopping.

  (a) bare Keras: clear_session, set_random_seed, build and compile, fit, and no tuner;
  (b) a warm tuner worker (`workers.loop.Worker`, in this process) running N trials that
      were queued beforehand: the per-trial cycle (claim -> train -> finish), and the
      same trials as the database saw them (started_at -> finished_at, and the gap until
      the next claim);
  (c) the worker's database calls alone, on a trial that trains nothing;
  (d) a fresh `python -c` per trial: interpreter start, import of Keras and its backend,
      build, fit. This is what a tool that starts a process per trial pays every time.

By default (a) and (b) are interleaved: the worker runs one bare trial after each of
its own (after finish_trial, outside every timed span of the worker). A Keras process
gets slower as it runs trials, even with clear_session, so whichever of (a) and (b)
ran second would look slower by that alone; `--order sequential` runs them one after
the other, (a) first, to see it. The first 3 trials of (a), (b) and (c) are warm-up and
left out of their statistics.
KERAS_BACKEND is honoured. The benchmark's studies are deleted at the end, so a shared
database (PostgreSQL, MySQL) is left as it was, apart from the stopped workers' rows.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything can import TensorFlow

import argparse
import inspect
import json
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from machine import machine_basics

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # benchmark this working tree

WARMUP = 3  # trials left out of the statistics of (a), (b) and (c)
UNITS = 16
BATCH_SIZE = 32
FRESH_RUNS = 3
INTERFERENCE = (" (did another process change this database meanwhile? a test suite that"
                " drops the tables, say)")


# -- the workload: shared verbatim with the fresh interpreter of (d) -------------------
def load_xy():
    """64 training and the next 64 validation digits, 64 features scaled to [0, 1]."""
    import numpy as np
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    y = y.astype(np.int32)
    return (x[:64], y[:64]), (x[64:128], y[64:128])


def build_mlp(units):
    import keras

    model = keras.Sequential([
        keras.Input(shape=(64,)),
        keras.layers.Dense(units, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def bare_trial(seed, data, units, batch_size):
    """What a trial does, without the tuner."""
    import keras

    (x, y), validation = data
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = build_mlp(units)
    history = model.fit(x, y, validation_data=validation, epochs=1, batch_size=batch_size,
                        verbose=0)
    return float(history.history["val_accuracy"][-1])


# -- statistics and the table ---------------------------------------------------------
def _stats(values: Sequence[float]) -> dict[str, Any]:
    values = list(values)
    if not values:
        return {"median": None, "mean": None, "n": 0}
    return {"median": statistics.median(values), "mean": statistics.fmean(values),
            "n": len(values)}


def _row(section: str, measurement: str, stats: dict[str, Any], unit: str,
         note: str = "") -> dict[str, Any]:
    return {"section": section, "measurement": measurement, "median": stats["median"],
            "mean": stats["mean"], "unit": unit, "n": stats["n"], "note": note}


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "%":
        return f"{value:+.1f} %"
    if unit == "x":
        return f"{value:.1f}x"
    return f"{value:.1f} ms" if abs(value) >= 10 else f"{value:.2f} ms"


def markdown(machine: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = ["## Trial overhead", ""]
    lines += [f"- **{key}**: {value}" for key, value in machine.items()]
    lines += ["", "| | Measurement | Median | Mean | n | Note |", "|---|---|---:|---:|---:|---|"]
    for r in rows:
        lines.append(
            f"| {r['section']} | {r['measurement']} | {_fmt(r['median'], r['unit'])} "
            f"| {_fmt(r['mean'], r['unit'])} | {r['n'] or ''} | {r['note']} |"
        )
    return "\n".join(lines)


def describe_machine(storage: Any) -> dict[str, Any]:
    import keras

    from tuner.storage import safe_url

    backend = keras.backend.backend()
    try:
        backend_version = __import__(backend).__version__
    except Exception:
        backend_version = "?"
    dialect = storage.engine.dialect
    if dialect.name == "sqlite":
        import sqlite3

        server = f"SQLite {sqlite3.sqlite_version}"
    else:
        with storage.engine.connect() as conn:  # server_version_info is set on connect
            conn.exec_driver_sql("SELECT 1")
        version = ".".join(str(v) for v in (dialect.server_version_info or ()))
        server = f"{dialect.name} {version} ({dialect.driver})"
    return {
        **machine_basics(),
        "os": platform.platform(),
        "keras": f"{keras.__version__}, backend {backend} {backend_version}",
        "storage": f"{safe_url(storage.url)} ({server})",
    }


# -- (a) bare Keras -------------------------------------------------------------------
def timed_bare(i: int, data: Any) -> float:
    start = time.perf_counter()
    bare_trial(i, data, UNITS, BATCH_SIZE)
    return (time.perf_counter() - start) * 1000


# -- (b) a warm worker, and (a) between its trials when interleaved --------------------
def bench_worker(storage: Any, name: str, n: int, data: Any,
                 interleave: bool) -> tuple[dict[str, Any], list[float]]:
    """Returns the worker's timings, and the bare trials' (run between the worker's trials
    when `interleave`, else in a plain loop before the worker starts)."""
    from tuner import Int, Space, Study, StudyDefinition, TrialState
    from workers.loop import Worker, WorkerOptions

    bare: list[float] = []

    class TimedWorker(Worker):
        """The stock worker, noting when each `_run_one` starts and ends and, when
        interleaving, running one bare trial after it (after finish_trial committed)."""

        marks: list[tuple[float, float, float]]  # start, end, resumed (after the bare trial)

        def _run_one(self, trial: Any, worker_id: int) -> None:
            start = time.perf_counter()
            super()._run_one(trial, worker_id)
            end = time.perf_counter()
            if interleave:
                bare.append(timed_bare(len(self.marks), data))
            self.marks.append((start, end, time.perf_counter()))

    def build_model(hp: Any) -> Any:
        return build_mlp(hp["units"])

    definition = StudyDefinition(
        build_model=build_model, load_data=lambda: data, space=Space(units=Int(8, 32)),
        metric="val_accuracy", epochs=1, batch_size=BATCH_SIZE, patience=None,
    )
    study = Study.create(name, definition=definition, storage=storage, strategy="random", seed=0)
    study_id = study.record.id
    # Every trial trains the same Dense(16) as the bare loop, so only the tuner differs.
    for number in range(n):
        if storage.enqueue_trial(study_id, number, {"units": UNITS}) is None:
            raise RuntimeError(f"could not queue trial {number}")

    if not interleave:
        bare = [timed_bare(i, data) for i in range(n)]

    worker = TimedWorker(storage, name, definition, options=WorkerOptions(max_trials=n))
    worker.marks = []
    worker.register()
    start = time.perf_counter()
    ran = worker.run()
    wall = time.perf_counter() - start

    trials = storage.trials(study_id)
    bad = [t for t in trials if t.state is not TrialState.COMPLETE]
    if ran != n or bad or len(trials) != n or len(worker.marks) != n:
        detail = "\n".join(f"trial {t.number}: {t.state.value} {t.error or ''}" for t in bad[:3])
        raise RuntimeError(
            f"the worker ran {ran} of {n} trials and the study holds {len(trials)}, "
            f"{len(bad)} of them not COMPLETE{INTERFERENCE}\n{detail}"
        )

    marks = worker.marks
    resumed = [start] + [r for _, _, r in marks]  # when the worker's loop got control back
    claim_gap = [(marks[i][0] - resumed[i]) * 1000 for i in range(n)]
    in_trial = [(end - begin) * 1000 for begin, end, _ in marks]
    cycle = [g + t for g, t in zip(claim_gap, in_trial, strict=True)]
    between = bare if interleave else [0.0] * n  # the bare trials sit in the DB's gaps
    db_duration = [(t.finished_at - t.started_at) * 1000 for t in trials]
    db_gap = [(trials[i + 1].started_at - trials[i].finished_at) * 1000 - between[i]
              for i in range(n - 1)]
    timings = {"run_s": wall, "run_minus_bare_s": wall - sum(between) / 1000, "cycle": cycle,
               "in_trial": in_trial, "claim_gap": claim_gap, "db_duration": db_duration,
               "db_gap": db_gap}
    return timings, bare


# -- (c) the database calls alone -----------------------------------------------------
def bench_db(storage: Any, name: str, n: int) -> dict[str, list[float]]:
    from tuner.states import TrialState

    record = storage.create_study(
        name, metric="val_accuracy", direction="maximize", strategy="random", seed=0,
        space={"units": {"type": "int", "min_value": 8, "max_value": 32}},
        settings={"epochs": 1, "batch_size": BATCH_SIZE, "patience": None},
    )
    times: dict[str, list[float]] = {
        "enqueue": [], "claim": [], "study": [], "report": [], "finish": [], "total": []}
    for number in range(n):
        start = time.perf_counter()
        storage.enqueue_trial(record.id, number, {"units": UNITS})
        times["enqueue"].append((time.perf_counter() - start) * 1000)
    worker_id = storage.register_worker(host=platform.node(), pid=os.getpid(), device="cpu",
                                        study_id=record.id)
    metrics = {"loss": 2.3, "accuracy": 0.1, "val_loss": 2.3, "val_accuracy": 0.1}
    for _ in range(n):
        t0 = time.perf_counter()
        trial = storage.claim_trial(record.id, worker_id)
        t1 = time.perf_counter()
        storage.study_by_id(record.id)  # the worker re-reads the study (its space) per trial
        t2 = time.perf_counter()
        if trial is None or not storage.report_epoch(trial.id, worker_id, 0, 0.1, metrics):
            raise RuntimeError(f"claim_trial or report_epoch failed{INTERFERENCE}")
        t3 = time.perf_counter()
        if not storage.finish_trial(trial.id, worker_id, TrialState.COMPLETE, value=0.1,
                                    best_epoch=0, params={"units": UNITS}):
            raise RuntimeError(f"finish_trial refused a trial this worker holds{INTERFERENCE}")
        t4 = time.perf_counter()
        for key, ms in (("claim", t1 - t0), ("study", t2 - t1), ("report", t3 - t2),
                        ("finish", t4 - t3), ("total", (t1 - t0) + (t4 - t2))):
            times[key].append(ms * 1000)
    storage.stop_worker(worker_id)
    return times


# -- (d) a fresh interpreter per trial ------------------------------------------------
def _child_code(seed: int) -> str:
    shared = "\n\n".join(textwrap.dedent(inspect.getsource(f))
                         for f in (load_xy, build_mlp, bare_trial))
    return "\n".join([
        "import time",
        "_t0 = time.perf_counter()",
        "import json, os",
        "import keras",
        "_t1 = time.perf_counter()",
        shared,
        f"_acc = bare_trial({seed}, load_xy(), {UNITS}, {BATCH_SIZE})",
        "_t2 = time.perf_counter()",
        "print(json.dumps({'import_s': _t1 - _t0, 'trial_s': _t2 - _t1,",
        "                  'backend': keras.backend.backend(), 'val_accuracy': _acc}))",
    ])


def bench_fresh(runs: int, cleanup: Cleanup) -> dict[str, list[float]]:
    env = dict(os.environ)  # KERAS_BACKEND and TF_CPP_MIN_LOG_LEVEL pass through
    out: dict[str, list[float]] = {"total": [], "import": [], "trial": []}
    for seed in range(runs):
        start = time.perf_counter()
        with subprocess.Popen([sys.executable, "-c", _child_code(seed)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=tempfile.gettempdir()) as proc:
            cleanup.children.append(proc)
            try:
                stdout, stderr = proc.communicate(timeout=300)
            finally:
                if proc.poll() is None:
                    proc.kill()
                cleanup.children.remove(proc)
        total = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"the fresh interpreter failed:\n{stderr[-3000:]}")
        report = json.loads(stdout.strip().splitlines()[-1])
        out["total"].append(total)
        out["import"].append(report["import_s"])
        out["trial"].append(report["trial_s"])
    return out


# -- cleanup ----------------------------------------------------------------------
class Cleanup:
    """Deletes the benchmark's studies (and its temporary SQLite file) once, whether the
    run ends normally, with an error, on Ctrl-C or on SIGTERM."""

    def __init__(self, tmpdir: str | None) -> None:
        self.tmpdir = tmpdir
        self.storage: Any = None
        self.studies: list[str] = []
        self.children: list[subprocess.Popen[str]] = []
        self._lock = threading.Lock()
        self._done = False

    def __call__(self) -> None:
        from tuner.errors import StudyNotFound

        with self._lock:
            if self._done:
                return
            self._done = True
            for child in list(self.children):
                child.kill()
            if self.storage is not None:
                for name in self.studies:
                    try:
                        self.storage.delete_study(name)
                    except StudyNotFound:
                        pass
                    except Exception as exc:
                        print(f"could not delete study {name!r}: {exc}", file=sys.stderr)
                self.storage.dispose()
            if self.tmpdir is not None:
                shutil.rmtree(self.tmpdir, ignore_errors=True)

    def on_signal(self, signum: int, _frame: Any) -> None:
        """Clean up from a thread, then exit. Raising SystemExit here instead could be
        swallowed: a signal handler's exception is lost when it lands in a weakref callback
        or a __del__, which Keras's clear_session sets off often."""
        signal.signal(signum, signal.SIG_DFL)  # a second signal ends the process at once

        def clean_and_exit() -> None:
            try:
                self()
            finally:
                print(f"stopped by signal {signum}", file=sys.stderr, flush=True)
                os._exit(128 + signum)

        threading.Thread(target=clean_and_exit, name="cleanup").start()


# -- main -------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--trials", type=int, default=30,
                        help="trials in (a), (b) and (c) (default 30; the first 3 are warm-up)")
    parser.add_argument("--storage", metavar="URL",
                        help="database URL (default: a fresh SQLite file in a temp dir)")
    parser.add_argument("--json", metavar="PATH", help="also write the results here as JSON")
    parser.add_argument("--fresh-runs", type=int, default=FRESH_RUNS,
                        help=f"fresh-interpreter runs in (d) (default {FRESH_RUNS}; 0 skips)")
    parser.add_argument("--order", choices=("interleaved", "sequential"), default="interleaved",
                        help="interleaved (default): one bare trial after each tuner trial, so "
                             "that both see the same process age and machine load; sequential: "
                             "all bare trials, then the worker (a Keras process slows down as "
                             "it runs trials, which then counts against the worker)")
    args = parser.parse_args(argv)
    if args.trials <= WARMUP + 1:
        parser.error(f"--trials must be more than {WARMUP + 1} (the first {WARMUP} are warm-up)")
    if args.fresh_runs < 0:
        parser.error("--fresh-runs must be 0 or more")

    import logging

    # Keras retraces its train function after every clear_session; TensorFlow warns each time.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)

    from tuner.errors import StorageError
    from tuner.storage import Storage

    tmpdir = None
    url = args.storage
    if url is None:
        tmpdir = tempfile.mkdtemp(prefix="trial-overhead-")
        url = f"sqlite:///{tmpdir}/bench.db"
    n = args.trials
    interleave = args.order == "interleaved"
    tag = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    worker_study, db_study = f"bench-trial-overhead-{tag}", f"bench-db-overhead-{tag}"
    cleanup = Cleanup(tmpdir)
    signal.signal(signal.SIGTERM, cleanup.on_signal)
    try:
        try:
            storage = cleanup.storage = Storage(url)
        except StorageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        data = load_xy()
        what = "interleaved with" if interleave else "after"
        print(f"(b) warm tuner worker, {n} trials, {what} (a) {n} bare Keras trials ...",
              file=sys.stderr, flush=True)
        cleanup.studies.append(worker_study)
        worker, bare = bench_worker(storage, worker_study, n, data, interleave)

        print(f"(c) database calls alone, {n} trials ...", file=sys.stderr, flush=True)
        cleanup.studies.append(db_study)
        db = bench_db(storage, db_study, n)

        fresh: dict[str, list[float]] = {"total": [], "import": [], "trial": []}
        if args.fresh_runs > 0:
            print(f"(d) fresh interpreter per trial, {args.fresh_runs} runs ...",
                  file=sys.stderr, flush=True)
            fresh = bench_fresh(args.fresh_runs, cleanup)

        machine = describe_machine(storage)
        machine["order"] = (
            f"{args.order}; {n} trials per part, the first {WARMUP} left out of (a)-(c)"
        )
    finally:
        cleanup()

    w = WARMUP
    bare_s = _stats(bare[w:])
    cycle_s = _stats(worker["cycle"][w:])
    diffs = [c - b for c, b in zip(worker["cycle"][w:], bare[w:], strict=True)]
    paired = _stats(diffs)
    q1, _, q3 = statistics.quantiles(diffs, n=4)
    overhead = {"median": cycle_s["median"] - bare_s["median"],
                "mean": cycle_s["mean"] - bare_s["mean"], "n": None}
    percent = {"median": 100 * overhead["median"] / bare_s["median"],
               "mean": 100 * overhead["mean"] / bare_s["mean"], "n": None}
    parts = (worker["claim_gap"], db["study"], db["report"], db["finish"])
    direct = {key: sum(_stats(part[w:])[key] for part in parts) for key in ("median", "mean")}
    direct["n"] = None
    fresh_s = _stats(fresh["total"])
    clock = "DB clock, 1 ms steps on SQLite" if url.startswith("sqlite") else "DB clock"
    rows = [
        _row("a", "Bare Keras trial: clear_session + seed + build + fit (1 epoch, val)",
             bare_s, "ms", "plain loop" if not interleave else "between the worker's trials"),
        _row("b", "Tuner worker trial: claim -> train -> finish, end to end",
             cycle_s, "ms", "perf_counter"),
        _row("b", "... in `_run_one` (study read, build, fit, report_epoch, finish_trial)",
             _stats(worker["in_trial"][w:]), "ms"),
        _row("b", "... between trials (claim_trial, loop)",
             _stats(worker["claim_gap"][w:]), "ms"),
        _row("b", "Worker.run() wall time / N", {"median": None,
             "mean": worker["run_minus_bare_s"] * 1000 / n, "n": n}, "ms",
             "all N trials incl. warm-up, data, register, stop"
             + ("; bare trials subtracted" if interleave else "")),
        _row("b", "Trial in DB: started_at -> finished_at",
             _stats(worker["db_duration"][w:]), "ms", clock),
        _row("b", "Gap in DB: finished_at -> next started_at",
             _stats(worker["db_gap"][w:]), "ms",
             clock + ("; bare trial subtracted" if interleave else "")),
        _row("b", "**Tuner overhead per trial** (worker trial - bare trial)", overhead, "ms",
             f"difference of medians / of means; paired per-trial differences: median "
             f"{_fmt(paired['median'], 'ms')}, quartiles {_fmt(q1, 'ms')} .. {_fmt(q3, 'ms')}"),
        _row("b", "Tuner overhead, relative to bare", percent, "%"),
        _row("c", "DB alone: claim_trial + report_epoch + finish_trial",
             _stats(db["total"][w:]), "ms", "no Keras"),
        _row("c", "... claim_trial (incl. reading the claimed trial)",
             _stats(db["claim"][w:]), "ms"),
        _row("c", "... report_epoch (1 epoch)", _stats(db["report"][w:]), "ms"),
        _row("c", "... finish_trial", _stats(db["finish"][w:]), "ms"),
        _row("c", "study_by_id (the worker also reads it per trial)",
             _stats(db["study"][w:]), "ms", "not in the total above"),
        _row("c", "enqueue_trial (coordinator side)", _stats(db["enqueue"][w:]), "ms",
             "not on the worker's path"),
        _row("b+c", "The tuner's database work per trial, measured without Keras's noise",
             direct, "ms", "(b) between trials + (c) study_by_id, report_epoch, finish_trial"),
    ]
    if fresh["total"]:
        rows += [
            _row("d", "**Fresh process per trial** (`python -c`: start, import, build, fit)",
                 fresh_s, "s"),
            _row("d", "... import keras (and its backend) in the child",
                 _stats(fresh["import"]), "s"),
            _row("d", "... the trial in the child (data, build, fit)",
                 _stats(fresh["trial"]), "s", "a process's first trial: traces from cold"),
            _row("d", "Fresh process vs warm tuner trial",
                 {"median": fresh_s["median"] * 1000 / cycle_s["median"], "mean": None,
                  "n": None}, "x", "ratio of medians"),
        ]

    table = markdown(machine, rows)
    print(table)
    if args.json:
        result = {
            "machine": machine, "trials": n, "warmup": WARMUP, "order": args.order,
            "fresh_runs": args.fresh_runs, "rows": rows, "markdown": table,
            "raw_ms": {"bare": bare,
                       **{f"worker_{k}": v for k, v in worker.items() if not k.endswith("_s")},
                       **{f"db_{k}": v for k, v in db.items()}},
            "raw_s": {**{f"worker_{k}": v for k, v in worker.items() if k.endswith("_s")},
                      **{f"fresh_{k}": v for k, v in fresh.items()}},
        }
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
