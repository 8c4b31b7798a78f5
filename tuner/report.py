"""A study's report as one self-contained file (HTML or Markdown) to attach to a pull
request or a paper: the setup, the top trials, the best configuration and how to rebuild
it, and charts drawn with matplotlib and embedded as SVG.

The content is built once as neutral blocks; each format renders (and escapes) them at
the last step, so no user-supplied text reaches the output unescaped.
"""

from __future__ import annotations

import base64
import html
import io
import re
import shlex
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tuner import analysis, fronts
from tuner.display import arrow, fmt, fmt_seconds
from tuner.ranking import rank
from tuner.space import Space, describe
from tuner.states import TrialState
from tuner.storage import Storage, StudyRecord, Trial, safe_url, shown_epoch
from tuner.study import rebuild_code

TOP = 10
FAILURES_SHOWN = 10


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Table:
    columns: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Chart:
    name: str  # what the image shows, for readers that cannot see it
    svg: str


Block = Heading | Para | Table | Code | Chart


def render_report(storage: Storage, name: str, fmt: str) -> str:
    """The report of study `name` as "html" or "md" text. Raises `StudyNotFound`."""
    if fmt not in RENDERERS:
        raise ValueError(f"format {fmt!r}: choose from {', '.join(RENDERERS)}")
    study = storage.get_study(name)
    trials = storage.trials(study.id)
    best = storage.best_trial(study)  # the same query as `tuner best`, so they agree
    generated = f"Generated {_when(datetime.now(UTC).timestamp())} from {safe_url(storage.url)}."
    blocks = [Para(generated), *_setup(study, trials), *_top(study, trials),
              *_pareto(study, trials), *_best(storage, study, trials, best),
              *_charts(storage, study, trials)]
    return RENDERERS[fmt](f"Tuning report: {study.name}", blocks)


# -- content ------------------------------------------------------------------------------
def _setup(study: StudyRecord, trials: Sequence[Trial]) -> list[Block]:
    settings = study.settings
    counts = Counter(t.state for t in trials)
    states = ", ".join(f"{counts[s]} {s.value.lower()}" for s in TrialState if counts[s])
    rows = [
        ["Study", study.name],
        ["Strategy", study.strategy],
        *([["Objectives", ", ".join(map(fronts.label, study.objectives))]]
          if study.multi_objective else [["Metric", f"{study.metric} ({study.direction})"]]),
        *([["Constraints", "; ".join(map(str, study.constraints))]] if study.constraints
          else []),
        ["Seed", str(study.seed)],
        ["Epochs per trial (at most)", fmt(settings.get("epochs"))],
        ["Batch size", fmt(settings.get("batch_size"))],
        ["Early stopping across trials", _rule(settings.get("early_stop"))],
    ]
    if settings.get("patience") is not None:
        rows.append(["Patience within a trial (epochs)", fmt(settings["patience"])])
    rows += [
        ["Trials", f"{len(trials)} ({states})" if trials else "0"],
        ["Created", _when(study.created_at)],
        ["Training time (sum over trials)",
         fmt_seconds(sum(t.duration for t in trials if t.duration is not None))],
    ]
    space = [[p.name, describe(p)] for p in Space.from_dict(study.space)]
    return [Heading("Setup"), Table(["Setting", "Value"], rows),
            Heading("Search space", 3), Table(["Parameter", "Definition"], space)]


def _top(study: StudyRecord, trials: Sequence[Trial]) -> list[Block]:
    ranked = rank(list(trials), study.sign, study)[:TOP]  # by fronts with several objectives
    if not ranked:
        return [Heading("Top trials"), Para("No trials yet.")]
    names: list[str] = []
    for trial in ranked:
        names += [n for n in trial.params if n not in names]
    rows = [[str(i), str(t.number), t.state.value, *_judged_cells(study, t), str(t.epochs),
             fmt_seconds(t.duration), *(fmt(t.params.get(n)) for n in names)]
            for i, t in enumerate(ranked, 1)]
    columns = ["Rank", "Trial", "State", *_judged_columns(study), "Epochs", "Time", *names]
    blocks: list[Block] = [Heading(f"Top {len(ranked)} trials"), Table(columns, rows)]
    failed = [t for t in trials if t.state == TrialState.FAILED]
    if failed:
        shown = failed[:FAILURES_SHOWN]
        blocks += [Heading(f"Failed trials ({len(failed)})", 3),
                   Table(["Trial", "Parameters", "Error"],
                         [[str(t.number), _params(t.params), _shorten(t.error_summary)]
                          for t in shown])]
        if len(failed) > len(shown):
            blocks.append(Para(f"The first {len(shown)} of {len(failed)} are shown."))
    return blocks


def _judged_columns(study: StudyRecord) -> list[str]:
    """The value's column, or one per objective; and the constraints' verdict if any."""
    columns = [f"{o.name} {'↑' if o.sign > 0 else '↓'}" for o in study.objectives]
    return columns + (["Constraints"] if study.constraints else [])


def _judged_cells(study: StudyRecord, trial: Trial) -> list[str]:
    values = list(study.values_of(trial) or ())
    values += [None] * (len(study.objectives) - len(values))
    cells = [fmt(v) for v in values[:len(study.objectives)]]
    return cells + ([fmt(fronts.verdict(study, trial))] if study.constraints else [])


def _pareto(study: StudyRecord, trials: Sequence[Trial]) -> list[Block]:
    """Several objectives: the front as a table and a scatter, and its hypervolume."""
    if not study.multi_objective:
        return []
    front = study.front(trials)
    blocks: list[Block] = [Heading("Pareto front")]
    if not front:
        return [*blocks, Para("No completed trial keeps every constraint yet: no front.")]
    names: list[str] = []
    for trial in front:
        names += [n for n in trial.params if n not in names]
    blocks += [
        Para(f"{len(front)} of the completed trials that keep every constraint are beaten "
             "by no other on every objective; best first by the first objective."),
        Table(["Trial", *_judged_columns(study), *names],
              [[str(t.number), *_judged_cells(study, t), *(fmt(t.params.get(n)) for n in names)]
               for t in front]),
        Chart("Pareto front", _pareto_svg(study, fronts.points(study, trials))),
        Heading("Hypervolume", 3)]
    history, reference = fronts.hypervolume(study, trials)
    where = ", ".join(f"{o.name} = {fmt(r)}" for o, r in zip(study.objectives, reference or (),
                                                              strict=False))
    blocks += [Para(f"The volume the front dominates, from the worst value of each objective "
                    f"({where}), after each feasible trial."),
               Chart("Hypervolume", _hypervolume_svg(history))]
    return blocks


def _best(storage: Storage, study: StudyRecord, trials: Sequence[Trial],
          best: Trial | None) -> list[Block]:
    blocks: list[Block] = [Heading("Best configuration")]
    if best is None:
        return [*blocks, Para("No trial has completed yet.")]
    if study.multi_objective:
        blocks.append(Para(f"With several objectives no trial is best on all: this is the "
                           f"best by {study.metric}, the first; the Pareto front above lists "
                           "the trade-offs."))
    blocks += [
        Para(f"Trial {best.number}: {study.metric} = {fmt(best.value)} ({study.direction}) "
             f"at epoch {fmt(shown_epoch(best.best_epoch))}."),
        Table(["Parameter", "Value"], [[k, repr(v)] for k, v in best.params.items()]),
    ]
    chain = analysis.schedule(trials, best)
    if study.strategy == "pbt" or len(chain) > 1:
        blocks += [Heading("Hyperparameter schedule", 3),
                   Para("Under PBT the best model was trained in stretches, each continuing "
                        "an earlier trial's checkpoint; these are the values it trained with."),
                   _schedule(study, chain)]
    blocks += [Heading("Rebuild it", 3), Code(rebuild_code(study.name, storage.url, best.params)),
               Para("Its trained weights are kept with the study: tuner best "
                    f"{shlex.quote(study.name)} --export best.keras")]
    return blocks


def _schedule(study: StudyRecord, chain: Sequence[Trial]) -> Table:
    columns = ["Epochs", "Trial", "Member", "Copied from", *analysis.explored(study),
               f"{study.metric} {arrow(study)}"]
    return Table(columns, [[fmt(cell) for cell in row]
                           for row in analysis.schedule_rows(study, chain)])


def _charts(storage: Storage, study: StudyRecord, trials: Sequence[Trial]) -> list[Block]:
    blocks: list[Block] = [Heading("History")]
    points = analysis.history(study, storage.finished_values(study.id))
    blocks.append(Chart("History", _history_svg(study, points)) if points
                  else Para("No completed trial yet: no history to draw."))
    blocks.append(Heading("Parameter importance"))
    scores = analysis.importance(study, trials)
    blocks.append(Chart("Parameter importance", _importance_svg(study, scores)) if scores
                  else Para(_why_no_importance(trials)))
    return blocks


def _why_no_importance(trials: Sequence[Trial]) -> str:
    values = [t.value for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if len(values) < 2:
        return (f"No parameter importance: it needs at least two completed trials, and this "
                f"study has {len(values)}.")
    if len(set(values)) == 1:
        return ("No parameter importance: every completed trial reached the same value, so "
                "there is no variation to attribute to the parameters.")
    return ("No parameter importance: fANOVA could not attribute the variation to any "
            "parameter (no tunable parameter varies among the completed trials).")


# -- charts ---------------------------------------------------------------------------------
def _history_svg(study: StudyRecord, points: Sequence[analysis.HistoryPoint]) -> str:
    from matplotlib.ticker import MaxNLocator

    fig, ax = _figure(6.4, 3.6)
    ax.scatter([p.number for p in points], [p.value for p in points], s=18, alpha=0.6,
               label="completed trial")
    steps = analysis.improvements(points)
    ax.step([p.number for p in steps], [p.best for p in steps], where="post", color="C3",
            label="best so far")
    better = "higher" if study.sign > 0 else "lower"
    ax.set_title(_plain(f"{study.metric} by trial ({study.direction}: {better} is better)"))
    ax.set_xlabel("Trial number")
    ax.set_ylabel(_plain(study.metric))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    return _svg(fig, "history")


def _pareto_svg(study: StudyRecord, points: Sequence[fronts.Point]) -> str:
    """Two objectives: one scatter with the front's staircase; three or more: the pairs of
    the first three, side by side."""
    objectives = study.objectives[:3]
    pairs = [(0, 1)] if len(objectives) == 2 else [(0, 1), (0, 2), (1, 2)]
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4 if len(pairs) == 1 else 12.0, 4.0), layout="constrained")
    axes = fig.subplots(1, len(pairs), squeeze=False)[0]
    groups = [("dominated", [p for p in points if p.feasible and not p.front],
               {"s": 18, "alpha": 0.6, "color": "C0"}),
              ("infeasible", [p for p in points if not p.feasible],
               {"s": 24, "marker": "x", "color": "0.5"}),
              ("Pareto front", [p for p in points if p.front], {"s": 30, "color": "C3"})]
    for ax, (i, j) in zip(axes, pairs, strict=True):
        for name, group, style in groups:
            if group:
                ax.scatter([p.values[i] for p in group], [p.values[j] for p in group],
                           label=name, **style)
        if len(pairs) == 1 and groups[2][1]:
            # the boundary of what the front dominates ("pre": vertical, then along x)
            line = sorted(groups[2][1], key=lambda p: objectives[0].sign * p.values[0])
            ax.step([p.values[0] for p in line], [p.values[1] for p in line], where="pre",
                    color="C3", linewidth=1)
        ax.set_xlabel(_plain(fronts.label(objectives[i])))
        ax.set_ylabel(_plain(fronts.label(objectives[j])))
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best")
    fig.suptitle("Pareto front" + ("" if len(study.objectives) <= 3 else
                                   f" (the first 3 of {len(study.objectives)} objectives)"))
    return _svg(fig, "pareto")


def _hypervolume_svg(history: Sequence[analysis.HypervolumePoint]) -> str:
    fig, ax = _figure(6.4, 3.4)
    ax.step(range(1, len(history) + 1), [h.hypervolume for h in history], where="post",
            color="C2")
    ax.set_title("Hypervolume after each feasible completed trial")
    ax.set_xlabel("Feasible completed trials, in the order they finished")
    ax.set_ylabel("Hypervolume")
    ax.grid(alpha=0.3)
    return _svg(fig, "hypervolume")


def _importance_svg(study: StudyRecord, scores: dict[str, float]) -> str:
    names = list(scores)[::-1]  # barh draws bottom-up: the most important ends on top
    fig, ax = _figure(6.4, 1.2 + 0.35 * len(names))
    ax.barh([_plain(n) for n in names], [scores[n] for n in names], color="C0")
    ax.set_title(_plain(f"Parameter importance for {study.metric} (fANOVA)"))
    ax.set_xlabel(_plain(f"Share of the variance of {study.metric}"))
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig, "importance")


def _figure(width: float, height: float) -> tuple[Any, Any]:
    # A bare Figure renders through its own canvas: pyplot's global backend stays untouched.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots()


def _svg(fig: Any, key: str) -> str:
    import matplotlib

    buffer = io.StringIO()
    # Text as paths: the file needs no font; no metadata: nothing dated or linked.
    with matplotlib.rc_context({"svg.fonttype": "path"}):
        fig.savefig(buffer, format="svg",
                    metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]  # the XML prolog and DOCTYPE are invalid inside HTML
    # Both charts define the same glyph ids; inline in one page, ids must be unique.
    return re.sub(r'(\bid="|href="#|url\(#)', rf"\g<1>{key}-", svg)


def _plain(text: str) -> str:
    """Text matplotlib must not read as mathtext (a metric named `a$b$` is just that)."""
    return text.replace("$", r"\$")


# -- formatting helpers ------------------------------------------------------------------
def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _rule(rule: dict[str, Any] | None) -> str:
    if not rule:
        return "none"
    options = ", ".join(f"{k}={v}" for k, v in rule.items() if k != "name" and v is not None)
    return f"{rule.get('name', '?')} ({options})" if options else str(rule.get("name", "?"))


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


def _shorten(summary: str | None, limit: int = 300) -> str:
    """An error's type and message on one line; the traceback is on the trial's page."""
    line = " ".join((summary or "-").split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


# -- renderers --------------------------------------------------------------------------------
CSS = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 70em; margin: 2em auto; padding: 0 1em;
       color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top;
         white-space: pre-wrap; }
th { background: #f3f3f3; }
pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; }
figure { margin: 1em 0; }
figure svg { max-width: 100%; height: auto; }
"""


def _html(title: str, blocks: Sequence[Block]) -> str:
    e = html.escape
    parts = []
    for block in blocks:
        match block:
            case Heading(text, level):
                parts.append(f"<h{level}>{e(text)}</h{level}>")
            case Para(text):
                parts.append(f"<p>{e(text)}</p>")
            case Table(columns, rows):
                head = "".join(f"<th>{e(c)}</th>" for c in columns)
                body = "\n".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>"
                                 for row in rows)
                parts.append(f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n"
                             "</tbody>\n</table>")
            case Code(text):
                parts.append(f"<pre><code>{e(text)}</code></pre>")
            case Chart(name, svg):  # matplotlib's SVG: its text is escaped already
                parts.append(f'<figure aria-label="{e(name)}">\n{svg}\n</figure>')
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<h1>{e(title)}</h1>\n{body}\n</body>\n</html>\n")


def _md_text(text: str, *, cell: bool = False) -> str:
    # Backslash escapes show the characters as typed: `<b>` is not markup, `|` no column.
    text = re.sub(r"([\\`*\[\]<>|&$])", r"\\\1", text)
    return text.replace("\r\n", "\n").replace("\n", "<br>" if cell else " ")


def _md(title: str, blocks: Sequence[Block]) -> str:
    parts = [f"# {_md_text(title)}"]
    for block in blocks:
        match block:
            case Heading(text, level):
                parts.append(f"{'#' * level} {_md_text(text)}")
            case Para(text):
                parts.append(_md_text(text))
            case Table(columns, rows):
                lines = ["| " + " | ".join(_md_text(c, cell=True) for c in columns) + " |",
                         "|" + "---|" * len(columns)]
                lines += ["| " + " | ".join(_md_text(c, cell=True) for c in row) + " |"
                          for row in rows]
                parts.append("\n".join(lines))
            case Code(text):
                longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
                fence = "`" * max(3, longest + 1)  # longer than any run inside
                parts.append(f"{fence}python\n{text.rstrip()}\n{fence}")
            case Chart(name, svg):
                data = base64.b64encode(svg.encode()).decode()
                parts.append(f"![{_md_text(name)}](data:image/svg+xml;base64,{data})")
    return "\n\n".join(parts) + "\n"


RENDERERS: dict[str, Callable[[str, Sequence[Block]], str]] = {"html": _html, "md": _md}
