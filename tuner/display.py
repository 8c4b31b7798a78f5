"""Rich renderings of studies and trials for the terminal.

Names, parameter values and error texts are user input: the consoles made here never read
markup or emoji codes in text, and control characters (an escape sequence in a study
name) are shown escaped, so nothing a user typed can restyle or garble the terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from tuner import analysis
from tuner.coordinator import Progress
from tuner.fronts import verdict
from tuner.objectives import Objective
from tuner.states import TrialState
from tuner.storage import StudyRecord, StudySummary, Trial, WorkerRecord, shown_epoch
from tuner.strategies import PBTSegment

_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F] if chr(c) not in "\n\t"}


def printable(text: str) -> str:
    """`text` with control characters (terminal escape sequences) shown as `\\xNN`."""
    return text.translate(_CONTROL)


class SafeConsole(Console):
    """A console whose strings are plain text: styles come from `Text` objects only."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(markup=False, emoji=False, highlight=False, **kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(printable(text), **kwargs)


def make_console(*, stderr: bool = False) -> Console:
    """A console for the CLI; off a terminal (logs, CI, pipes) 200 columns wide, where
    Rich would squeeze tables into 80."""
    stream = sys.stderr if stderr else sys.stdout
    return SafeConsole(stderr=stderr, width=None if stream.isatty() else 200)


STATE_STYLES = {
    TrialState.COMPLETE: "green", TrialState.PRUNED: "yellow", TrialState.FAILED: "red",
    TrialState.RUNNING: "cyan", TrialState.QUEUED: "dim", TrialState.PAUSED: "magenta",
}


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def arrow(study: StudyRecord | Objective) -> str:
    return "↑" if study.sign > 0 else "↓"


def objective_values(study: StudyRecord, trial: Trial) -> list[str]:
    """The trial's value of each objective, formatted."""
    values = study.values_of(trial) or ()
    return [fmt(values[i] if i < len(values) else None) for i in range(len(study.objectives))]


def values_text(study: StudyRecord, trial: Trial) -> str:
    """The trial's objective values as `name=value` pairs."""
    return " ".join(f"{o.name}={v}"
                    for o, v in zip(study.objectives, objective_values(study, trial), strict=True))


def progress_view(progress: Progress) -> Group:
    counts, study = progress.counts, progress.study
    bar = ProgressBar(total=progress.budget, completed=progress.done, width=30)
    line = Table.grid(padding=(0, 1))
    line.add_row(
        Text(printable(study.name), style="bold"), bar,
        Text(f"{progress.done}/{progress.budget} done"),
        Text(f"{counts[TrialState.RUNNING]} running", style="cyan"),
        Text(f"{counts[TrialState.FAILED]} failed", style="red"),
        Text(f"{counts[TrialState.PRUNED]} pruned", style="yellow"),
        *([Text(f"{counts[TrialState.PAUSED]} paused", style="magenta")]
          if counts.get(TrialState.PAUSED) else []),
    )
    best = progress.best
    if study.multi_objective:
        best_text = f"Pareto front: {len(progress.front)} trials"
    else:
        best_text = (f"best {study.metric} {arrow(study)} {fmt(best.value)} "
                     f"(trial {best.number})" if best else "best: none yet")
    return Group(line, Text(f"{best_text} · elapsed {fmt_seconds(progress.elapsed)}"))


class ProgressDisplay:
    """A live panel on a terminal; one line per finished trial anywhere else (logs, CI)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live: Live | None = None

    def __enter__(self) -> ProgressDisplay:
        if self.console.is_terminal:
            self.live = Live(console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def __call__(self, progress: Progress) -> None:
        if self.live is not None:
            self.live.update(progress_view(progress))
            return
        if (trial := progress.trial) is not None and progress.study.multi_objective:
            self.console.print(
                f"trial {trial.number} {trial.state.value} {values_text(progress.study, trial)} · "
                f"{progress.done}/{progress.budget} done · front {len(progress.front)} · "
                f"elapsed {fmt_seconds(progress.elapsed)}"
            )
        elif (trial := progress.trial) is not None:
            self.console.print(
                f"trial {trial.number} {trial.state.value} {progress.study.metric}="
                f"{fmt(trial.value)} · {progress.done}/{progress.budget} done · best "
                f"{fmt(progress.best.value if progress.best else None)} · "
                f"elapsed {fmt_seconds(progress.elapsed)}"
            )


def trials_table(study: StudyRecord, trials: Sequence[Trial], *, title: str | None = None,
                 ranked: bool = True) -> Table:
    names: list[str] = []
    for trial in trials:
        names += [n for n in trial.params if n not in names]
    table = Table(title=title, title_justify="left")
    if ranked:
        table.add_column("rank", justify="right")
    table.add_column("trial", justify="right")
    table.add_column("state")
    for objective in study.objectives:
        table.add_column(f"{objective.name} {arrow(objective)}", justify="right")
    if study.constraints:
        table.add_column("feasible")
    table.add_column("best epoch", justify="right")  # counted from 1, as Keras prints it
    table.add_column("epochs", justify="right")
    table.add_column("time", justify="right")
    lineage = any(PBTSegment.of(t) is not None for t in trials)
    if lineage:
        for column in ("member", "gen", "copied"):
            table.add_column(column, justify="right")
    for name in names:
        table.add_column(name, justify="right")
    failed = any(t.state == TrialState.FAILED for t in trials)
    if failed:
        table.add_column("error", overflow="fold")
    for rank, trial in enumerate(trials, 1):
        cells = [str(rank)] if ranked else []
        cells += [
            str(trial.number), Text(trial.state.value, style=STATE_STYLES[trial.state]),
            *objective_values(study, trial),
            *([fmt(verdict(study, trial))] if study.constraints else []),
            fmt(shown_epoch(trial.best_epoch)), str(trial.epochs), fmt_seconds(trial.duration),
        ]
        if lineage:
            segment = PBTSegment.of(trial)
            cells += [fmt(segment and segment.member), fmt(segment and segment.generation),
                      fmt(segment and segment.copied_from)]
        cells += [fmt(trial.params.get(name)) for name in names]
        if failed:
            cells.append(trial.error_summary or "")
        table.add_row(*cells)
    return table


def schedule_table(study: StudyRecord, chain: Sequence[Trial]) -> Table:
    """The hyperparameter schedule behind a PBT model: one row per stretch of epochs."""
    table = Table(title="Schedule that produced this model", title_justify="left")
    for column in ("epochs", "trial", "member", "copied from", *analysis.explored(study),
                   f"{study.metric} {arrow(study)}"):
        table.add_column(column, justify="right")
    for row in analysis.schedule_rows(study, chain):
        table.add_row(*(fmt(cell) for cell in row))
    return table


def studies_table(summaries: Iterable[StudySummary]) -> Table:
    table = Table(title="Studies", title_justify="left")
    for column in ("study", "strategy", "metric", "trials", "complete", "running", "failed",
                   "pruned", "best"):
        table.add_column(column, justify="left" if column in ("study", "strategy", "metric")
                         else "right")
    for s in summaries:
        c = s.counts
        table.add_row(
            s.study.name, s.study.strategy,
            ", ".join(f"{o.name} {arrow(o)}" for o in s.study.objectives),
            str(sum(c.values())), str(c.get(TrialState.COMPLETE, 0)),
            str(c.get(TrialState.RUNNING, 0)), str(c.get(TrialState.FAILED, 0)),
            str(c.get(TrialState.PRUNED, 0)), fmt(s.best_value),
        )
    return table


def workers_table(records: Iterable[WorkerRecord], now: float,
                  graces: Mapping[int, float]) -> Table:
    """`graces`: the lease grace each worker (by id) is judged live or lost by."""
    table = Table(title="Workers", title_justify="left")
    for column in ("id", "host", "pid", "device", "state", "running", "heartbeat", "done"):
        table.add_column(column, justify="right" if column in ("id", "pid", "done") else "left")
    for w in records:
        age = now - w.heartbeat_at
        table.add_row(
            str(w.id), w.host, str(w.pid), w.device, w.status(now, graces[w.id]),
            f"{w.study} #{w.trial}" if w.trial is not None else "-",
            f"{age:.1f} s ago" if age < 60 else f"{fmt_seconds(age)} ago", str(w.trials_done),
        )
    return table
