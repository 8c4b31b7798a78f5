"""The dashboard end to end, in a real browser: the `tuner dashboard` command serves the
showcase database, headless Chromium (Debian's, driven by Playwright) reads its pages,
clicks its links and forms, and watches a study update itself while a trial runs.
Screenshots of every kind of page go to $TUNER_SCREENSHOTS (or a temporary folder)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import (
    ROOT,
    SHOWCASE_NAMES,
    TRADEOFF,
    TRADEOFF_FRONT,
    TRADEOFF_INFEASIBLE,
    cli_env,
    objective_study,
    run_cli,
)
from tuner.display import fmt
from tuner.states import TrialState
from tuner.storage import Storage

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
TOKEN = "secret-0123456789abcdef"
ALLOWED_HOST = "tuner.example.org"  # the main server's --allowed-host
TIMEOUT_MS = 20_000
STUDY_CHARTS = ("history-trials", "history-time", "curves", "importance", "parallel")

# What a Plotly chart drew: its SVG layers, traces, lines with a path, markers, bars,
# WebGL canvases (scattergl, parcoords), parcoords axes, and all its text.
CHART_JS = """el => ({
  svgs: el.querySelectorAll("svg.main-svg").length,
  width: Math.max(0, ...[...el.querySelectorAll("svg.main-svg")]
    .map(s => s.getBoundingClientRect().width)),
  traces: el.querySelectorAll("g.trace").length,
  lines: [...el.querySelectorAll("g.trace path.js-line")]
    .filter(p => (p.getAttribute("d") || "").length > 3).length,
  points: el.querySelectorAll("g.trace path.point").length,
  bars: [...el.querySelectorAll("g.trace.bars g.point path")]
    .filter(p => (p.getAttribute("d") || "").length > 3).length,
  canvases: [...el.querySelectorAll("canvas")].filter(c => c.width > 0 && c.height > 0).length,
  axes: el.querySelectorAll("g.parcoords g.y-axis").length,
  text: el.textContent,
})"""
ROWS_JS = "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))"


# -- servers ------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dashboard_env() -> dict[str, str]:
    env = cli_env()
    env.pop("TUNER_DASHBOARD_TOKEN", None)
    return env


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Server:
    """`tuner dashboard` in its own process, as a user starts it."""

    def __init__(self, storage_url: str, logs: Path, *extra: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = logs / f"dashboard-{self.port}.log"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tuner.cli", "dashboard", "--storage", storage_url,
                 "--host", "127.0.0.1", "--port", str(self.port), *extra],
                cwd=ROOT, env=dashboard_env(), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the dashboard exited ({self.proc.returncode}):\n"
                            f"{self.log.read_text()}")
            try:
                urllib.request.urlopen(f"{self.base}/api/openapi.json", timeout=2).close()
                return
            except urllib.error.HTTPError:  # 401 without the token: it answers
                return
            except OSError:
                time.sleep(0.2)
        pytest.fail(f"the dashboard did not answer in {timeout} s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def copy_sqlite(url: str, folder: Path) -> str:
    """A consistent copy of a SQLite database (through SQLite's backup, WAL or not)."""
    source = sqlite3.connect(url.removeprefix("sqlite:///"))
    target_path = folder / "live.db"
    target = sqlite3.connect(target_path)
    with target:
        source.backup(target)
    source.close()
    target.close()
    return f"sqlite:///{target_path}"


@pytest.fixture(scope="module")
def servers(showcase: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Three dashboards started together: the showcase, the showcase behind a token, and a
    copy of the showcase that the live-update test writes to."""
    folder = tmp_path_factory.mktemp("dashboards")
    live_url = copy_sqlite(showcase, folder)
    started = {"main": Server(showcase, folder, "--allowed-host", ALLOWED_HOST),
               "token": Server(showcase, folder, "--token", TOKEN),
               "live": Server(live_url, folder)}
    try:
        for server in started.values():
            server.wait_ready()
        # A server's first charts import Optuna and run fANOVA (seconds): warm all at once.
        storage = Storage(showcase)
        ids = [storage.get_study(name).id for name in SHOWCASE_NAMES.values()]
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        warming = [threading.Thread(target=get, args=(f"{server.base}/api/studies/{i}/charts",
                                                      bearer if name == "token" else None))
                   for name, server in started.items() for i in ids]
        for thread in warming:
            thread.start()
        for thread in warming:
            thread.join()
        yield {**{name: s.base for name, s in started.items()}, "live_url": live_url}
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def base(servers: dict[str, Any]) -> str:
    return servers["main"]


# -- the browser ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                             headless=True)
        yield browser
        browser.close()


class Problems(list):
    """JavaScript errors and failed loads a page reported."""

    def watch(self, page: Page) -> Page:
        page.set_default_timeout(TIMEOUT_MS)
        page.on("pageerror", lambda exc: self.append(f"uncaught: {exc}"))
        page.on("console", lambda msg: msg.type == "error" and self.append(
            f"console: {msg.text} at {msg.location.get('url')}"))
        return page


@pytest.fixture(scope="module")
def problems() -> Problems:
    return Problems()


@pytest.fixture(scope="module")
def page(browser: Browser, problems: Problems) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    yield problems.watch(context.new_page())
    context.close()


@pytest.fixture(autouse=True)
def no_script_errors(problems: Problems) -> Iterator[None]:
    problems.clear()
    yield
    assert list(problems) == [], problems


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("TUNER_SCREENSHOTS")
    if folder:
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("screenshots")


def screenshot(page: Page, shots: Path, name: str) -> Path:
    path = shots / f"{name}.png"
    path.unlink(missing_ok=True)
    page.screenshot(path=str(path), full_page=True)
    assert path.is_file() and path.stat().st_size > 10_000, (path, path.stat().st_size)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


@pytest.fixture(scope="module")
def storage(showcase: str) -> Storage:
    return Storage(showcase)


@pytest.fixture(scope="module")
def ids(storage: Storage) -> dict[str, int]:
    return {key: storage.get_study(name).id for key, name in SHOWCASE_NAMES.items()}


def charts_drawn(page: Page) -> int:
    return int(page.evaluate("Number(document.body.dataset.chartsDrawn || 0)"))


def wait_charts(page: Page, at_least: int = 1) -> None:
    page.wait_for_function(f"Number(document.body.dataset.chartsDrawn || 0) >= {at_least}")


def chart(page: Page, chart_id: str) -> dict[str, Any]:
    return page.locator(f"#chart-{chart_id}").evaluate(CHART_JS)


def table(page: Page, selector: str) -> list[list[str]]:
    return page.eval_on_selector_all(f"{selector} tbody tr", ROWS_JS)


def submit(page: Page, *, state: str | None = None, text: str | None = None) -> int:
    """Fill the trials filter form and apply it; the page's HTTP status."""
    form = page.locator("#filters")
    if state is not None:
        form.locator("select[name=state]").select_option(state)
    if text is not None:
        form.locator("input[name=filter]").fill(text)
    with page.expect_navigation() as navigation:
        form.locator("button[type=submit]").click()
    return navigation.value.status


def click_and_wait(page: Page, selector: str) -> int:
    with page.expect_navigation() as navigation:
        page.locator(selector).click()
    return navigation.value.status


# -- the pages ------------------------------------------------------------------------------

def test_studies_list_agrees_with_the_storage_and_escapes_names(page, base, storage, ids,
                                                               shots):
    response = page.goto(base + "/")
    assert response.status == 200
    rows = {r[0]: r for r in table(page, "table#studies")}
    summaries = storage.list_studies()
    assert sorted(rows) == sorted(s.study.name for s in summaries)
    assert len(rows) == 3
    header = page.eval_on_selector_all("table#studies thead th", "ths => ths.map(t => t.innerText)")
    states = [s.value.lower() for s in TrialState]
    for summary in summaries:
        row = dict(zip(header, rows[summary.study.name], strict=True))
        counts = {s: int(row[s.value.lower()]) for s in TrialState}
        assert counts == {s: summary.counts.get(s, 0) for s in TrialState}, row
        assert sum(counts.values()) == len(storage.trials(summary.study.id))
        assert summary.best_value is not None
        assert float(row["best"]) == pytest.approx(summary.best_value, rel=1e-3)
        assert row["strategy"] == summary.study.strategy
        assert all(s in header for s in states)

    faults = page.locator("table#studies a", has_text="faults")
    assert faults.count() == 1
    assert faults.inner_text() == SHOWCASE_NAMES["faults"] == '<b>faults</b> & "co"'
    assert faults.get_attribute("href") == f"/studies/{ids['faults']}"
    assert page.locator("table#studies b").count() == 0  # shown, not interpreted
    assert page.locator("#live").get_attribute("class") == "live"
    screenshot(page, shots, "studies")


def test_study_page_draws_every_chart_and_lists_its_trials(page, base, storage, ids, shots):
    page.goto(base + "/")
    assert click_and_wait(page, "table#studies a:text-is('learners')") == 200
    assert page.url == f"{base}/studies/{ids['learners']}"
    wait_charts(page)
    trials = storage.trials(ids["learners"])
    assert len(trials) == 8 and {t.state for t in trials} == {TrialState.COMPLETE,
                                                               TrialState.PRUNED}
    assert page.locator("h1").inner_text() == "learners"

    drawn = {name: chart(page, name) for name in STUDY_CHARTS}
    for name, seen in drawn.items():
        assert seen["svgs"] >= 1 and seen["width"] > 300, (name, seen)
    for name in ("history-trials", "history-time"):  # WebGL markers, an SVG best-so-far line
        assert drawn[name]["canvases"] >= 1 and drawn[name]["lines"] >= 1, drawn[name]
        assert "val_accuracy" in drawn[name]["text"]
    # one learning curve per trial that reported epochs, a marker per epoch
    assert drawn["curves"]["traces"] == len(trials)
    assert drawn["curves"]["points"] == sum(t.epochs for t in trials)
    assert drawn["curves"]["lines"] >= 4
    # the complete trials all scored the same: no importance, and the chart says why
    assert drawn["importance"]["bars"] == 0
    assert "not yet known" in drawn["importance"]["text"]
    # lr, rep and the metric, drawn in WebGL with an SVG axis each
    assert drawn["parallel"]["axes"] == 3 and drawn["parallel"]["canvases"] >= 1
    assert page.locator("#chart-lineage").count() == 0
    assert page.locator("#schedule").count() == 0

    rows = table(page, "table#trials")
    assert len(rows) == len(trials)
    assert page.locator("#trial-count").inner_text().startswith(f"{len(trials)} trials ")
    summary = {dt: dd for dt, dd in zip(page.locator("dl.summary dt").all_inner_texts(),
                                        page.locator("dl.summary dd").all_inner_texts(),
                                        strict=True)}
    assert summary["complete"] == "4" and summary["pruned"] == "4" and summary["failed"] == "0"
    assert summary["best"] == fmt(max(t.value for t in trials if t.state == TrialState.COMPLETE))
    # by default the best values come first (maximize), ties by number
    best_first = sorted(trials, key=lambda t: (-t.value, t.number))
    assert [int(r[0]) for r in rows] == [t.number for t in best_first]
    screenshot(page, shots, "study")

    # sorting by the metric: clicked once, lowest first; again, highest first
    link = "table#trials a.sort[data-sort=value]"
    assert click_and_wait(page, link) == 200
    assert "order=asc" in page.url
    assert page.locator(link).get_attribute("class").split() == ["sort", "active", "asc"]
    rows = table(page, "table#trials")
    values = [float(r[2]) for r in rows]
    assert values == sorted(values) and values[0] < values[-1]
    assert [int(r[0]) for r in rows] == [t.number for t in sorted(
        trials, key=lambda t: (t.value, t.number))]

    assert click_and_wait(page, link) == 200
    assert "order=desc" in page.url
    assert page.locator(link).get_attribute("class").split() == ["sort", "active", "desc"]
    rows = table(page, "table#trials")
    values = [float(r[2]) for r in rows]
    assert values == sorted(values, reverse=True) and values[0] > values[-1]
    assert [int(r[0]) for r in rows] == [t.number for t in best_first]


def test_filtering_by_state_and_by_conditions(page, base, storage, ids):
    page.goto(f"{base}/studies/{ids['learners']}")
    trials = storage.trials(ids["learners"])
    pruned = storage.trials(ids["learners"], states=[TrialState.PRUNED])
    assert 0 < len(pruned) < len(trials)

    assert submit(page, state="PRUNED") == 200
    assert "state=PRUNED" in page.url
    rows = table(page, "table#trials")
    assert sorted(int(r[0]) for r in rows) == [t.number for t in pruned]
    assert {r[1] for r in rows} == {"pruned"}
    assert page.locator("table#trials tbody tr:not(.pruned)").count() == 0
    assert page.locator("#trial-count").inner_text().startswith(f"{len(pruned)} trials match")
    assert page.locator("#filters select[name=state]").input_value() == "PRUNED"

    assert submit(page, state="", text="rep >= 2") == 200
    expected = sorted(t.number for t in trials if t.params["rep"] >= 2)
    rows = table(page, "table#trials")
    assert sorted(int(r[0]) for r in rows) == expected and len(expected) < len(trials)
    assert page.locator("#trial-count").inner_text().startswith(f"{len(expected)} trials match")
    assert page.locator("#filters input[name=filter]").input_value() == "rep >= 2"
    # sorting by a parameter (largest first, ties by number) keeps the filter
    assert click_and_wait(page, "table#trials a.sort[data-sort=rep]") == 200
    assert page.locator("#filters input[name=filter]").input_value() == "rep >= 2"
    by_rep = sorted((t for t in trials if t.params["rep"] >= 2),
                    key=lambda t: (-t.params["rep"], t.number))
    assert [int(r[0]) for r in table(page, "table#trials")] == [t.number for t in by_rep]

    assert submit(page, text="nope > 1") == 200  # shown to the user, not a server error
    error = page.locator("#table-error")
    assert error.is_visible()
    assert "no column or parameter named 'nope'" in error.inner_text()
    assert page.locator("table#trials").count() == 0
    assert page.locator("h1").inner_text() == "learners"
    wait_charts(page)  # the rest of the page still works
    assert chart(page, "curves")["traces"] == len(trials)


def test_trial_page_from_the_table(page, base, storage, ids, shots):
    page.goto(f"{base}/studies/{ids['learners']}")
    trial = storage.trials(ids["learners"], numbers=[0])[0]
    stored = storage.epochs([trial.id])[trial.id]
    assert len(stored) == trial.epochs == 9
    assert click_and_wait(page, f"table#trials a[href$='/trials/{trial.number}']") == 200
    assert page.url == f"{base}/studies/{ids['learners']}/trials/{trial.number}"
    assert page.locator("h1").inner_text() == f"Trial #{trial.number}"
    assert page.locator("#trial-state").inner_text() == trial.state.value.lower()
    assert page.locator("#trial-value").inner_text() == fmt(trial.value)

    params = dict(page.eval_on_selector_all(
        "table#params tr", "rows => rows.map(r => [r.cells[0].innerText, r.cells[1].innerText])"))
    assert params == {k: fmt(v) for k, v in trial.params.items()}

    # epochs counted from 1, as Keras prints "Epoch 1/9"; the database keeps 0-based indices
    assert [e["epoch"] for e in stored] == list(range(9))
    assert page.locator("#trial-best-epoch").inner_text() == str(trial.best_epoch + 1)
    assert page.locator("#trial-epochs").inner_text() == "9"
    assert page.locator("#trial-best-epoch").locator("xpath=../dt").inner_text() == "best epoch"
    assert page.locator("#trial-epochs").locator("xpath=../dt").inner_text() == "epochs trained"
    rows = table(page, "table#epochs")
    assert len(rows) == len(stored)
    assert [int(r[0]) for r in rows] == list(range(1, 10))
    assert [r[1] for r in rows] == [fmt(e["value"]) for e in stored]
    header = page.locator("table#epochs thead th").all_inner_texts()
    assert len(header) == len(set(header)), header  # the metric is not repeated
    assert set(header) >= {"epoch", "val_accuracy", "loss", "val_loss"}
    loss = [r[header.index("loss")] for r in rows]
    assert loss == [fmt(e["metrics"]["loss"]) for e in stored]

    page.wait_for_selector("#chart-trial svg.main-svg", state="attached")
    drawn = chart(page, "trial")
    assert drawn["traces"] == 1 and drawn["lines"] == 1 and drawn["points"] == len(stored)
    x = page.locator("#chart-trial").evaluate("el => el.data[0].x")
    assert x == list(range(1, 10))
    screenshot(page, shots, "trial")

    assert page.locator("p.crumbs a").get_attribute("href") == f"/studies/{ids['learners']}"


def test_failed_trial_shows_its_traceback_as_text(page, base, storage, ids, shots):
    failed = storage.trials(ids["faults"], states=[TrialState.FAILED])
    assert len(failed) == 3 and all(t.error and "Traceback" in t.error for t in failed)
    assert {t.epochs for t in failed} == {0, 1}  # failed before training, and during it
    for n, trial in enumerate(failed):
        response = page.goto(f"{base}/studies/{ids['faults']}/trials/{trial.number}")
        assert response.status == 200
        error = page.locator("pre#trial-error")
        assert error.text_content() == trial.error
        assert error.locator("*").count() == 0
        assert page.locator("#trial-state").inner_text() == "failed"
        crumb = page.locator("p.crumbs a")
        assert crumb.inner_text() == SHOWCASE_NAMES["faults"]
        assert page.locator("main b").count() == 0
        assert SHOWCASE_NAMES["faults"] in page.title()
        stored = storage.epochs([trial.id])[trial.id]
        assert len(table(page, "table#epochs")) == len(stored) == trial.epochs
        # no epoch: a notice rather than an empty table and bare axes
        assert page.locator("#no-epochs").count() == (not stored)
        assert page.locator("#chart-trial").count() == bool(stored)
        if n == 0:
            screenshot(page, shots, "failed_trial")


def test_pbt_study_shows_lineage_schedule_and_pages(page, base, storage, ids, shots):
    study = storage.study_by_id(ids["pbt"])
    trials = storage.trials(study.id)
    assert len(trials) == 12
    page.goto(f"{base}/studies/{study.id}?per_page=6")
    wait_charts(page)
    lineage = chart(page, "lineage")
    copies = sum(1 for t in trials if t.attrs["copied_from"] is not None)
    assert copies >= 1
    # a bar per segment, a dotted line per copy
    assert lineage["traces"] == len(trials) + copies and lineage["lines"] == len(trials) + copies
    assert "member" in lineage["text"] and "epoch" in lineage["text"]
    assert chart(page, "importance")["bars"] == len(study.space)
    assert chart(page, "parallel")["axes"] == len(study.space) + 1

    # the schedule: the best trial and the segments it continued, first to last
    by_number = {t.number: t for t in trials}
    chain = [storage.best_trial(study)]
    while (restore := chain[-1].attrs["segment"]["restore"]) is not None:
        chain.append(by_number[restore])
    chain.reverse()
    rows = table(page, "table#schedule")
    assert [r[0] for r in rows] == [f"#{t.number}" for t in chain]
    spans = [[int(n) for n in r[1].split("–")] for r in rows]  # epochs from 1, inclusive
    assert spans[0][0] == 1
    assert all(a[1] + 1 == b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert spans[-1][1] == sum(t.epochs for t in chain)
    assert rows[-1][-1] == fmt(chain[-1].value)
    screenshot(page, shots, "pbt_study")

    # pages of six, best first, and back
    best_first = [t.number for t in sorted(trials, key=lambda t: (-t.value, t.number))]
    assert page.locator("#trial-count").inner_text().endswith("page 1 of 2")
    assert page.locator("#prev").count() == 0
    assert [int(r[0]) for r in table(page, "table#trials")] == best_first[:6]
    assert click_and_wait(page, "#next") == 200
    assert page.locator("#trial-count").inner_text().endswith("page 2 of 2")
    assert page.locator("#next").count() == 0
    assert [int(r[0]) for r in table(page, "table#trials")] == best_first[6:]
    assert click_and_wait(page, "#prev") == 200
    assert page.locator("#trial-count").inner_text().endswith("page 1 of 2")
    assert [int(r[0]) for r in table(page, "table#trials")] == best_first[:6]


def test_workers_page(page, base, storage, shots):
    workers = storage.workers()
    assert len(workers) == 3 and all(w.stopped_at is not None for w in workers)
    page.goto(base + "/workers")
    assert page.locator("table#workers").count() == 0  # no live worker
    assert "No worker is running" in page.locator("main").inner_text()
    assert click_and_wait(page, "a[href='/workers?all=1']") == 200
    rows = table(page, "table#workers")
    assert [(int(r[0]), r[1], int(r[2]), r[3], r[4], int(r[-1])) for r in rows] == [
        (w.id, w.host, w.pid, w.device, "stopped", w.trials_done) for w in workers]
    screenshot(page, shots, "workers")


# -- several objectives -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tradeoff(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A dashboard over a hand-made study of two objectives and a constraint."""
    folder = tmp_path_factory.mktemp("tradeoff")
    url = f"sqlite:///{folder / 'tuner.db'}"
    storage = Storage(url)
    study = objective_study(storage, "tradeoff", **TRADEOFF)
    storage.dispose()
    server = Server(url, folder)
    try:
        server.wait_ready()
        yield {"base": server.base, "study": study}
    finally:
        server.stop()


def test_pareto_chart_draws_the_front_apart_from_the_rest(page, tradeoff, shots):
    base, study = tradeoff["base"], tradeoff["study"]
    page.goto(f"{base}/studies/{study.id}")
    wait_charts(page)
    drawn = chart(page, "pareto")
    completed = [n for n, (values, _) in enumerate(TRADEOFF["trials"]) if values is not None]
    # an SVG marker per completed trial, and the front's staircase
    assert drawn["svgs"] >= 1 and drawn["width"] > 300, drawn
    assert drawn["points"] == len(completed) and drawn["lines"] == 1, drawn
    for text in ("Pareto front", "infeasible", "dominated", "acc (maximize)",
                 "params (minimize)"):  # legend entries and axis titles
        assert text in drawn["text"], text
    traces = page.locator("#chart-pareto").evaluate(
        "el => el.data.map(t => [t.name, t.text.map(s => s.split('<br>')[0])])")
    assert dict(traces) == {"dominated": ["#3", "#5"],
                            "infeasible": [f"#{n}" for n in TRADEOFF_INFEASIBLE],
                            "Pareto front": ["#1", "#4", "#0"]}  # along acc, the better last
    # the front's markers are where the trials are: the x and y of each in pixels differ
    front = page.locator("#chart-pareto g.trace").nth(2).locator("path.point")
    assert front.count() == len(TRADEOFF_FRONT)
    boxes = [front.nth(i).bounding_box() for i in range(front.count())]
    assert len({round(b["x"]) for b in boxes}) == len(TRADEOFF_FRONT)
    hypervolume = chart(page, "hypervolume")
    assert hypervolume["lines"] == 1 and "Hypervolume" in hypervolume["text"]

    header = page.locator("table#trials thead th").all_inner_texts()
    assert header[2:5] == ["acc ↑", "params ↓", "constraints"]
    rows = {r[0]: r for r in table(page, "table#trials")}
    assert rows["2"][2:5] == ["0.95", "40", "breaks latency_ms <= 2"]
    assert page.locator("#front-size").inner_text() == "3 trials"
    screenshot(page, shots, "pareto_study")


# -- live updates ---------------------------------------------------------------------------

def test_study_page_follows_a_running_trial_without_reloading(browser, servers, problems):
    base, storage = servers["live"], Storage(servers["live_url"])
    study = storage.get_study("learners")
    before = storage.trials(study.id)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = problems.watch(context.new_page())
        workers_page = problems.watch(context.new_page())
        page.goto(f"{base}/studies/{study.id}")
        wait_charts(page)
        drawn = charts_drawn(page)
        page.evaluate("window.__marker = 1")
        origin = page.evaluate("performance.timeOrigin")
        assert page.locator("#trial-count").inner_text().startswith(f"{len(before)} trials ")
        assert chart(page, "curves")["traces"] == len(before)

        worker = storage.register_worker(host="browser-test", pid=os.getpid(), device="cpu",
                                         study_id=study.id)
        workers_page.goto(base + "/workers")
        assert table(workers_page, "table#workers")[-1][1] == "browser-test"

        number = len(before)
        assert storage.enqueue_trials(study.id, [(number, {"lr": 0.03, "rep": 1}, None)])
        page.wait_for_function(
            f"document.getElementById('trial-count').innerText.startsWith('{number + 1} trials')")
        assert page.locator(".count-queued").inner_text() == "1"

        trial = storage.claim_trial(study.id, worker)
        assert trial is not None and trial.number == number
        assert storage.report_epoch(trial.id, worker, 0, 0.5, {"val_accuracy": 0.5})
        page.wait_for_function(  # a running trial's epoch redraws the learning curves
            f"document.querySelectorAll('#chart-curves g.trace').length === {len(before) + 1}")
        assert charts_drawn(page) > drawn
        drawn = charts_drawn(page)
        page.wait_for_function("document.querySelector('.count-running').innerText === '1'")
        assert page.locator(".count-queued").inner_text() == "0"
        workers_page.wait_for_function(  # the workers page refreshes itself too
            "[...document.querySelectorAll('table#workers td')]"
            f".some(td => td.innerText === 'learners #{number}')")

        assert storage.report_epoch(trial.id, worker, 1, 0.9, {"val_accuracy": 0.9})
        assert storage.finish_trial(trial.id, worker, TrialState.COMPLETE, value=0.9,
                                    best_epoch=1)
        page.wait_for_function("document.getElementById('best-value').innerText === '0.9'")
        page.wait_for_function(f"Number(document.body.dataset.chartsDrawn) > {drawn}")
        assert page.locator(".count-running").inner_text() == "0"
        assert page.locator(".count-complete").inner_text() == "5"
        rows = table(page, "table#trials")
        assert len(rows) == number + 1
        assert rows[0][:3] == [str(number), "complete", "0.9"]  # best first
        history = chart(page, "history-trials")
        assert history["lines"] >= 1 and "val_accuracy" in history["text"]

        # all of it without loading the page again
        assert page.evaluate("window.__marker") == 1
        assert page.evaluate("performance.timeOrigin") == origin
        assert page.url == f"{base}/studies/{study.id}"
        storage.stop_worker(worker)
    finally:
        context.close()


# -- access ---------------------------------------------------------------------------------

def test_token_guards_every_request_and_the_browser_keeps_it(browser, servers, ids, problems):
    base = servers["token"]
    for path in ("/", "/api/studies", f"/studies/{ids['learners']}", "/static/dashboard.js"):
        status, body = get(base + path)
        assert status == 401, path
        assert b"token" in body and b"learners" not in body
    assert get(base + "/?token=wrong")[0] == 401
    status, body = get(base + "/api/studies", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and b"pbt_digits" in body

    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("pageerror", lambda exc: problems.append(f"uncaught: {exc}"))
        assert page.goto(base + "/").status == 401  # a fresh browser without the token

        assert page.goto(f"{base}/?token={TOKEN}").status == 200
        assert len(table(page, "table#studies")) == 3
        cookie = next(c for c in context.cookies() if c["name"] == "tuner_token")
        assert cookie["httpOnly"] and cookie["value"] == TOKEN
        assert click_and_wait(page, "table#studies a:text-is('learners')") == 200
        assert page.url == f"{base}/studies/{ids['learners']}"  # no token in the URL now
        wait_charts(page)  # its API requests carried the cookie
        assert chart(page, "curves")["traces"] == 8
        assert page.locator("#live").get_attribute("class") == "live"
        assert click_and_wait(page, "nav a[href='/workers']") == 200
    finally:
        context.close()


def test_refuses_to_listen_beyond_loopback_without_a_token(showcase):
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "tuner.cli", "dashboard", "--storage", showcase,
         "--host", "0.0.0.0", "--port", str(port)],
        cwd=ROOT, env=dashboard_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    assert "0.0.0.0" in lines[0] and "--token" in lines[0]
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", port))


def raw_get(base: str, path: str, host: str) -> tuple[int, bytes, float]:
    """GET with this Host header, whatever the address (as a rebound name would send it);
    the status, the body and the seconds it took."""
    port = int(base.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    started = time.monotonic()
    try:
        connection.request("GET", path, headers={"Host": host})
        response = connection.getresponse()
        return response.status, response.read(), time.monotonic() - started
    finally:
        connection.close()


def test_a_forged_host_is_refused_by_the_real_server(servers):
    """DNS rebinding: a page of evil.example.com that resolved its name to 127.0.0.1 sends
    Host: evil.example.com. Only loopback's names and --allowed-host ones are answered."""
    main, guarded = servers["main"], servers["token"]
    port = main.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}",
                 ALLOWED_HOST, f"{ALLOWED_HOST}:{port}"):
        status, body, _ = raw_get(main, "/api/studies", host)
        assert status == 200 and b"pbt_digits" in body, host
    for host in ("evil.example.com", f"evil.example.com:{port}", "localhost.evil.example.com",
                 f"{ALLOWED_HOST}.evil.example.com"):
        for path in ("/api/studies", "/", "/static/dashboard.js"):
            status, body, _ = raw_get(main, path, host)
            assert status == 400, (host, path)
            assert b"learners" not in body and b"pbt_digits" not in body and len(body) < 100
    # the token server is on loopback too: checked the same, whatever the token says
    assert raw_get(guarded, f"/api/studies?token={TOKEN}", "evil.example.com")[0] == 400
    assert raw_get(guarded, f"/api/studies?token={TOKEN}", "localhost")[0] == 200


def test_a_hostile_filter_does_not_stall_the_server(servers, ids):
    """120,000 spaces in a filter took 36 s of regex backtracking, and every other request
    waited: now it is a 400 at once."""
    base = servers["main"]
    # as a form sends it (a space is "+"): 120 kB, read by the server in one piece
    query = urllib.parse.urlencode({"filter": "value = a" + " " * 120_000 + "b"})
    status, body, seconds = raw_get(base, f"/api/studies/{ids['learners']}/trials?{query}",
                                    "localhost")
    assert status == 400 and seconds < 1.0
    assert "too long" in json.loads(body)["detail"]
    status, body, seconds = raw_get(base, f"/studies/{ids['learners']}?{query}", "localhost")
    assert status == 200 and b'id="table-error"' in body and seconds < 1.0
    status, body, _ = raw_get(base, f"/api/studies/{ids['learners']}/trials?page={2**63 - 1}",
                              "localhost")
    assert status == 422 and b"page" in body


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """What the command said, asserted to be one error line, with no traceback."""
    assert result.returncode in (1, 2), result
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0] and lines[0].startswith("Error")
    return lines[0]


def test_the_command_refuses_a_short_token_and_a_bad_host_name(showcase):
    line = one_line_error(run_cli("dashboard", "--storage", showcase, "--port",
                                  str(free_port()), "--token", "secret", timeout=60))
    assert "token is too short" in line and "at least 16" in line
    line = one_line_error(run_cli("dashboard", "--storage", showcase, "--port",
                                  str(free_port()), "--allowed-host", "a.example:80",
                                  timeout=60))
    assert "cannot allow the host 'a.example:80'" in line


@pytest.mark.parametrize("port", ["70000", "0", "-1", "65536"])
def test_the_command_refuses_a_port_out_of_range(showcase, port):
    line = one_line_error(run_cli("dashboard", "--storage", showcase, "--port", port,
                                  timeout=60))
    assert f"port {port} is not a TCP port" in line


def test_the_command_says_when_its_port_is_taken(showcase):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_error(run_cli("dashboard", "--storage", showcase, "--port", str(port),
                                      timeout=60))
    assert f"127.0.0.1:{port}" in line and "already in use" in line
