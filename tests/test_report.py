"""`tuner report`: one self-contained HTML or Markdown file per study, read back as a reader
(an HTML parser, an XML parser for the charts) would, and checked against the storage."""

from __future__ import annotations

import base64
import html
import itertools
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.conftest import ROOT, SHOWCASE_NAMES, TRADEOFF, cli_env, objective_study, run_cli
from tuner import analysis
from tuner.display import fmt
from tuner.errors import StudyNotFound
from tuner.ranking import rank
from tuner.space import Choice, Float, Space
from tuner.states import TrialState
from tuner.storage import Storage, Trial

SVG = "{http://www.w3.org/2000/svg}"
DRAWN = {"path", "line", "polyline", "use", "rect"}


@pytest.fixture(scope="module")
def reports(showcase: str, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], str]:
    """Every showcase study in both formats, written by the CLI to files of their own."""
    folder = tmp_path_factory.mktemp("reports")
    written = {}
    for key, name in SHOWCASE_NAMES.items():
        for fmt_ in ("html", "md"):
            path = folder / f"{key}.{fmt_}"
            result = run_cli("report", name, "--format", fmt_, "--out", str(path),
                             "--storage", showcase)
            assert result.returncode == 0, result.stderr
            assert result.stdout == ""
            assert result.stderr.strip() == f"Wrote the report to {path}"
            written[key, fmt_] = path.read_text(encoding="utf-8")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{k}.{f}" for k in SHOWCASE_NAMES for f in ("html", "md"))  # one file each, no assets
    return written


def stored(showcase: str, key: str) -> tuple[list[Trial], Trial]:
    """What the storage says: the top ten trials, best first, and the best trial."""
    storage = Storage(showcase)
    study = storage.get_study(SHOWCASE_NAMES[key])
    best = storage.best_trial(study)
    assert best is not None
    return rank(storage.trials(study.id), study.sign)[:10], best


# -- HTML ---------------------------------------------------------------------------------
class Page(HTMLParser):
    """Title, tables under each heading (cells unescaped), drawing elements per <svg>,
    and every tag and link."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.title = self.heading = ""
        self.tables: dict[str, list[list[str]]] = {}
        self.svgs: list[int] = []  # drawing elements in each <svg>
        self.tags: list[str] = []
        self.links: list[str] = []
        self._text: list[str] | None = None
        self._svg: int | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.links += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href")]
        if tag == "svg":
            self._svg = 0
        elif self._svg is not None and tag in DRAWN:
            self._svg += 1
        elif tag == "tr":
            self.tables.setdefault(self.heading, []).append([])
        if tag in ("title", "h1", "h2", "h3", "td", "th"):
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg" and self._svg is not None:
            self.svgs.append(self._svg)
            self._svg = None
        if self._text is None or tag not in ("title", "h1", "h2", "h3", "td", "th"):
            return
        text, self._text = "".join(self._text), None
        if tag == "title":
            self.title = text
        elif tag in ("td", "th"):
            self.tables[self.heading][-1].append(text)
        else:
            self.heading = text

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)

    def table(self, prefix: str) -> list[list[str]]:
        """The rows (header first) of the table under the heading that starts so."""
        [heading] = [h for h in self.tables if h.startswith(prefix)]
        return self.tables[heading]


@pytest.mark.parametrize("key", list(SHOWCASE_NAMES))
def test_html_is_one_self_contained_file_with_inline_svg_charts(
        reports: dict[tuple[str, str], str], key: str) -> None:
    text = reports[key, "html"]
    assert text.startswith("<!DOCTYPE html>")
    assert text.count("<!DOCTYPE") == 1 and "<?xml" not in text  # the SVGs' own prologs
    for remote in ('src="http', "src='http", 'href="http', "href='http", "<script", "<link",
                   "<img", "<iframe", "@import", "url(http"):
        assert remote not in text, remote
    page = Page(text)
    assert page.title == f"Tuning report: {SHOWCASE_NAMES[key]}"
    assert page.links and all(link.startswith("#") for link in page.links)  # in-file only
    assert "style" in page.tags
    # The history always; importance where fANOVA has something (the learners' completed
    # trials all reach one value, so one line says why instead).
    charts = {"learners": 1, "pbt": 2, "faults": 2}[key]
    assert len(page.svgs) == charts
    assert all(drawn > 20 for drawn in page.svgs)
    svgs = re.findall(r"<svg\b.*?</svg>", text, flags=re.S)
    assert len(svgs) == charts
    for svg in svgs:
        root = ET.fromstring(svg)
        assert root.tag == f"{SVG}svg"
        assert len(list(root.iter(f"{SVG}path"))) > 10
    ids = re.findall(r'\bid="([^"]+)"', text)
    assert len(ids) == len(set(ids))  # two charts in one page must not share ids
    if key == "learners":
        assert "No parameter importance: every completed trial reached the same value" in text


@pytest.mark.parametrize("key", list(SHOWCASE_NAMES))
def test_html_top_trials_and_best_configuration_match_the_storage(
        reports: dict[tuple[str, str], str], showcase: str, key: str) -> None:
    page = Page(reports[key, "html"])
    top, best = stored(showcase, key)
    header, *rows = page.table("Top ")
    assert header[:2] == ["Rank", "Trial"]
    value = header.index("val_accuracy ↑")
    assert [row[1] for row in rows] == [str(t.number) for t in top]
    assert [row[value] for row in rows] == [fmt(t.value) for t in top]
    assert rows[0][1] == str(best.number) and rows[0][value] == fmt(best.value)
    _, *params = page.table("Best configuration")
    assert {name: v for name, v in params} == {k: repr(v) for k, v in best.params.items()}
    rebuild = html.unescape(reports[key, "html"])
    assert f"Study.load({SHOWCASE_NAMES[key]!r}, storage={showcase!r})" in rebuild
    assert f"build_model(HyperParameters.from_values({best.params!r}))" in rebuild


def test_html_escapes_the_study_name_and_error_texts(reports: dict[tuple[str, str], str]) -> None:
    text = reports["faults", "html"]
    assert "&lt;b&gt;faults&lt;/b&gt; &amp; &quot;co&quot;" in text
    assert "<b>faults</b>" not in text and "<b>" not in text
    page = Page(text)
    assert page.title == 'Tuning report: <b>faults</b> & "co"'  # escaped, then read back
    assert "b" not in page.tags
    setup = dict(page.table("Setup")[1:])
    assert setup["Study"] == SHOWCASE_NAMES["faults"]
    assert setup["Trials"] == "5 (2 complete, 3 failed)"
    failed = page.table("Failed trials (3)")
    assert [row[0] for row in failed[1:]] == ["1", "2", "3"]
    assert failed[1][2] == "ValueError: this configuration cannot be built"


def test_pbt_report_shows_the_best_trials_schedule(
        reports: dict[tuple[str, str], str], showcase: str) -> None:
    storage = Storage(showcase)
    study = storage.get_study(SHOWCASE_NAMES["pbt"])
    _, best = stored(showcase, "pbt")
    chain = analysis.schedule(storage.trials(study.id), best)
    assert len(chain) > 1  # four members over several generations: checkpoints continued
    header, *rows = Page(reports["pbt", "html"]).table("Hyperparameter schedule")
    assert header == ["Epochs", "Trial", "Member", "Copied from", "dropout", "learning_rate",
                      "val_accuracy ↑"]  # the mutable parameters only: units is fixed
    assert [row[1] for row in rows] == [str(t.number) for t in chain]
    spans = [[int(e) for e in row[0].split("–")] for row in rows]  # epochs counted from 1
    assert spans[0][0] == 1 and rows[-1][1] == str(best.number)
    assert all(later[0] == earlier[1] + 1 for earlier, later in itertools.pairwise(spans))
    assert [row[5] for row in rows] == [fmt(t.params["learning_rate"]) for t in chain]
    assert "--export best.keras" in reports["pbt", "md"]
    assert "Hyperparameter schedule" not in reports["learners", "html"]


# -- Markdown -----------------------------------------------------------------------------
def md_tables(text: str) -> dict[str, list[list[str]]]:
    """Tables under each heading, cells split on unescaped pipes and unescaped."""
    tables: dict[str, list[list[str]]] = {}
    heading, code = "", False
    for line in text.splitlines():
        if line.startswith("```"):
            code = not code
        elif code:
            continue
        elif line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            if not all(set(c) == {"-"} for c in cells):  # the separator row
                tables.setdefault(heading, []).append(
                    [re.sub(r"\\(.)", r"\1", c) for c in cells])
    return tables


def md_table(text: str, prefix: str) -> list[list[str]]:
    tables = md_tables(text)
    [heading] = [h for h in tables if h.startswith(prefix)]
    return tables[heading]


@pytest.mark.parametrize("key", list(SHOWCASE_NAMES))
def test_markdown_tables_hold_and_match_the_storage(
        reports: dict[tuple[str, str], str], showcase: str, key: str) -> None:
    text = reports[key, "md"]
    tables = md_tables(text)
    assert {"Setup", "Search space", "Best configuration"} <= set(tables)
    for rows in tables.values():  # an escaped | or newline never adds or splits a cell
        assert len({len(row) for row in rows}) == 1
    top, best = stored(showcase, key)
    header, *rows = md_table(text, "Top ")
    value = header.index("val_accuracy ↑")
    assert [row[1] for row in rows] == [str(t.number) for t in top]
    assert [row[value] for row in rows] == [fmt(t.value) for t in top]
    _, *params = md_table(text, "Best configuration")
    assert dict(params) == {k: repr(v) for k, v in best.params.items()}


def test_markdown_setup_of_the_learners(showcase: str) -> None:
    result = run_cli("report", "learners", "--format", "md", "--storage", showcase)  # stdout
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith("# Tuning report: learners\n")
    setup = dict(md_table(text, "Setup")[1:])
    assert setup["Strategy"] == "grid"
    assert setup["Metric"] == "val_accuracy (maximize)"
    assert setup["Seed"] == "4"
    assert setup["Epochs per trial (at most)"] == "9"
    assert setup["Early stopping across trials"].startswith("asha (")
    assert setup["Trials"] == "8 (4 complete, 4 pruned)"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", setup["Created"])
    space = dict(md_table(text, "Search space")[1:])
    assert space == {"lr": "Choice([0.03, 1e-07])", "rep": "Int(0, 3)"}


@pytest.mark.parametrize("key", list(SHOWCASE_NAMES))
def test_markdown_charts_are_base64_svg_images(
        reports: dict[tuple[str, str], str], key: str) -> None:
    text = reports[key, "md"]
    images = re.findall(r"!\[([^\]]*)\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", text)
    expected = ["History"] + (["Parameter importance"] if key != "learners" else [])
    assert [alt for alt, _ in images] == expected
    for _, data in images:
        root = ET.fromstring(base64.b64decode(data, validate=True))
        assert root.tag == f"{SVG}svg"
        assert len(list(root.iter(f"{SVG}path"))) > 10
    assert "http" not in re.sub(r"data:image/svg\+xml;base64,[A-Za-z0-9+/=]+", "", text)


def test_markdown_escapes_the_study_name(reports: dict[tuple[str, str], str]) -> None:
    text = reports["faults", "md"]
    assert text.startswith('# Tuning report: \\<b\\>faults\\</b\\> \\& "co"\n')
    prose = re.sub(r"```.*?```", "", text, flags=re.S)  # a code block shows it literally
    assert "<b>" not in prose
    assert dict(md_table(text, "Setup")[1:])["Study"] == SHOWCASE_NAMES["faults"]


def test_pipes_newlines_and_dollars_in_values_do_not_break_tables(tmp_path: Path) -> None:
    """A study written through the storage with the characters that break a Markdown
    table (`|`, newlines) or turn text into markup (`$...$` is math to GitHub and matplotlib)."""
    from tuner.report import render_report

    storage = Storage(f"sqlite:///{tmp_path / 'tuner.db'}")
    name, param = "a | b\nc", "p|q"
    space = Space(**{param: Choice(["x|y", "a\nb"]), "lr": Float(1e-3, 1.0, log=True)})
    study = storage.create_study(name, metric="loss|$x$", direction="minimize",
                                 strategy="random", seed=1, space=space.to_dict(),
                                 settings={"epochs": 2})
    worker = storage.register_worker(host="test-host", pid=1, device="cpu", study_id=study.id)
    storage.enqueue_trials(study.id, [(0, {param: "x|y", "lr": 0.01}, None),
                                      (1, {param: "a\nb", "lr": 0.1}, None),
                                      (2, {param: "x|y", "lr": 0.5}, None)])
    for value in (0.5, 0.2, None):
        trial = storage.claim_trial(study.id, worker)
        assert trial is not None
        if value is None:
            storage.finish_trial(trial.id, worker, TrialState.FAILED,
                                 error="Traceback ...\nValueError: bad | worse")
        else:
            storage.report_epoch(trial.id, worker, 0, value, {})
            storage.finish_trial(trial.id, worker, TrialState.COMPLETE, value=value, best_epoch=0)

    text = render_report(storage, name, "md")
    tables = md_tables(text)
    for rows in tables.values():
        assert len({len(row) for row in rows}) == 1
    cell = {k: v.replace("<br>", "\n") for k, v in tables["Setup"][1:]}
    assert cell["Study"] == name and cell["Metric"] == "loss|$x$ (minimize)"
    header, *rows = (
        [c.replace("<br>", "\n") for c in row] for row in md_table(text, "Top "))
    assert header[3] == "loss|$x$ ↓" and header[6] == param
    assert [(r[1], r[3], r[6]) for r in rows] == [("1", "0.2", "a\nb"), ("0", "0.5", "x|y"),
                                                  ("2", "-", "x|y")]
    assert md_table(text, "Failed trials")[1][2] == "ValueError: bad | worse"
    assert "$x$" not in text.split("```")[0]  # escaped outside the code block: \$x\$

    page = Page(render_report(storage, name, "html"))
    assert page.title == f"Tuning report: {name}"
    assert len(page.svgs) == 2  # the metric's dollars drew as text, not as math
    storage.dispose()


# -- errors and the library ---------------------------------------------------------------
def test_unknown_study_is_one_clear_line(showcase: str) -> None:
    result = run_cli("report", "no-such-study", "--storage", showcase)
    assert result.returncode != 0
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "no-such-study" in result.stderr and "Traceback" not in result.stderr


def test_unwritable_out_is_one_clear_line(showcase: str, tmp_path: Path) -> None:
    target = tmp_path / "missing" / "report.html"
    result = run_cli("report", "learners", "--out", str(target), "--storage", showcase)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"cannot write {target}" in result.stderr and "Traceback" not in result.stderr
    assert not target.parent.exists()


PYPLOT_CHECK = """
import sys, matplotlib
from tuner.report import render_report
from tuner.storage import Storage
assert "<svg" in render_report(Storage(sys.argv[1]), "pbt_digits", "html")
print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
"""


def test_render_report_leaves_pyplot_and_the_backend_alone(showcase: str) -> None:
    # A fresh process: in this one, Keras or another test may have loaded pyplot already.
    result = subprocess.run([sys.executable, "-c", PYPLOT_CHECK, showcase], cwd=ROOT,
                            env={**cli_env(), "MPLBACKEND": "pdf"}, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["pdf", "False"]  # the user's backend, pyplot unloaded


def test_render_report_raises_for_an_unknown_study_or_format(showcase: str) -> None:
    from tuner.report import render_report

    with pytest.raises(StudyNotFound):
        render_report(Storage(showcase), "no-such-study", "html")
    with pytest.raises(ValueError, match="format 'pdf'"):
        render_report(Storage(showcase), "pbt_digits", "pdf")


def test_a_multi_objective_report_shows_objectives_front_and_hypervolume(tmp_path: Path) -> None:
    from tuner.report import render_report

    storage = Storage(f"sqlite:///{tmp_path / 'tuner.db'}")
    objective_study(storage, "tradeoff", **TRADEOFF)
    page = Page(render_report(storage, "tradeoff", "html"))
    setup = dict(page.table("Setup")[1:])
    assert setup["Objectives"] == "acc (maximize), params (minimize)"
    assert setup["Constraints"] == "latency_ms <= 2" and "Metric" not in setup
    header, *rows = page.table("Pareto front")
    assert header[:4] == ["Trial", "acc ↑", "params ↓", "Constraints"]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("0", "0.9", "100", "feasible"), ("4", "0.85", "80", "feasible"),
        ("1", "0.8", "50", "feasible")]  # not #2, which breaks the latency bound
    header, *rows = page.table("Top ")
    # ranked by fronts: the front first, the infeasible #2 (more accurate) after it
    assert [r[1] for r in rows[:3]] == ["0", "4", "1"]
    by_trial = {r[1]: dict(zip(header, r, strict=True)) for r in rows}
    assert (by_trial["2"]["acc ↑"], by_trial["2"]["params ↓"]) == ("0.95", "40")
    assert by_trial["2"]["Constraints"] == "breaks latency_ms <= 2"
    assert by_trial["6"]["Constraints"] == "-"  # failed: never judged
    text = render_report(storage, "tradeoff", "html")
    for chart in ("Pareto front", "Hypervolume"):
        assert f'<figure aria-label="{chart}">' in text
    assert all(drawn > 20 for drawn in page.svgs) and len(page.svgs) >= 3
    ids = re.findall(r'\bid="([^"]+)"', text)
    assert len(ids) == len(set(ids))

    md = render_report(storage, "tradeoff", "md")
    header, *rows = md_table(md, "Pareto front")
    assert [r[0] for r in rows] == ["0", "4", "1"] and header[1:3] == ["acc ↑", "params ↓"]
    assert "![Pareto front](data:image/svg+xml;base64," in md
    assert "![Hypervolume](data:image/svg+xml;base64," in md
    storage.dispose()
