"""The executors side by side: the local pool, `tuner worker` agents and Ray, and Ray Tune.

    .venv/bin/python benchmarks/executors.py
    .venv/bin/python benchmarks/executors.py --workers 2 --trivial-trials 300 --digits-trials 8
    .venv/bin/python benchmarks/executors.py --storage postgresql+psycopg://postgres@127.0.0.1/bench

Every cell is a real command, run as a user would run it, on a fresh study in a fresh
database (a new SQLite file in a temporary folder by default):

  - pool:   `tuner run STUDY --workers W` (W worker processes spawned by `tuner run`);
  - agents: `tuner run STUDY --workers 0` and, started at the same moment, one agent
            `tuner worker --storage URL --workers W` (stopped with SIGTERM once the run
            is over; its stop is timed apart and not in the wall time);
  - ray:    `tuner run STUDY --ray local --workers W` (Ray started on this machine, W
            worker actors of one CPU each);

each on two workloads, random search with a fixed seed:

  - trivial: benchmarks/trivial_study.py (two floats, a quadratic, no Keras), so that
             everything measured is the machinery around a trial;
  - digits:  studies/digits_mlp.py with `--epochs E`, a small Keras MLP.

And Ray Tune itself on the trivial objective (the peer a Ray user would pick instead),
in a fresh `python` process: `ray.init(num_cpus=W)`, `tune.Tuner` with the same two
parameters over the same ranges (`tune.uniform(0, 1)` each), random search
(BasicVariantGenerator with the same seed), `num_samples=N`, `max_concurrent_trials=W`,
one CPU a trial, a temporary `storage_path`; the function trainable computes the same
objective and reports it with `tune.report`. Two variants: Tune's defaults (an actor
per trial) and `reuse_actors=True` (Tune's own knob for short trials).

Figures per cell, from the stored trials (this tuner: `started_at`/`finished_at`, the
database's clock, converted to this process's clock by an offset measured before the
cell; Ray Tune: `time.time()` read inside the trainable at its start and end):

  - wall: the command, from its start to its exit (Tune: the whole python process);
  - to first trial: from the command's start to the first trial's start (imports, the
    study's creation, starting workers, actors or Ray); "to first queued" is when the
    coordinator had queued its first trials;
  - trials/s: trials / (last finish - first start);
  - overhead/trial: W x (last finish - first start) / trials - the mean trial duration:
    the time a worker slot spends not running a trial, per trial;
  - machine CPU/trial: busy CPU seconds of the whole machine (/proc/stat) during the
    cell, per trial: every process the executor started, Ray's daemons included.

Before each cell the script waits until no other benchmark of this repository is running
(`pgrep -f "benchmarks/(dashboard|throughput)"`), and records how long it waited.
A PostgreSQL `--storage` is EMPTIED (every table dropped) before each cell: use a
database of its own, such as `bench`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from databases import empty_database
from machine import cpu_model, load_average, machine_basics, machine_busy_s

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # benchmark this working tree

TRIVIAL = Path(__file__).with_name("trivial_study.py")
DIGITS = ROOT / "studies" / "digits_mlp.py"
EXECUTORS = ("pool", "agents", "ray")
WORKLOADS = ("trivial", "digits")
TUNE_VARIANTS = ("default", "reuse")
OTHER_BENCHMARKS = "benchmarks/(dashboard|throughput)"
# Databases this script must never empty: the test suite's.
PROTECTED_DATABASES = {"test", "test_h1", "test_h2"}
# The same for every command: quiet TensorFlow, no usage-stats attempt from an offline host.
CHILD_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "RAY_USAGE_STATS_ENABLED": "0",
             "PYTHONUNBUFFERED": "1"}


# -- measuring ----------------------------------------------------------------------
def wait_until_quiet(poll: float = 5.0) -> float:
    """Wait while another benchmark of this repository runs; the seconds waited."""
    started = time.perf_counter()
    told = False
    while subprocess.run(["pgrep", "-f", OTHER_BENCHMARKS], capture_output=True).returncode == 0:
        if not told:
            print("  waiting: another benchmark is running", file=sys.stderr, flush=True)
            told = True
        time.sleep(poll)
    return time.perf_counter() - started


def ray_daemons() -> set[int]:
    """Pids of Ray's node daemons on this machine (left behind if a run leaks Ray)."""
    found = subprocess.run(["pgrep", "-f", "raylet|gcs_server"], capture_output=True, text=True)
    return {int(p) for p in found.stdout.split()}


def summarize(spans: list[tuple[float, float]], workers: int, t0: float) -> dict[str, Any]:
    """Rates from the (start, finish) of the complete trials, on this process's clock;
    `t0` is when the command started."""
    if not spans:
        return {}
    first = min(s for s, _ in spans)
    span = max(f for _, f in spans) - first
    durations = [f - s for s, f in spans]
    mean = statistics.fmean(durations)
    n = len(spans)
    return {
        "to_first_trial_s": first - t0,
        "span_s": span,
        "last_finish_s": first + span - t0,
        "trials_per_s": n / span if span > 0 else None,
        "mean_trial_ms": mean * 1000,
        "median_trial_ms": statistics.median(durations) * 1000,
        "overhead_ms": (workers * span / n - mean) * 1000,
    }


# -- databases ----------------------------------------------------------------------
class Databases:
    """A fresh database per cell: a new SQLite file, or the emptied server database."""

    def __init__(self, storage: str | None) -> None:
        self.server = storage
        self.tmpdir = Path(tempfile.mkdtemp(prefix="executors-"))
        if storage is not None:
            from sqlalchemy.engine import make_url

            url = make_url(storage)
            if url.get_backend_name() == "sqlite":
                raise SystemExit("--storage: give a server URL; SQLite files are the default")
            if (url.database or "") in PROTECTED_DATABASES:
                raise SystemExit(f"--storage: refusing to empty {url.database!r}, the test "
                                 "suite's database; use `bench`")

    def fresh(self) -> str:
        if self.server is None:
            return f"sqlite:///{self.tmpdir}/{uuid.uuid4().hex[:12]}.db"
        empty_database(self.server)
        return self.server

    def close(self) -> None:
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        if self.server is not None:
            try:
                empty_database(self.server)
            except Exception as exc:  # the figures are printed already
                print(f"could not empty the database: {exc}", file=sys.stderr)


def wait_or_interrupt(proc: subprocess.Popen, timeout: float, cell: dict[str, Any]) -> int:
    """The command's exit code; past `timeout`, Ctrl-C it and note that in the cell."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        cell["error"] = f"timed out after {timeout} s"
        return proc.wait(timeout=60)


# -- the tuner's cells ----------------------------------------------------------------
def tuner_command() -> list[str]:
    script = Path(sys.executable).with_name("tuner")
    return [str(script)] if script.exists() else [sys.executable, "-m", "tuner.cli"]


def clock_offset(storage: Any) -> float:
    """Database clock minus this process's clock, seconds (the middle of the round trip)."""
    best: tuple[float, float] | None = None
    for _ in range(5):
        a = time.time()
        now = storage.now()
        b = time.time()
        if best is None or b - a < best[0]:
            best = (b - a, now - (a + b) / 2)
    assert best is not None
    return best[1]


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_tuner_cell(executor: str, workload: str, args: argparse.Namespace,
                   dbs: Databases) -> dict[str, Any]:
    from tuner import TrialState
    from tuner.storage import Storage

    url = dbs.fresh()
    storage = Storage(url)  # the schema, outside the clock (every cell alike)
    offset = clock_offset(storage)
    name = f"{executor}-{workload}"
    workers = args.workers
    if workload == "trivial":
        trials = args.trivial_trials
        run = [str(TRIVIAL.relative_to(ROOT)), "--trials", str(trials)]
    else:
        trials = args.digits_trials
        run = [str(DIGITS.relative_to(ROOT)), "--trials", str(trials),
               "--epochs", str(args.digits_epochs)]
    run = tuner_command() + ["run"] + run + [
        "--storage", url, "--name", name, "--strategy", "random", "--seed", str(args.seed),
        "--top", "0"]
    run += {"pool": ["--workers", str(workers)], "agents": ["--workers", "0"],
            "ray": ["--ray", "local", "--workers", str(workers)]}[executor]
    agent_cmd = tuner_command() + ["worker", "--storage", url, "--workers", str(workers)]
    env = {**os.environ, **CHILD_ENV}
    logs = dbs.tmpdir / f"{name}-{uuid.uuid4().hex[:6]}"
    daemons_before = ray_daemons()
    cell: dict[str, Any] = {"executor": executor, "workload": workload, "workers": workers,
                            "requested": trials, "command": " ".join(run)}
    if executor == "agents":
        cell["agent_command"] = " ".join(agent_cmd)
    load = os.getloadavg()[0]
    agent = None
    with open(f"{logs}.run.log", "w") as run_log, open(f"{logs}.agent.log", "w") as agent_log:
        busy0 = machine_busy_s()
        t0 = time.time()
        w0 = time.perf_counter()
        if executor == "agents":
            agent = subprocess.Popen(agent_cmd, cwd=ROOT, env=env, stdout=agent_log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        proc = subprocess.Popen(run, cwd=ROOT, env=env, stdout=run_log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        code = wait_or_interrupt(proc, args.timeout, cell)
        wall = time.perf_counter() - w0
        busy = machine_busy_s() - busy0
        if agent is not None:
            s0 = time.perf_counter()
            agent.send_signal(signal.SIGTERM)
            try:
                cell["agent_exit_code"] = agent.wait(timeout=60)
            except subprocess.TimeoutExpired:
                agent.kill()
                cell["agent_exit_code"] = agent.wait()
            cell["agent_stop_s"] = time.perf_counter() - s0
    cell.update(exit_code=code, wall_s=wall, machine_cpu_s=busy, load_before=load)
    if code != 0:
        cell["error"] = cell.get("error") or f"exit code {code}"
        cell["log_tail"] = tail(Path(f"{logs}.run.log"))
        print(f"  {name} failed ({cell['error']}):\n{cell['log_tail']}", file=sys.stderr)
        if agent is not None:
            print(tail(Path(f"{logs}.agent.log")), file=sys.stderr)
    try:
        record = storage.get_study(name)
        stored = storage.trials(record.id)
        registered = storage.workers(alive_only=False)
    finally:
        storage.dispose()
    done = [t for t in stored if t.state == TrialState.COMPLETE]
    spans = [(t.started_at - offset, t.finished_at - offset) for t in done]
    cell.update(complete=len(done), not_complete=len(stored) - len(done),
                retried=sum(1 for t in stored if t.retries), clock_offset_s=offset,
                worker_processes=len(registered),
                machine_cpu_ms=busy / len(done) * 1000 if done else None)
    queued = [t.queued_at - offset for t in stored if t.queued_at is not None]
    if queued:
        cell["to_first_queued_s"] = min(queued) - t0
    cell.update(summarize(spans, workers, t0))
    if "last_finish_s" in cell:
        cell["after_last_trial_s"] = wall - cell["last_finish_s"]
    # Every trial, for a closer look: number, worker, start and finish after the command's.
    cell["trials"] = [[t.number, t.worker_id, round(t.started_at - offset - t0, 4),
                       round(t.finished_at - offset - t0, 4)] for t in done]
    if workload == "digits" and done:
        cell["best_val_accuracy"] = max(t.value for t in done)
    leaked = ray_daemons() - daemons_before
    if leaked:
        time.sleep(5)
        leaked &= ray_daemons()
        if leaked:
            cell["ray_left_running"] = sorted(leaked)
            print(f"  warning: Ray daemons still running after the command: {sorted(leaked)}",
                  file=sys.stderr)
    return cell


# -- Ray Tune -------------------------------------------------------------------------
def _trivial_objective() -> Any:
    """`objective` of the trivial study, without running the file's `tuner` import (the
    Tune process should not pay for importing this tuner): its functions only."""
    import ast

    tree = ast.parse(TRIVIAL.read_text())
    tree.body = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    namespace: dict[str, Any] = {}
    exec(compile(tree, str(TRIVIAL), "exec"), namespace)
    return namespace["objective"]


def tune_child(out: str, trials: int, workers: int, seed: int, reuse: bool,
               storage_path: str) -> None:
    """The Ray Tune run, in its own process: what a Ray user's script would do."""
    import ray
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    objective = _trivial_objective()

    def trainable(config: dict[str, Any]) -> None:
        start = time.time()
        score = objective(config)
        tune.report({"score": score, "t_start": start, "t_end": time.time()})

    t_init = time.time()
    ray.init(address="local", num_cpus=workers, include_dashboard=False,  # never another's
             logging_level=logging.WARNING, log_to_driver=False)
    t_fit = time.time()
    try:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space={"x": tune.uniform(0.0, 1.0), "y": tune.uniform(0.0, 1.0)},
            tune_config=tune.TuneConfig(
                num_samples=trials, max_concurrent_trials=workers, metric="score",
                mode="min", search_alg=BasicVariantGenerator(random_state=seed),
                reuse_actors=reuse),
            run_config=tune.RunConfig(name="executors", storage_path=storage_path, verbose=0),
        )
        results = tuner.fit()
        t_end = time.time()
        spans = [(r.metrics["t_start"], r.metrics["t_end"]) for r in results
                 if r.error is None and r.metrics and "t_start" in r.metrics]
        best = results.get_best_result().metrics["score"] if spans else None
        report = {"spans": spans, "errors": results.num_errors, "t_init": t_init,
                  "t_fit": t_fit, "t_end": t_end, "best": best}
    finally:
        ray.shutdown()
    Path(out).write_text(json.dumps(report))


def run_tune_cell(variant: str, args: argparse.Namespace, dbs: Databases) -> dict[str, Any]:
    workers, trials = args.workers, args.trivial_trials
    out = dbs.tmpdir / f"tune-{variant}-{uuid.uuid4().hex[:6]}.json"
    storage_path = dbs.tmpdir / f"tune-{variant}-results"
    command = [sys.executable, str(Path(__file__).resolve()), "--tune-child", str(out),
               "--workers", str(workers), "--trivial-trials", str(trials), "--seed", str(args.seed),
               "--tune-storage", str(storage_path)] + (["--tune-reuse"] if variant == "reuse"
                                                        else [])
    env = {**os.environ, **CHILD_ENV}
    log_path = dbs.tmpdir / f"tune-{variant}.log"
    cell: dict[str, Any] = {"executor": "ray tune" + (", reuse_actors" if variant == "reuse"
                                                      else ""),
                            "workload": "trivial", "workers": workers, "requested": trials,
                            "command": f"ray.init(num_cpus={workers}); tune.Tuner(...reuse_actors="
                                       f"{variant == 'reuse'}).fit()"}
    daemons_before = ray_daemons()
    load = os.getloadavg()[0]
    with open(log_path, "w") as log_file:
        busy0 = machine_busy_s()
        t0 = time.time()
        w0 = time.perf_counter()
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file,
                                stderr=subprocess.STDOUT, start_new_session=True)
        code = wait_or_interrupt(proc, args.timeout, cell)
        wall = time.perf_counter() - w0
        busy = machine_busy_s() - busy0
    cell.update(exit_code=code, wall_s=wall, machine_cpu_s=busy, load_before=load)
    if code != 0 or not out.exists():
        cell["error"] = cell.get("error") or f"exit code {code}"
        cell["log_tail"] = tail(log_path)
        print(f"  Ray Tune failed ({cell['error']}):\n{cell['log_tail']}", file=sys.stderr)
        return cell
    report = json.loads(out.read_text())
    spans = [tuple(s) for s in report["spans"]]
    cell.update(complete=len(spans), not_complete=trials - len(spans),
                tune_errors=report["errors"], best_score=report["best"],
                ray_init_done_s=report["t_fit"] - t0, fit_returned_s=report["t_end"] - t0,
                machine_cpu_ms=busy / len(spans) * 1000 if spans else None)
    cell.update(summarize(spans, workers, t0))
    if "last_finish_s" in cell:
        cell["after_last_trial_s"] = wall - cell["last_finish_s"]
    cell["trials"] = [[round(a - t0, 4), round(b - t0, 4)] for a, b in sorted(spans)]
    shutil.rmtree(storage_path, ignore_errors=True)
    leaked = ray_daemons() - daemons_before
    if leaked:
        time.sleep(5)
        leaked &= ray_daemons()
        if leaked:
            cell["ray_left_running"] = sorted(leaked)
            print(f"  warning: Ray daemons still running after Tune: {sorted(leaked)}",
                  file=sys.stderr)
    return cell


# -- the report -----------------------------------------------------------------------
def describe_machine(args: argparse.Namespace) -> dict[str, str]:
    from importlib.metadata import version

    machine = {
        **machine_basics(),
        "ray / keras / tensorflow": " / ".join(
            _version(version, *p) for p in (("ray",), ("keras",),
                                             ("tensorflow", "tensorflow-cpu"))),
        "sqlite": sqlite3.sqlite_version,
        "storage": "PostgreSQL (emptied before each cell)" if args.storage
        else "a fresh SQLite file per cell, in a temporary folder",
    }
    return machine


def _version(version: Any, *packages: str) -> str:
    for package in packages:
        try:
            return version(package)
        except Exception:
            continue
    return "-"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(cells: list[dict[str, Any]]) -> str:
    lines = ["| workload | executor | trials | wall s | to first queued s | to first trial s "
             "| trials/s | mean trial ms | overhead ms/trial | machine CPU ms/trial |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cells:
        trials = f"{c.get('complete', 0)}/{c['requested']}"
        if c.get("error"):
            trials += f" ({c['error']})"
        lines.append(
            f"| {c['workload']} | {c['executor']} | {trials} | {c['wall_s']:.1f} "
            f"| {_num(c.get('to_first_queued_s'), 2)} | {_num(c.get('to_first_trial_s'), 2)} "
            f"| {_num(c.get('trials_per_s'), 2 if (c.get('trials_per_s') or 0) < 10 else 1)} "
            f"| {_num(c.get('mean_trial_ms'))} | {_num(c.get('overhead_ms'))} "
            f"| {_num(c.get('machine_cpu_ms'), 0)} |")
    return "\n".join(lines)


def markdown(machine: dict[str, str], cells: list[dict[str, Any]]) -> str:
    lines = ["## Executors", ""]
    lines += [f"- **{key}**: {value}" for key, value in machine.items()]
    lines += ["", table(cells)]
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--workers", type=int, default=2,
                        help="worker slots of every executor (default 2)")
    parser.add_argument("--trivial-trials", type=int, default=300,
                        help="trials of the trivial study (and of Ray Tune) (default 300)")
    parser.add_argument("--digits-trials", type=int, default=8,
                        help="trials of the digits study (default 8)")
    parser.add_argument("--digits-epochs", type=int, default=3,
                        help="epochs of each digits trial (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every study (default 0)")
    parser.add_argument("--storage", metavar="URL", default=None,
                        help="a PostgreSQL database, EMPTIED (every table dropped) before each "
                             "cell, e.g. postgresql+psycopg://postgres@127.0.0.1/bench "
                             "[default: a fresh SQLite file per cell in a temporary folder]")
    parser.add_argument("--executors", nargs="+", choices=EXECUTORS, default=list(EXECUTORS))
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--tune", nargs="*", choices=TUNE_VARIANTS, default=list(TUNE_VARIANTS),
                        help="Ray Tune variants on the trivial objective (default: both; "
                             "none: skip Ray Tune)")
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds a command may run before it is interrupted (default 600)")
    parser.add_argument("--json", metavar="OUT", help="also write every figure here as JSON")
    parser.add_argument("--tune-child", help=argparse.SUPPRESS)
    parser.add_argument("--tune-storage", help=argparse.SUPPRESS)
    parser.add_argument("--tune-reuse", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tune_child:
        tune_child(args.tune_child, args.trivial_trials, args.workers, args.seed,
                   args.tune_reuse, args.tune_storage)
        return 0
    if args.workers < 1 or args.trivial_trials < 1 or args.digits_trials < 1:
        parser.error("--workers and the trials must be positive")
    if "ray" in args.executors and args.workers > (os.cpu_count() or 1):
        parser.error(f"--workers {args.workers}: `--ray local` starts Ray with this machine's "
                     f"{os.cpu_count()} CPUs, so more one-CPU actors than that never start")

    logging.basicConfig(level=logging.WARNING)
    machine = describe_machine(args)
    dbs = Databases(args.storage)
    cells: list[dict[str, Any]] = []
    started = time.perf_counter()
    plan: list[tuple[str, str]] = []
    for workload in args.workloads:
        plan += [(executor, workload) for executor in args.executors]
        if workload == "trivial":
            plan += [(f"tune:{variant}", "trivial") for variant in args.tune]
    try:
        for executor, workload in plan:
            waited = wait_until_quiet()
            print(f"{workload}, {executor}, {args.workers} workers ...", file=sys.stderr,
                  flush=True)
            if executor.startswith("tune:"):
                cell = run_tune_cell(executor.split(":", 1)[1], args, dbs)
            else:
                cell = run_tuner_cell(executor, workload, args, dbs)
            cell["waited_for_other_benchmarks_s"] = waited
            cells.append(cell)
            print(f"  {cell.get('complete', 0)} complete, wall {cell['wall_s']:.1f} s, "
                  f"first trial at {_num(cell.get('to_first_trial_s'), 2)} s, "
                  f"{_num(cell.get('trials_per_s'), 2)} trials/s, overhead "
                  f"{_num(cell.get('overhead_ms'))} ms/trial", file=sys.stderr, flush=True)
    finally:
        dbs.close()
    machine["load average after the run"] = load_average()
    machine["benchmark wall time"] = f"{time.perf_counter() - started:.0f} s"
    waited = sum(c["waited_for_other_benchmarks_s"] for c in cells)
    machine["waited for other benchmarks"] = f"{waited:.0f} s"
    text = markdown(machine, cells)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"machine": machine, "cpu_model": cpu_model(), "args": vars(args), "cells": cells,
             "markdown": text}, indent=2) + "\n")
        print(f"\nwrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
