"""Trials per second and per-trial coordination overhead, this tuner against Optuna.

    .venv/bin/python benchmarks/throughput.py
    .venv/bin/python benchmarks/throughput.py --trials 1000 --workers 1 4 16 --long 10000
    .venv/bin/python benchmarks/throughput.py --trials 0 --vacuum 10 --json growth.json

Both systems run the same objective (benchmarks/trivial_study.py: two floats, a
quadratic, no sleep), so a trial costs next to nothing and what is measured is the
machinery around it. Each cell is a fresh study on a freshly emptied database:

  - the tuner: `Study.create(..., strategy="random")` then `study.optimize(trials=N,
    workers=W)`: the coordinator in this process and W spawned worker processes, each
    claiming trials from the database (the loop `tuner worker` agents run);
  - Optuna: a study created on `optuna.storages.RDBStorage(url)` with a RandomSampler,
    then W spawned processes, each `optuna.load_study(...).optimize(objective,
    n_trials=its share)` on its own RDBStorage of the same database. Optuna's per-trial
    INFO log lines are switched off (WARNING), as the tuner's workers log nothing per trial.

Figures per cell:
  - trials/s = trials / (last finish - first start), from the stored timestamps (the
    tuner: `started_at`/`finished_at`, the database's clock; Optuna: `datetime_start`/
    `datetime_complete`, each process's clock, all on this host); and the same rate over
    the middle 80 % of the trials in order of finish (no ramp-up, no tail);
  - overhead/trial = W x (last finish - first start) / trials: worker-seconds per trial,
    all of it coordination, since the objective costs microseconds;
  - to first trial = from the start of the cell (study creation) to the first trial's
    start: mostly starting the processes;
  - wall = the whole cell: study creation, process start-up, the trials, shutdown;
  - CPU/trial = the CPU time of this process and its children (rusage), and of the whole
    machine (/proc/stat: the database server and any other load included), per trial;
  - on PostgreSQL, the database's own count of transactions and of rows read (index
    entries and heap rows returned, `pg_stat_database.tup_returned`) per trial, over the
    middle 80 % of the trials: work that does not depend on how busy the machine is.
Optuna on SQLite with many processes can fail with "database is locked": such errors are
caught in its processes, counted, and the process goes on with the rest of its share;
the table reports the trials that completed and the errors.

The overhead-growth part (`--long N`, on PostgreSQL) runs one long study per system with
the most workers and reports, in order of finish, per-trial overhead in windows of 100
trials (trials 100-200, a few in between, the last 100), and per tenth of the run the
rate and the database's work per trial. Optuna's long run is shorter (`--long-optuna`).
`--vacuum S` runs VACUUM ANALYZE on the database every S seconds during PostgreSQL cells,
standing in for autovacuum on a server that has it switched off.

Everything lives in the database given by `--postgresql` (default: the `bench`
database on loopback): every table in it is DROPPED before each cell. SQLite cells use
fresh files in a temporary folder.
"""

from __future__ import annotations

import argparse
import ast
import bisect
import json
import logging
import multiprocessing as mp
import os
import queue
import resource
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from databases import empty_database
from machine import load_average, machine_basics, machine_busy_s, postgres_settings

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # benchmark this working tree

STUDY_FILE = Path(__file__).with_name("trivial_study.py")
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1/bench"
SEED = 1
WINDOW = 100  # trials per window of the overhead-growth part
MAX_ERRORS = 1000  # per Optuna process, then it gives up on its share
PG_COUNTERS = ("xact", "rows_read", "rows_fetched", "blocks")


# -- measuring --------------------------------------------------------------------
def _own_cpu_s() -> float:
    """CPU seconds of this process and of its children that have been reaped."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


class PgSampler:
    """Samples the database's counters (pg_stat_database) twice a second while a cell
    runs, and runs VACUUM ANALYZE every `vacuum` seconds if asked. PostgreSQL publishes a
    backend's counters at most once a second, so they are read over spans of seconds."""

    def __init__(self, url: str, vacuum: float = 0.0) -> None:
        import sqlalchemy as sa

        self.engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        self.vacuum = vacuum
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.vacuums = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="pg-sampler")

    def _sample(self) -> None:
        with self.engine.connect() as conn:
            row = conn.exec_driver_sql(
                "SELECT xact_commit + xact_rollback, tup_returned, tup_fetched,"
                " blks_hit + blks_read FROM pg_stat_database WHERE datname = current_database()"
            ).one()
        self.samples.append((time.time(), dict(zip(PG_COUNTERS, map(float, row), strict=True))))

    def _run(self) -> None:
        next_vacuum = time.monotonic() + self.vacuum
        while not self._stop.wait(0.5):
            try:
                self._sample()
                if self.vacuum and time.monotonic() >= next_vacuum:
                    with self.engine.connect() as conn:
                        conn.exec_driver_sql("VACUUM ANALYZE")
                    self.vacuums += 1
                    next_vacuum = time.monotonic() + self.vacuum
            except Exception as exc:  # a missed sample is a gap, not a failed cell
                print(f"pg sampler: {exc}", file=sys.stderr)

    def start(self) -> None:
        self._sample()
        self._thread.start()

    def stop(self) -> None:
        time.sleep(1.2)  # let the last backends publish their counters
        self._stop.set()
        self._thread.join()
        self._sample()
        self.engine.dispose()

    def at(self, t: float) -> dict[str, float]:
        """The counters at time `t`, interpolated between samples."""
        times = [s[0] for s in self.samples]
        i = bisect.bisect_left(times, t)
        if i == 0:
            return self.samples[0][1]
        if i >= len(times):
            return self.samples[-1][1]
        (t0, a), (t1, b) = self.samples[i - 1], self.samples[i]
        w = (t - t0) / (t1 - t0) if t1 > t0 else 1.0
        return {k: a[k] + w * (b[k] - a[k]) for k in a}

    def per_trial(self, t0: float, t1: float, trials: int) -> dict[str, float]:
        a, b = self.at(t0), self.at(t1)
        return {k: (b[k] - a[k]) / trials for k in PG_COUNTERS} if trials > 0 else {}


class Meter:
    def __init__(self, sampler: PgSampler | None = None) -> None:
        self.sampler = sampler

    def __enter__(self) -> Meter:
        self.load = os.getloadavg()[0]  # 1-minute: other work sharing the cores
        if self.sampler is not None:
            self.sampler.start()
        self.t0 = time.time()
        self.wall0, self.own0, self.busy0 = time.perf_counter(), _own_cpu_s(), machine_busy_s()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.own = _own_cpu_s() - self.own0
        self.busy = machine_busy_s() - self.busy0
        if self.sampler is not None:
            self.sampler.stop()


def summarize(system: str, db: str, workers: int, requested: int,
              spans: list[tuple[float, float]], meter: Meter, errors: int = 0,
              error_text: str | None = None) -> dict[str, Any]:
    """One cell: `spans` are the (start, finish) of the COMPLETE trials, in seconds."""
    done = len(spans)
    result: dict[str, Any] = {
        "system": system, "db": db, "workers": workers, "requested": requested,
        "complete": done, "errors": errors, "error_text": error_text,
        "wall_s": meter.wall, "own_cpu_s": meter.own, "machine_cpu_s": meter.busy,
        "load_before": meter.load,
    }
    if not done:
        return result
    first_start = min(s for s, _ in spans)
    span = max(f for _, f in spans) - first_start
    finishes = sorted(f for _, f in spans)
    result.update(
        span_s=span, to_first_trial_s=first_start - meter.t0,
        trials_per_s=done / span if span > 0 else None,
        overhead_ms=workers * span / done * 1000,
        own_cpu_ms=meter.own / done * 1000, machine_cpu_ms=meter.busy / done * 1000,
        duration_ms_median=statistics.median(f - s for s, f in spans) * 1000,
    )
    # The middle 80 %: without the ramp-up (processes still starting) and the tail.
    a, b = done // 10, done - 1 - done // 10
    if b > a and finishes[b] > finishes[a]:
        result["middle_per_s"] = (b - a) / (finishes[b] - finishes[a])
        if meter.sampler is not None:
            result["db_per_trial"] = meter.sampler.per_trial(finishes[a], finishes[b], b - a)
    if meter.sampler is not None:
        result["vacuums"] = meter.sampler.vacuums
    return result


def windows(spans: list[tuple[float, float]], workers: int,
            size: int = WINDOW) -> list[dict[str, Any]]:
    """Per-trial overhead in windows of `size` trials, in order of finish: trials
    [size, 2 size), a few in between, and the last `size`. Window [a, b) is timed from
    the finish of trial a-1 to that of trial b-1: a rate between two finishes."""
    spans = sorted(spans, key=lambda sf: sf[1])
    n = len(spans)
    if n < 3 * size:
        return []
    starts = [size] + [round(n * q / size) * size for q in (0.1, 0.25, 0.5, 0.75)] + [n - size]
    chosen: list[int] = []
    for a in sorted(set(starts)):
        if size <= a <= n - size and (not chosen or a >= chosen[-1] + size):
            chosen.append(a)
    if chosen[-1] != n - size:  # the last window is the point of the exercise
        chosen[-1] = n - size
    out = []
    for a in chosen:
        b = a + size
        elapsed = spans[b - 1][1] - spans[a - 1][1]
        out.append({
            "first": a, "last": b, "elapsed_s": elapsed,
            "trials_per_s": size / elapsed if elapsed > 0 else None,
            "overhead_ms": workers * elapsed / size * 1000,
            "duration_ms_median": statistics.median(f - s for s, f in spans[a:b]) * 1000,
        })
    return out


def tenths(spans: list[tuple[float, float]], workers: int,
           sampler: PgSampler | None) -> list[dict[str, Any]]:
    """The run in tenths, in order of finish: rate, overhead and database work per trial."""
    finishes = sorted(f for _, f in spans)
    n = len(finishes)
    if n < 20:
        return []
    out = []
    for k in range(10):
        a, b = k * n // 10, (k + 1) * n // 10 - 1  # trials a+1 .. b, timed finish to finish
        elapsed = finishes[b] - finishes[a]
        row: dict[str, Any] = {
            "first": a, "last": b + 1, "trials_per_s": (b - a) / elapsed if elapsed > 0 else None,
            "overhead_ms": workers * elapsed / (b - a) * 1000,
        }
        if sampler is not None:
            row["db_per_trial"] = sampler.per_trial(finishes[a], finishes[b], b - a)
        out.append(row)
    return out


# -- databases --------------------------------------------------------------------
class Databases:
    """Hands out an empty database per cell: a new SQLite file, or the emptied server."""

    def __init__(self, pg_url: str, vacuum: float) -> None:
        self.pg_url = pg_url
        self.vacuum = vacuum
        self.tmpdir = tempfile.mkdtemp(prefix="throughput-")

    def fresh(self, db: str) -> tuple[str, PgSampler | None]:
        if db == "sqlite":
            return f"sqlite:///{self.tmpdir}/{uuid.uuid4().hex[:12]}.db", None
        empty_database(self.pg_url)
        return self.pg_url, PgSampler(self.pg_url, self.vacuum)

    def close(self) -> None:
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        try:
            empty_database(self.pg_url)
        except Exception as exc:  # the figures are printed already
            print(f"could not empty {self.pg_url}: {exc}", file=sys.stderr)


# -- the tuner ----------------------------------------------------------------------
def run_tuner(url: str, db: str, trials: int, workers: int,
              sampler: PgSampler | None) -> tuple[dict[str, Any], list, Meter]:
    from tuner import Study, TrialState
    from tuner.executors import make_executor
    from tuner.storage import Storage

    storage = Storage(url)  # creates the schema: outside the clock, as for Optuna below
    executor = make_executor(workers)  # what `study.optimize(workers=W)` starts
    try:
        with Meter(sampler) as meter:
            study = Study.create(f"throughput-{uuid.uuid4().hex[:8]}", definition=STUDY_FILE,
                                 storage=storage, strategy="random", seed=SEED)
            study.optimize(trials=trials, executor=executor)
        stored = study.trials
    finally:
        storage.dispose()
        if getattr(executor, "processes", None) is not None:
            shutil.rmtree(executor.log_dir, ignore_errors=True)  # the workers' (empty) logs
    done = [t for t in stored if t.state == TrialState.COMPLETE]
    spans = [(t.started_at, t.finished_at) for t in done]
    return summarize("tuner", db, workers, trials, spans, meter,
                     errors=len(stored) - len(done)), spans, meter


# -- Optuna -------------------------------------------------------------------------
def _load_objective() -> Any:
    """`optuna_objective` from the study file, without running the file's `tuner` import
    (the Optuna processes should not pay for importing this tuner): its functions only."""
    tree = ast.parse(STUDY_FILE.read_text())
    tree.body = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    namespace: dict[str, Any] = {}
    exec(compile(tree, str(STUDY_FILE), "exec"), namespace)
    return namespace["optuna_objective"]


def _optuna_process(url: str, name: str, share: int, seed: int, results: Any) -> None:
    """One Optuna process: its share of the trials, on its own RDBStorage."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objective = _load_objective()
    called = 0

    def counted(trial: Any) -> float:
        nonlocal called
        called += 1
        return objective(trial)

    errors, first_error = 0, None
    while called < share and errors < MAX_ERRORS:
        try:
            study = optuna.load_study(study_name=name, storage=optuna.storages.RDBStorage(url),
                                      sampler=optuna.samplers.RandomSampler(seed=seed))
            study.optimize(counted, n_trials=share - called)
        except Exception as exc:  # "database is locked" on SQLite, above all
            errors += 1
            first_error = first_error or f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    results.put((errors, first_error))


def run_optuna(url: str, db: str, trials: int, workers: int,
               sampler: PgSampler | None) -> tuple[dict[str, Any], list, Meter]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(url)  # creates the schema, outside the clock
    name = f"throughput-{uuid.uuid4().hex[:8]}"
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    with Meter(sampler) as meter:
        optuna.create_study(study_name=name, storage=storage, direction="minimize",
                            sampler=optuna.samplers.RandomSampler(seed=SEED))
        shares = [trials // workers + (1 if i < trials % workers else 0) for i in range(workers)]
        processes = [ctx.Process(target=_optuna_process, args=(url, name, share, SEED + i,
                                                               results), daemon=True)
                     for i, share in enumerate(shares)]
        for p in processes:
            p.start()
        reports: list[tuple[int, str | None]] = []
        while len(reports) < len(processes):
            try:
                reports.append(results.get(timeout=1.0))
            except queue.Empty:  # a process that died before reporting must not hang us
                if not any(p.is_alive() for p in processes):
                    break
        for p in processes:
            p.join()
    missing = len(processes) - len(reports)
    if missing:
        codes = sorted({p.exitcode for p in processes if p.exitcode})
        reports.append((missing, f"{missing} Optuna process(es) exited without reporting "
                                 f"(exit codes {codes})"))
    errors = sum(e for e, _ in reports)
    error_text = next((text for _, text in reports if text), None)
    study = optuna.load_study(study_name=name, storage=storage)
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    storage.engine.dispose()
    spans = [(t.datetime_start.timestamp(), t.datetime_complete.timestamp()) for t in done]
    return summarize("optuna", db, workers, trials, spans, meter, errors=errors,
                     error_text=error_text), spans, meter


RUNNERS = {"tuner": run_tuner, "optuna": run_optuna}


# -- the report ---------------------------------------------------------------------
def describe_machine(pg_url: str | None) -> dict[str, str]:
    import optuna
    import sqlalchemy as sa

    machine = {
        **machine_basics(),
        "optuna / sqlalchemy": f"{optuna.__version__} / {sa.__version__}",
        "sqlite": sqlite3.sqlite_version,
    }
    if pg_url:
        version, settings = postgres_settings(pg_url, ("autovacuum",))
        machine["postgresql"] = f"{version}, autovacuum {settings['autovacuum']}"
    return machine


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _db(row: dict[str, Any], key: str, digits: int = 1) -> str:
    return _num(row["db_per_trial"].get(key), digits) if row.get("db_per_trial") else "-"


def cell_table(cells: list[dict[str, Any]]) -> str:
    lines = [
        "| DB | workers | system | complete (errors) | trials/s | trials/s, middle 80 % "
        "| overhead/trial | trial start→finish, median | to first trial | wall "
        "| CPU/trial: benchmark + children, machine | DB transactions, rows read /trial |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        lines.append(
            f"| {c['db']} | {c['workers']} | {c['system']} | {c['complete']} ({c['errors']}) "
            f"| {_num(c.get('trials_per_s'))} | {_num(c.get('middle_per_s'))} "
            f"| {_num(c.get('overhead_ms'))} ms | {_num(c.get('duration_ms_median'), 2)} ms "
            f"| {_num(c.get('to_first_trial_s'), 2)} s | {c['wall_s']:.1f} s "
            f"| {_num(c.get('own_cpu_ms'))} ms, {_num(c.get('machine_cpu_ms'))} ms "
            f"| {_db(c, 'xact')}, {_db(c, 'rows_read', 0)} |"
        )
    return "\n".join(lines)


def ratio_table(cells: list[dict[str, Any]]) -> str:
    by = {(c["db"], c["workers"], c["system"]): c for c in cells}
    lines = ["| DB | workers | tuner / Optuna: trials/s | trials/s, middle 80 % "
             "| wall per completed trial (Optuna / tuner) |",
             "|---|---:|---:|---:|---:|"]

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}x" if a and b else "-"

    for (db, w, system), tuner in by.items():
        optuna = by.get((db, w, "optuna"))
        if system != "tuner" or optuna is None:
            continue
        wall = [c["wall_s"] / c["complete"] if c["complete"] else None for c in (optuna, tuner)]
        lines.append(
            f"| {db} | {w} | {ratio(tuner.get('trials_per_s'), optuna.get('trials_per_s'))} "
            f"| {ratio(tuner.get('middle_per_s'), optuna.get('middle_per_s'))} "
            f"| {ratio(*wall)} |"
        )
    return "\n".join(lines)


def growth_table(long_runs: list[dict[str, Any]]) -> str:
    lines = ["| system | trials | window (in order of finish) | trials/s | overhead/trial "
             "| trial start→finish, median |", "|---|---:|---|---:|---:|---:|"]
    for run in long_runs:
        cell = run["cell"]
        who = f"{cell['system']} ({cell['workers']} workers)"
        for w in run["windows"]:
            lines.append(
                f"| {who} | {cell['complete']} | {w['first']}–{w['last']} "
                f"| {_num(w['trials_per_s'])} | {_num(w['overhead_ms'])} ms "
                f"| {_num(w['duration_ms_median'], 2)} ms |"
            )
        first, last = run["windows"][0], run["windows"][-1]
        lines.append(
            f"| {cell['system']}: last window / first | | "
            f"| {last['trials_per_s'] / first['trials_per_s']:.2f}x "
            f"| {last['overhead_ms'] / first['overhead_ms']:.2f}x "
            f"| {last['duration_ms_median'] / first['duration_ms_median']:.2f}x |"
        )
    return "\n".join(lines)


def tenths_table(long_runs: list[dict[str, Any]]) -> str:
    lines = ["| system | trials (in order of finish) | trials/s | overhead/trial "
             "| DB transactions /trial | DB rows read /trial |", "|---|---|---:|---:|---:|---:|"]
    for run in long_runs:
        for t in run["tenths"]:
            lines.append(
                f"| {run['cell']['system']} | {t['first']}–{t['last']} "
                f"| {_num(t['trials_per_s'])} | {_num(t['overhead_ms'])} ms "
                f"| {_db(t, 'xact')} | {_db(t, 'rows_read', 0)} |"
            )
    return "\n".join(lines)


def markdown(machine: dict[str, str], cells: list[dict[str, Any]],
             long_runs: list[dict[str, Any]]) -> str:
    lines = ["## Throughput", ""]
    lines += [f"- **{key}**: {value}" for key, value in machine.items()]
    if cells:
        lines += ["", cell_table(cells), "", ratio_table(cells)]
    shown = [r for r in long_runs if r["windows"]]
    if shown:
        lines += ["", "Overhead growth (PostgreSQL):", "", growth_table(shown), "",
                  tenths_table(shown)]
    errors = {c["error_text"] for c in cells + [r["cell"] for r in long_runs] if c["error_text"]}
    if errors:
        lines += ["", "Errors: " + "; ".join(sorted(errors))]
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--trials", type=int, default=1000,
                        help="trials per cell (default 1000; 0 skips the cells)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 16],
                        help="worker processes per cell (default 1 4 16)")
    parser.add_argument("--databases", nargs="+", choices=("sqlite", "postgresql"),
                        default=["sqlite", "postgresql"])
    parser.add_argument("--systems", nargs="+", choices=tuple(RUNNERS),
                        default=list(RUNNERS))
    parser.add_argument("--postgresql", metavar="URL", default=DEFAULT_PG,
                        help="PostgreSQL database, EMPTIED (every table dropped) before each "
                             f"cell (default {DEFAULT_PG})")
    parser.add_argument("--long", type=int, default=10_000, metavar="N",
                        help="trials of the tuner's overhead-growth run on PostgreSQL with the "
                             "most workers (default 10000; 0 skips it)")
    parser.add_argument("--long-optuna", type=int, default=2_000, metavar="N",
                        help="trials of Optuna's overhead-growth run (default 2000; 0 skips it)")
    parser.add_argument("--vacuum", type=float, default=0.0, metavar="S",
                        help="VACUUM ANALYZE the PostgreSQL database every S seconds during its "
                             "cells (default 0: never, as with autovacuum off)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure here as JSON")
    args = parser.parse_args(argv)
    if args.trials < 0 or any(w < 1 for w in args.workers):
        parser.error("--trials must be 0 or more and --workers positive")

    logging.basicConfig(level=logging.WARNING)
    uses_pg = "postgresql" in args.databases or args.long or args.long_optuna
    machine = describe_machine(args.postgresql if uses_pg else None)
    if args.vacuum:
        machine["maintenance"] = f"VACUUM ANALYZE every {args.vacuum:g} s during PostgreSQL cells"
    dbs = Databases(args.postgresql, args.vacuum)
    cells: list[dict[str, Any]] = []
    long_runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        for db in args.databases if args.trials else ():
            for workers in args.workers:
                for system in args.systems:
                    print(f"{db}, {workers} workers, {system}, {args.trials} trials ...",
                          file=sys.stderr, flush=True)
                    url, sampler = dbs.fresh(db)
                    cell, _, _ = RUNNERS[system](url, db, args.trials, workers, sampler)
                    cells.append(cell)
                    print(f"  {_num(cell.get('trials_per_s'))} trials/s, wall "
                          f"{cell['wall_s']:.1f} s, {cell['complete']} complete, "
                          f"{cell['errors']} errors", file=sys.stderr, flush=True)
        most = max(args.workers)
        for system, n in (("tuner", args.long), ("optuna", args.long_optuna)):
            if n <= 0 or system not in args.systems:
                continue
            print(f"overhead growth: postgresql, {most} workers, {system}, {n} trials ...",
                  file=sys.stderr, flush=True)
            url, sampler = dbs.fresh("postgresql")
            cell, spans, meter = RUNNERS[system](url, "postgresql", n, most, sampler)
            long_runs.append({"cell": cell, "windows": windows(spans, most),
                              "tenths": tenths(spans, most, meter.sampler)})
            print(f"  {_num(cell.get('trials_per_s'))} trials/s, wall {cell['wall_s']:.1f} s",
                  file=sys.stderr, flush=True)
    finally:
        dbs.close()
    machine["load average after the run"] = load_average()
    machine["benchmark wall time"] = f"{time.perf_counter() - started:.0f} s"
    table = markdown(machine, cells, long_runs)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"machine": machine, "args": vars(args), "cells": cells, "long": long_runs,
             "markdown": table}, indent=2) + "\n")
        print(f"\nwrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
