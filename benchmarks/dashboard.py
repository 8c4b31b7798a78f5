"""How fast the dashboard answers and renders a study of 100,000 trials.

    .venv/bin/python benchmarks/dashboard.py
    .venv/bin/python benchmarks/dashboard.py --trials 2000 --repeat 5 --browser-loads 2
    .venv/bin/python benchmarks/dashboard.py --databases sqlite --json dashboard.json

For each database (SQLite in a temporary file; PostgreSQL: the `bench` database on
loopback, every table of which is DROPPED first, and at the end unless --keep):

  1. fill: one study created through `Storage.create_study` (random strategy, maximize
     val_accuracy, a 5-parameter space), a few workers registered, then the trials and
     their per-epoch rows inserted with SQLAlchemy Core, `executemany` in chunks of 5,000
     trials, one transaction a chunk. About 91 % COMPLETE, 6 % PRUNED, 3 % FAILED (with
     an error text), the newest 4 RUNNING and 16 QUEUED; 3-10 epochs a completed trial
     (3-5 pruned, 0-3 failed, 1-5 running), each with a value and a metrics dict; queued,
     started and finished times spread over the last day; value = the best epoch's. On
     PostgreSQL the tables are then VACUUM ANALYZEd (what autovacuum would do after such a
     load; this server runs with autovacuum off); `--no-vacuum` leaves them as inserted.
     SQLite gets no ANALYZE, as the tuner never runs one.
  2. the real dashboard (`python -m tuner.cli dashboard --storage URL --port P`) in a
     subprocess; every request below once as a warm-up, then `--repeat` rounds, each
     round every request once (interleaved, so a burst of load from elsewhere hits all
     of them alike), each on a new connection (http.client): time to first byte (the
     status line) and total (the whole body read). Median and p95 (nearest rank). The
     warm-up of the charts' data (`/api/studies/{id}/charts`) is its cold request:
     nothing cached yet, optuna not imported; it is reported alone. `--cold N` adds N
     fresh servers that each time one cold charts request.
  3. the rendered study page in headless Chromium (Playwright driving /usr/bin/chromium;
     never `playwright install`): from `page.goto` to the first row of the trials table
     in the DOM, to DOMContentLoaded (after plotly.min.js is parsed), and to every chart
     drawn (the `body[data-charts-drawn]` attribute dashboard.js sets after its
     Plotly.react calls). Each load in a fresh browser context (a first visit, nothing
     cached), then once more in that context (a repeat visit: plotly.min.js from the
     browser's cache). The same marks are also taken inside the page (performance.now(),
     from the start of the navigation, without Playwright's round trips), and each
     figure is drawn once more alone to see which chart costs what.
  4. where the time goes: the same requests in this process (the app from
     `create_app`, through Starlette's TestClient): the cold charts request first, then
     each request after a warm-up, with every SQL statement and the dashboard's data
     functions timed; statements over `--show-ms` are listed, and on PostgreSQL those
     over `--explain-ms` are run again under EXPLAIN (ANALYZE, BUFFERS) (SQLite:
     EXPLAIN QUERY PLAN).

Prints a Markdown table and, with --json, writes every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from databases import empty_database
from machine import load_average, machine_basics, postgres_settings

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # benchmark this working tree

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1/bench"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
CHUNK = 5000  # trials per INSERT transaction
STUDY = "dashboard-bench"
DAY = 86400.0
RUNNING, QUEUED = 4, 16  # the newest trials: still running, still queued
ERRORS = [
    "Traceback (most recent call last):\n  File \"workers/runner.py\", line 88, in run\n"
    "tensorflow.python.framework.errors_impl.ResourceExhaustedError: OOM when allocating "
    "tensor with shape[512,512] and type float",
    "Traceback (most recent call last):\n  File \"studies/model.py\", line 41, in build\n"
    "ValueError: Exception encountered when calling Dense.call(): the loss became NaN",
    "its worker stopped heartbeating; gave up after 3 attempts",
]


# -- filling ----------------------------------------------------------------------
def make_space() -> dict[str, Any]:
    from tuner.space import Choice, Float, Int, Space

    return Space(units=Int(16, 512, log=True), layers=Int(1, 4), dropout=Float(0.0, 0.5),
                 learning_rate=Float(1e-4, 1e-1, log=True),
                 activation=Choice(["relu", "tanh", "gelu"])).to_dict()


def fake_trial(rng: random.Random, number: int, n: int, t0: float, now: float,
               workers: list[int], live: list[int]) -> tuple[dict[str, Any], list[tuple]]:
    """One trial row and its epochs as (epoch, value, metrics)."""
    params = {
        "units": int(round(math.exp(rng.uniform(math.log(16), math.log(512))))),
        "layers": rng.randint(1, 4),
        "dropout": rng.uniform(0.0, 0.5),
        "learning_rate": math.exp(rng.uniform(math.log(1e-4), math.log(1e-1))),
        "activation": rng.choice(["relu", "tanh", "gelu"]),
    }
    if number >= n - QUEUED:
        state = "QUEUED"
    elif number >= n - QUEUED - RUNNING:
        state = "RUNNING"
    else:
        u = rng.random()
        state = "COMPLETE" if u < 0.91 else "PRUNED" if u < 0.97 else "FAILED"
    n_epochs = {"COMPLETE": rng.randint(3, 10), "PRUNED": rng.randint(3, 5),
                "FAILED": rng.randint(0, 3), "RUNNING": rng.randint(1, 5), "QUEUED": 0}[state]
    # A plateau that depends on the parameters (best near lr 3e-3, some dropout, wider),
    # approached epoch by epoch, with noise.
    lr_gap = (math.log10(params["learning_rate"]) + 2.5) ** 2
    plateau = (0.985 - 0.03 * lr_gap - 0.02 * abs(params["dropout"] - 0.2)
               - 0.01 * (math.log2(512) - math.log2(params["units"])) / 5
               + {"relu": 0.0, "tanh": -0.004, "gelu": 0.002}[params["activation"]]
               + rng.gauss(0, 0.01))
    tau = rng.uniform(0.8, 2.5)
    epochs = []
    for e in range(n_epochs):
        val = min(0.999, max(0.05, plateau * (1 - math.exp(-(e + 1) / tau))
                             + rng.gauss(0, 0.004)))
        acc = min(0.999, val + rng.uniform(0, 0.02))
        metrics = {"loss": -math.log(acc) + 0.01, "accuracy": acc,
                   "val_loss": -math.log(val) + rng.uniform(0, 0.03), "val_accuracy": val}
        epochs.append((e, val, metrics))
    # Trials are queued in order over the day; a few seconds' wait; 3-8 s an epoch.
    queued_at = t0 + DAY * number / n + rng.uniform(0, 5)
    started_at = finished_at = value = best_epoch = error = None
    worker_id = None
    if state != "QUEUED":
        started_at = queued_at + rng.uniform(0.1, 5)
        worker_id = live[(number - (n - QUEUED - RUNNING)) % len(live)] if state == "RUNNING" \
            else rng.choice(workers)
    if state in ("RUNNING", "QUEUED"):
        queued_at = min(queued_at, now - 60)
        if started_at is not None:
            started_at = now - rng.uniform(5, 50)
    else:
        finished_at = started_at + max(1, n_epochs) * rng.uniform(3, 8)
    if state in ("COMPLETE", "PRUNED") and epochs:
        best = max(epochs, key=lambda ep: ep[1])
        value, best_epoch = best[1], best[0]
    if state == "FAILED":
        error = rng.choice(ERRORS)
    row = {"study_id": None, "number": number, "state": state, "params": params,
           "value": value, "best_epoch": best_epoch, "epochs": n_epochs,
           "retries": 1 if rng.random() < 0.01 else 0, "worker_id": worker_id, "error": error,
           "attrs": None, "queued_at": queued_at, "started_at": started_at,
           "finished_at": finished_at}
    return row, epochs


def fill(url: str, n: int, *, vacuum: bool, seed: int = 0) -> dict[str, Any]:
    """One study of `n` trials with their epochs; returns the study id and timings."""
    from tuner.storage import Storage
    from tuner.storage.models import EPOCHS, TRIALS

    t_start = time.perf_counter()
    storage = Storage(url)
    t_schema = time.perf_counter()
    study = storage.create_study(STUDY, metric="val_accuracy", direction="maximize",
                                 strategy="random", seed=seed, space=make_space(),
                                 settings={"source": "benchmarks/dashboard.py"})
    workers = [storage.register_worker(host=f"gpu-node-{i // 2}", pid=4000 + i,
                                       device=f"gpu:{i % 2}", study_id=study.id)
               for i in range(6)]
    for stopped in workers[4:]:
        storage.stop_worker(stopped)
    live = workers[:RUNNING]
    now = storage.now()
    t0 = now - DAY
    rng = random.Random(seed)
    rows = epoch_rows = 0
    next_id = 1
    for start in range(0, n, CHUNK):
        trial_rows, epoch_batch = [], []
        for number in range(start, min(n, start + CHUNK)):
            row, eps = fake_trial(rng, number, n, t0, now, workers, live)
            row.update(id=next_id, study_id=study.id)
            trial_rows.append(row)
            epoch_batch += [{"trial_id": next_id, "epoch": e, "value": v, "metrics": m}
                            for e, v, m in eps]
            next_id += 1
        with storage.engine.begin() as conn:
            conn.execute(TRIALS.insert(), trial_rows)
            if epoch_batch:
                conn.execute(EPOCHS.insert(), epoch_batch)
        rows += len(trial_rows)
        epoch_rows += len(epoch_batch)
    t_insert = time.perf_counter()
    if storage.engine.dialect.name == "postgresql":
        with storage.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            # Explicit ids do not advance the sequence: put it past them.
            conn.exec_driver_sql("SELECT setval(pg_get_serial_sequence('trials', 'id'), "
                                 "(SELECT max(id) FROM trials))")
            if vacuum:
                conn.exec_driver_sql("VACUUM ANALYZE")
    t_end = time.perf_counter()
    storage.dispose()
    return {"study_id": study.id, "trials": rows, "epoch_rows": epoch_rows,
            "workers": len(workers), "schema_s": t_schema - t_start,
            "insert_s": t_insert - t_schema, "vacuum_s": t_end - t_insert,
            "fill_s": t_end - t_start}


# -- the dashboard process --------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Dashboard:
    """`python -m tuner.cli dashboard` in a subprocess, on a free loopback port."""

    def __init__(self, url: str, log_dir: str) -> None:
        self.url = url
        self.port = free_port()
        self.log = open(Path(log_dir) / f"dashboard-{self.port}.log", "w")  # noqa: SIM115
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Dashboard:
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tuner.cli", "dashboard", "--storage", self.url,
             "--port", str(self.port)], cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the dashboard exited with {self.proc.returncode}: see "
                                   f"{self.log.name}")
            try:
                status, _, _, _ = get(self.port, "/api/workers")
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the dashboard did not answer in 90 s: see {self.log.name}")
            time.sleep(0.05)
        self.start_s = time.perf_counter() - t0
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def get(port: int, path: str, timeout: float = 120) -> tuple[int, float, float, int]:
    """One GET on a new connection: status, seconds to the status line, to the whole
    body, and the body's size."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()  # returns once the status line and headers are in
        ttfb = time.perf_counter() - t0
        body = response.read()
        total = time.perf_counter() - t0
    finally:
        conn.close()
    return response.status, ttfb, total, len(body)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summary(values: list[float]) -> dict[str, float]:
    return {"median_ms": statistics.median(values) * 1000, "p95_ms": pct(values, 0.95) * 1000,
            "min_ms": min(values) * 1000, "max_ms": max(values) * 1000, "n": len(values)}


def requests_for(study_id: int) -> list[tuple[str, str]]:
    s = f"/studies/{study_id}"
    flt = urllib.parse.urlencode({"state": "COMPLETE", "filter": "units >= 64, activation = relu"})
    return [
        ("study page (first page, best first)", s),
        ("study page sorted by units asc", f"{s}?sort=units&order=asc"),
        ("study page filtered (COMPLETE, units >= 64, relu)", f"{s}?{flt}"),
        ("study page, page 1000", f"{s}?page=1000"),
        ("API trials, first page", f"/api/studies/{study_id}/trials"),
        ("API version (polled every 2 s)", f"/api/studies/{study_id}/version"),
        ("studies list /", "/"),
        ("API charts, cached", f"/api/studies/{study_id}/charts"),
    ]


def measure_http(port: int, study_id: int, repeat: int) -> dict[str, Any]:
    reqs = requests_for(study_id)
    out: dict[str, Any] = {name: {"path": path, "ttfb": [], "total": []} for name, path in reqs}
    for name, path in reqs:  # warm-up: the first request of each (charts: the cold one)
        status, ttfb, total, size = get(port, path)
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status}")
        out[name].update(first_ms=total * 1000, bytes=size)
    for _ in range(repeat):
        for name, path in reqs:
            status, ttfb, total, _ = get(port, path)
            if status != 200:
                raise RuntimeError(f"GET {path}: HTTP {status}")
            out[name]["ttfb"].append(ttfb)
            out[name]["total"].append(total)
    for entry in out.values():
        entry["ttfb"] = summary(entry.pop("ttfb"))
        entry["total"] = summary(entry.pop("total"))
    return out


def cold_charts(url: str, study_id: int, times: int, log_dir: str) -> list[dict[str, float]]:
    results = []
    for _ in range(times):
        with Dashboard(url, log_dir) as dash:
            status, ttfb, total, size = get(dash.port, f"/api/studies/{study_id}/charts")
            if status != 200:
                raise RuntimeError(f"charts: HTTP {status}")
            again = get(dash.port, f"/api/studies/{study_id}/charts")
            results.append({"cold_ms": total * 1000, "second_ms": again[2] * 1000,
                            "bytes": size, "server_start_s": dash.start_s})
    return results


# -- the browser --------------------------------------------------------------------
# Marks taken inside the page, in ms since the navigation started (performance.now()):
# when the first row of the trials table is in the DOM, DOMContentLoaded, charts drawn.
MARKS_JS = """(() => {
  const marks = window.__benchMarks = {};
  const check = () => {
    if (marks.table === undefined && document.querySelector("#trials tbody tr"))
      marks.table = performance.now();
    if (marks.charts === undefined && document.body
        && document.body.hasAttribute("data-charts-drawn"))
      marks.charts = performance.now();
  };
  new MutationObserver(check).observe(document, {subtree: true, childList: true,
    attributes: true, attributeFilter: ["data-charts-drawn"]});
  document.addEventListener("DOMContentLoaded", () => { marks.dcl = performance.now(); check(); });
})();"""
# Each figure of the charts request drawn once more with Plotly.newPlot, timed alone.
DRAW_JS = """async () => {
  const figures = await (await fetch(document.body.dataset.chartsUrl)).json();
  const out = {};
  for (const [id, figure] of Object.entries(figures)) {
    const div = document.createElement("div");
    div.style.width = "640px";
    document.body.appendChild(div);
    const t0 = performance.now();
    await Plotly.newPlot(div, figure.data, figure.layout, {displaylogo: false});
    await new Promise(requestAnimationFrame);
    out[id] = performance.now() - t0;
    Plotly.purge(div);
    div.remove();
  }
  return out;
}"""
BROWSER_KEYS = ("table", "dcl", "charts")


def measure_browser(port: int, study_id: int, loads: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    url = f"http://127.0.0.1:{port}/studies/{study_id}"
    walls: dict[str, dict[str, list[float]]] = {v: {k: [] for k in BROWSER_KEYS}
                                                for v in ("first_visit", "repeat_visit")}
    inpage: dict[str, dict[str, list[float]]] = {
        v: {k: [] for k in ("response", "paint", *BROWSER_KEYS)}
        for v in ("first_visit", "repeat_visit")}

    def load(page: Any, visit: str) -> None:
        into = walls[visit]
        t0 = time.perf_counter()
        page.goto(url, wait_until="commit", timeout=120_000)
        page.wait_for_selector("#trials tbody tr", state="attached", timeout=120_000)
        into["table"].append(time.perf_counter() - t0)
        page.wait_for_load_state("domcontentloaded", timeout=120_000)
        into["dcl"].append(time.perf_counter() - t0)
        page.wait_for_selector("body[data-charts-drawn]", state="attached", timeout=120_000)
        into["charts"].append(time.perf_counter() - t0)
        marks = page.evaluate(
            "() => ({...window.__benchMarks,"
            " response: performance.getEntriesByType('navigation')[0].responseEnd,"
            " paint: (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime})")
        for key, value in marks.items():
            if key in inpage[visit] and value is not None:
                inpage[visit][key].append(value / 1000)

    draws: list[dict[str, float]] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            version = browser.version
            for _ in range(loads):
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                context.add_init_script(MARKS_JS)
                page = context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
                load(page, "first_visit")
                load(page, "repeat_visit")
                draws.append(page.evaluate(DRAW_JS))
                context.close()
                if errors:
                    raise RuntimeError(f"errors in the page: {errors}")
        finally:
            browser.close()
    return {"chromium": version,
            **{visit: {k: summary(v) for k, v in walls[visit].items()} for visit in walls},
            "in_page": {visit: {k: summary(v) for k, v in marks.items() if v}
                        for visit, marks in inpage.items()},
            "draw_ms": {chart: statistics.median(d[chart] for d in draws) for chart in draws[0]}
            if draws else {}}


# -- where the time goes ------------------------------------------------------------
def profile_statements(url: str, study_id: int, show_ms: float,
                       explain_ms: float) -> list[dict[str, Any]]:
    """Each request once more in this process, with every SQL statement timed around the
    driver's execute (psycopg: the whole result; sqlite3: up to the first row, which for
    a sorted or aggregated query is nearly all of it); the slow ones explained."""
    from sqlalchemy import event
    from starlette.testclient import TestClient

    from tuner.dashboard.app import create_app
    from tuner.storage import Storage

    storage = Storage(url)
    app = create_app(storage)
    log: list[dict[str, Any]] = []

    @event.listens_for(storage.engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> None:
        conn.info["t0"] = time.perf_counter()

    @event.listens_for(storage.engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
               executemany: bool) -> None:
        log.append({"statement": statement, "parameters": parameters,
                    "ms": (time.perf_counter() - conn.info.pop("t0")) * 1000})

    # The charts' parts, timed where app.py calls them (as data.<name>, at call time).
    from tuner.dashboard import data

    parts: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                parts[name] = parts.get(name, 0.0) + (time.perf_counter() - t0) * 1000
        return wrapper

    originals = {n: getattr(data, n) for n in ("history", "curves", "parallel", "importance",
                                                "version", "trial_page", "studies")}
    for n, fn in originals.items():
        setattr(data, n, timed(n, fn))
    charts_path = f"/api/studies/{study_id}/charts"
    out = []
    try:
        with TestClient(app) as client:
            for name, path in [("API charts, cold", charts_path), *requests_for(study_id)]:
                if path != charts_path:
                    client.get(path)  # warm-up (the charts: warm from the cold call above)
                log.clear()
                parts.clear()
                t0 = time.perf_counter()
                response = client.get(path)
                elapsed = (time.perf_counter() - t0) * 1000
                assert response.status_code == 200, (path, response.status_code)
                statements = [s for s in log if not s["statement"].startswith("select pg_")]
                sql_ms = sum(s["ms"] for s in statements)
                slow = []
                for s in statements:
                    if s["ms"] < show_ms:
                        continue
                    entry = {"ms": s["ms"], "sql": " ".join(s["statement"].split()),
                             "parameters": _jsonable(s["parameters"])}
                    if s["ms"] >= explain_ms or storage.engine.dialect.name == "sqlite":
                        entry["plan"] = explain(storage, s["statement"], s["parameters"])
                    slow.append(entry)
                out.append({"request": name, "path": path, "in_process_ms": elapsed,
                            "statements": len(statements), "sql_ms": sql_ms,
                            "data_functions_ms": dict(parts), "slow": slow})
    finally:
        for n, fn in originals.items():
            setattr(data, n, fn)
        storage.dispose()
    return out


def _jsonable(parameters: Any) -> Any:
    if isinstance(parameters, dict):
        return {k: v if isinstance(v, (int, float, str, type(None))) else str(v)
                for k, v in parameters.items()}
    return [v if isinstance(v, (int, float, str, type(None))) else str(v) for v in parameters]


def explain(storage: Any, statement: str, parameters: Any) -> str:
    sqlite = storage.engine.dialect.name == "sqlite"
    prefix = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN (ANALYZE, BUFFERS) "
    try:
        with storage.engine.connect() as conn:
            rows = conn.exec_driver_sql(prefix + statement, parameters).all()
    except Exception as exc:  # a plan is a diagnostic: the figures matter more
        return f"(could not explain: {exc})"
    if sqlite:
        return "\n".join(f"{r[0]} {r[1]} {r[-1]}" for r in rows)
    return "\n".join(r[0] for r in rows)


# -- the report ---------------------------------------------------------------------
def describe_machine(pg_url: str | None) -> dict[str, str]:
    import sqlalchemy as sa

    machine = {
        **machine_basics(),
        "memory": _memory(),
        "sqlalchemy": sa.__version__,
        "sqlite": sqlite3.sqlite_version,
    }
    if pg_url:
        version, settings = postgres_settings(
            pg_url, ("autovacuum", "shared_buffers", "work_mem", "jit"))
        machine["postgresql"] = f"{version} on loopback, " + ", ".join(
            f"{k} {v}" for k, v in settings.items())
    return machine


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) / 2**20:.0f} GiB"
    except OSError:
        pass
    return "?"


def _cell(s: dict[str, float] | None) -> str:
    if not s:
        return "-"
    return f"{s['median_ms']:,.0f} ({s['p95_ms']:,.0f})"


def markdown(machine: dict[str, str], results: dict[str, dict[str, Any]]) -> str:
    dbs = list(results)
    names = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
    lines = ["## Dashboard", ""]
    lines += [f"- **{k}**: {v}" for k, v in machine.items()]
    lines += [""]
    for db in dbs:
        f = results[db]["fill"]
        lines.append(f"- fill {names[db]}: {f['trials']:,} trials, {f['epoch_rows']:,} epoch "
                     f"rows in {f['fill_s']:.1f} s (inserts {f['insert_s']:.1f} s, "
                     f"vacuum {f['vacuum_s']:.1f} s)")
    lines += ["", "Median (p95) in ms; HTTP over " + ", ".join(
        f"{results[db]['repeat']} rounds on {names[db]}" for db in dbs) + ".", ""]
    head = "| request |" + "".join(f" {names[db]} TTFB | {names[db]} total |" for db in dbs)
    lines += [head + " size |", "|---|" + "---:|---:|" * len(dbs) + "---:|"]

    def row(label: str, cells: list[str], size: str = "") -> None:
        lines.append(f"| {label} |" + "".join(f" {c} |" for c in cells) + f" {size} |")

    first_db = results[dbs[0]]["http"]
    for name in first_db:
        cells = []
        for db in dbs:
            entry = results[db]["http"][name]
            cells += [_cell(entry["ttfb"]), _cell(entry["total"])]
        row(name, cells, f"{first_db[name]['bytes'] / 1024:,.0f} KiB")
    cells = []
    for db in dbs:
        cells += ["", f"{results[db]['http']['API charts, cached']['first_ms']:,.0f}"]
    row("API charts, cold (the first request to the server)", cells)
    if any(results[db]["cold_charts"] for db in dbs):
        cells = []
        for db in dbs:
            cold = [c["cold_ms"] for c in results[db]["cold_charts"]]
            cells += ["", f"{statistics.median(cold):,.0f} (n={len(cold)})" if cold else "-"]
        row("API charts, cold (fresh servers)", cells)
    labels = {"response": "HTML received", "table": "trials table in the DOM",
              "paint": "first contentful paint", "dcl": "DOMContentLoaded",
              "charts": "all charts drawn"}
    browsed = [db for db in dbs if results[db].get("browser")]
    if browsed:
        loads = ", ".join(f"{results[db]['browser']['first_visit']['charts']['n']} loads on "
                          f"{names[db]}" for db in browsed)
        lines += ["", f"Chromium, median (p95) in ms over {loads}: in the page "
                  "(performance.now() from the start of the navigation) and from "
                  "Playwright's `page.goto` (its round trips included).", "",
                  "| study page in Chromium |" + "".join(
                      f" {names[db]} in page | {names[db]} from goto |" for db in browsed),
                  "|---|" + "---:|---:|" * len(browsed)]
        for visit in ("first_visit", "repeat_visit"):
            for key, label in labels.items():
                cells = []
                for db in browsed:
                    b = results[db]["browser"]
                    cells += [_cell(b["in_page"][visit].get(key)), _cell(b[visit].get(key))]
                lines.append(f"| {visit.replace('_', ' ')}: {label} |"
                             + "".join(f" {c} |" for c in cells))
    if any(results[db].get("browser") for db in dbs):
        lines += ["", "Each chart drawn alone in the page (Plotly.newPlot, median ms): "
                  + "; ".join(
            f"{names[db]} " + ", ".join(f"{k} {v:,.0f}" for k, v in
                                        results[db]["browser"]["draw_ms"].items())
            for db in dbs if results[db].get("browser"))]
    for db in dbs:
        cold = next((p for p in results[db].get("profile", [])
                     if p["request"] == "API charts, cold"), None)
        if cold:
            lines += ["", f"{names[db]}, cold charts in process: {cold['in_process_ms']:,.0f} ms, "
                      f"of which SQL {cold['sql_ms']:,.0f} ms; " + ", ".join(
                          f"{k} {v:,.0f} ms" for k, v in cold["data_functions_ms"].items())]
    slow = [(db, p) for db in dbs for p in results[db].get("profile", []) if p["slow"]]
    if slow:
        lines += ["", "SQL statements over the threshold (in process):", ""]
        for db, p in slow:
            for s in p["slow"]:
                lines.append(f"- {names[db]}, {p['request']}: {s['ms']:.0f} ms — "
                             f"`{s['sql'][:240]}`")
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------
@contextlib.contextmanager
def database(db: str, pg_url: str, tmpdir: str, keep: bool) -> Iterator[str]:
    if db == "sqlite":
        yield f"sqlite:///{tmpdir}/dashboard.db"
        return
    empty_database(pg_url)
    try:
        yield pg_url
    finally:
        if not keep:
            empty_database(pg_url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--databases", default="sqlite,postgresql",
                        help="comma-separated: sqlite, postgresql (default both)")
    parser.add_argument("--postgresql", metavar="URL", default=DEFAULT_PG,
                        help=f"EMPTIED (every table dropped) first (default {DEFAULT_PG})")
    parser.add_argument("--repeat", type=int, default=20, help="timed rounds (default 20)")
    parser.add_argument("--cold", type=int, default=0,
                        help="extra fresh servers, each timing one cold charts request "
                             "(default 0: the measured server's first one is reported)")
    parser.add_argument("--browser-loads", type=int, default=5,
                        help="page loads in Chromium, each a fresh context (default 5; 0 skips)")
    parser.add_argument("--show-ms", type=float, default=20.0,
                        help="list SQL statements slower than this (default 20)")
    parser.add_argument("--explain-ms", type=float, default=100.0,
                        help="EXPLAIN ANALYZE PostgreSQL statements slower than this (default 100)")
    parser.add_argument("--no-vacuum", action="store_true",
                        help="no VACUUM ANALYZE after filling PostgreSQL")
    parser.add_argument("--keep", action="store_true",
                        help="leave the PostgreSQL tables filled at the end")
    parser.add_argument("--json", metavar="OUT", help="also write every figure here")
    args = parser.parse_args(argv)
    dbs = [d.strip() for d in args.databases.split(",") if d.strip()]
    if not dbs or any(d not in ("sqlite", "postgresql") for d in dbs):
        parser.error("--databases: sqlite, postgresql or both")

    machine = describe_machine(args.postgresql if "postgresql" in dbs else None)
    tmpdir = tempfile.mkdtemp(prefix="dashboard-bench-")
    results: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    try:
        for db in dbs:
            with database(db, args.postgresql, tmpdir, args.keep) as url:
                say(f"{db}: filling {args.trials:,} trials ...")
                filled = fill(url, args.trials, vacuum=not args.no_vacuum)
                say(f"  {filled['trials']:,} trials, {filled['epoch_rows']:,} epoch rows in "
                    f"{filled['fill_s']:.1f} s")
                sid = filled["study_id"]
                result: dict[str, Any] = {"fill": filled, "repeat": args.repeat,
                                          "vacuum": db == "postgresql" and not args.no_vacuum}
                if args.cold:
                    say(f"{db}: cold charts x{args.cold} ...")
                result["cold_charts"] = cold_charts(url, sid, args.cold, tmpdir)
                if args.cold:
                    say("  " + ", ".join(f"{c['cold_ms']:,.0f} ms"
                                         for c in result["cold_charts"]))
                with Dashboard(url, tmpdir) as dash:
                    say(f"{db}: HTTP, {args.repeat} rounds ...")
                    result["http"] = measure_http(dash.port, sid, args.repeat)
                    for name, e in result["http"].items():
                        say(f"  {name}: ttfb {_cell(e['ttfb'])}, total {_cell(e['total'])} ms"
                            f" (first {e['first_ms']:,.0f} ms)")
                    if args.browser_loads:
                        say(f"{db}: Chromium, {args.browser_loads} loads ...")
                        result["browser"] = measure_browser(dash.port, sid, args.browser_loads)
                        for visit in ("first_visit", "repeat_visit"):
                            say(f"  {visit}: " + ", ".join(
                                f"{k} {_cell(v)}" for k, v in result["browser"][visit].items()))
                        say(f"  draw: {result['browser']['draw_ms']}")
                say(f"{db}: statements ...")
                result["profile"] = profile_statements(url, sid, args.show_ms, args.explain_ms)
                for p in result["profile"]:
                    say(f"  {p['request']}: {p['in_process_ms']:.0f} ms in process, "
                        f"{p['statements']} statements, {p['sql_ms']:.0f} ms SQL, "
                        + ", ".join(f"{k} {v:.0f}" for k, v in p["data_functions_ms"].items()))
                results[db] = result
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    machine["load average after the run"] = load_average()
    machine["benchmark wall time"] = f"{time.perf_counter() - started:.0f} s"
    table = markdown(machine, results)
    print(table)
    for db, result in results.items():
        for p in result.get("profile", []):
            for s in p["slow"]:
                if "plan" in s:
                    print(f"\n{db}, {p['request']} ({s['ms']:.0f} ms):\n{s['sql']}\n"
                          f"{s['parameters']}\n{s['plan']}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"machine": machine, "args": vars(args), "results": results, "markdown": table},
            indent=2) + "\n")
        say(f"wrote {args.json}")
    return 0


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
