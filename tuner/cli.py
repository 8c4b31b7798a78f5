"""The `tuner` command: each subcommand is a thin wrapper over the Python API."""

from __future__ import annotations

import contextlib
import functools
import logging
import shlex
import sys
import textwrap
from collections.abc import Callable
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.text import Text

from tuner.coordinator import CoordinatorOptions, Interrupted, lease_graces
from tuner.display import (
    ProgressDisplay,
    fmt,
    make_console,
    printable,
    schedule_table,
    studies_table,
    trials_table,
    values_text,
    workers_table,
)
from tuner.early_stop import RULES, make_early_stop
from tuner.errors import NoTunerDatabase, TunerError
from tuner.executors import make_executor
from tuner.fronts import label, verdict
from tuner.states import TrialState
from tuner.stdio import captured_stderr
from tuner.storage import DEFAULT_URL, Storage, StudyRecord, safe_url, shown_epoch
from tuner.strategies import PBT, STRATEGIES
from tuner.study import Study, rebuild_code

# Plain help (no markup in help texts, flags shown without a value type).
app = typer.Typer(
    help="Hyperparameter search for Keras models, with every trial in a SQL database.",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
    rich_markup_mode=None,
)
out = make_console()
err = make_console(stderr=True)

StorageOpt = Annotated[str, typer.Option(
    "--storage", envvar="TUNER_STORAGE", show_envvar=True,
    help="Database URL, e.g. sqlite:///tuner.db or postgresql+psycopg://user@host/db.",
)]
NameArg = Annotated[str, typer.Argument(help="Name of the study.", show_default=False)]

F = TypeVar("F", bound=Callable[..., Any])


def friendly(command: F) -> F:
    """Errors a user can cause end in one message and exit code 1, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (TunerError, ValueError) as exc:
            err.print(Text.assemble(("Error:", "bold red"), " ", printable(str(exc))),
                      soft_wrap=True)  # one line, however long: logs are grepped
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


# The choices of --strategy and --early-stop: the names the library knows.
Strategy = StrEnum("Strategy", {name.replace("-", "_"): name for name in STRATEGIES})  # type: ignore[misc]
EarlyStopRule = StrEnum("EarlyStopRule", {name: name for name in RULES})  # type: ignore[misc]


@app.command()
@friendly
def run(
    study_file: Annotated[Path, typer.Argument(help="Python file defining the study.",
                                               show_default=False)],
    storage: StorageOpt = DEFAULT_URL,
    name: Annotated[str | None, typer.Option(
        help="Study name.", show_default="the file's name")] = None,
    strategy: Annotated[Strategy | None, typer.Option(
        help="Search strategy.", show_default="bayes; a resumed study keeps its own")] = None,
    trials: Annotated[int, typer.Option(
        min=1, help="Trials in all, earlier runs included (pbt: the population).")] = 20,
    workers: Annotated[int | None, typer.Option(
        min=0, help="Local worker processes; 0 leaves the trials to `tuner worker` agents.",
        show_default="one per visible GPU, else 1")] = None,
    seed: Annotated[int | None, typer.Option(
        help="Seed of the study.", show_default="random; a resumed study keeps its own")] = None,
    epochs: Annotated[int | None, typer.Option(
        min=1, help="Epochs per trial.",
        show_default="the file's; a resumed study keeps its own")] = None,
    early_stop: Annotated[EarlyStopRule | None, typer.Option(
        help="Stop poor trials early, judged against the other trials.",
        show_default="the file's; a resumed study keeps its own")] = None,
    promotion: Annotated[bool, typer.Option(
        "--promotion", help="With --early-stop asha or hyperband: pause a trial at a rung, "
        "checkpointed, and resume it when later trials rank it among the best, rather than "
        "stop it for good.")] = False,
    mutable: Annotated[str | None, typer.Option(
        metavar="NAME,NAME", help="With --strategy pbt: the parameters it explores.",
        show_default="those marked mutable=True")] = None,
    allow_changed_file: Annotated[bool, typer.Option(
        "--allow-changed-file", help="Resume even though the study file changed (its code, "
        "space or settings); the change is recorded on the study.")] = False,
    top: Annotated[int, typer.Option(min=0, help="Rows of the ranked table at the end.")] = 10,
    artifacts: Annotated[str | None, typer.Option(
        help="Where trained weights and checkpoints go: a folder or an fsspec URL.",
        show_default="tuner-artifacts/NAME beside a SQLite file, else here")] = None,
    checkpoint_every: Annotated[str | None, typer.Option(
        metavar="60s|5m|3 epochs|off",
        help="How often a trial saves a checkpoint to resume from if its worker dies.",
        show_default="60s; a resumed study keeps its own")] = None,
    lease_grace: Annotated[float, typer.Option(
        min=1, help="Seconds without a heartbeat before a worker's trial (or this "
                    "coordinator's lease) is taken back.")] = CoordinatorOptions().lease_grace,
    ray: Annotated[str | None, typer.Option(
        "--ray", metavar="auto|ray://HOST:PORT|local",
        help="Run the workers as actors on a Ray cluster: one per GPU slot it offers "
             "(--workers N: N one-CPU actors instead). `local` starts Ray here.")] = None,
    per_gpu: Annotated[int, typer.Option(
        min=1, help="With --ray: trials sharing each GPU (fractional GPUs).")] = 1,
    gpus_per_trial: Annotated[float | None, typer.Option(
        min=0.01, help="With --ray: GPUs each trial gets.")] = None,
) -> None:
    """Run (or resume) a study: sample, train on local workers (or Ray's), rank."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Everything that can refuse the run does so before the study is stored.
    if ray is None and (per_gpu != 1 or gpus_per_trial is not None):
        raise typer.BadParameter("--per-gpu and --gpus-per-trial go with --ray "
                                 "(a `tuner worker` agent takes --per-gpu too)")
    chosen: str | PBT | None = strategy.value if strategy else None
    rule = make_early_stop(early_stop.value) if early_stop else None
    if promotion:
        if rule is None or "promotion" not in getattr(rule, "__dataclass_fields__", {}):
            raise typer.BadParameter("--promotion goes with --early-stop asha or hyperband")
        rule = replace(rule, promotion=True)
    if mutable is not None:
        if strategy != Strategy.pbt:
            raise typer.BadParameter("--mutable goes with --strategy pbt")
        chosen = PBT(mutable=[n.strip() for n in mutable.split(",") if n.strip()])
    executor = make_executor(workers, ray=ray, per_gpu=per_gpu, gpus_per_trial=gpus_per_trial)
    with captured_stderr():  # TensorFlow's start-up chatter, unless the import fails
        study = Study.create(name, definition=study_file, storage=storage, strategy=chosen,
                             seed=seed, epochs=epochs,
                             early_stop=rule,
                             artifacts=artifacts, load_if_exists=True,
                             allow_changed_file=allow_changed_file,
                             checkpoint_every=checkpoint_every)
    counts = study.counts()
    done = sum(counts[s] for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAILED))
    record = study.record
    out.print(Text.assemble(
        "Study ", (record.name, "bold"),
        f" · {record.strategy} · {judged_by(record)} · {safe_url(storage)}",
        f" · resuming with {done} trials done" if done else ""))
    try:
        with ProgressDisplay(out) as display:
            study.optimize(trials, workers=workers, executor=executor, on_progress=display,
                           options=CoordinatorOptions(lease_grace=lease_grace))
    except BaseException as exc:
        if study.created and not study.trials:
            # Refused before its first trial (a cluster too small, Ctrl-C at start-up):
            # leave nothing behind, so the same command simply runs again.
            with contextlib.suppress(TunerError):  # the first error is the one to tell
                study.delete()
        if not isinstance(exc, Interrupted):
            raise
        # A resumed study keeps its strategy, seed, epochs and early stopping.
        command = ["tuner", "run", str(study_file), "--storage", safe_url(storage),
                   "--name", record.name, "--trials", str(trials)]
        command += ["--workers", str(workers)] if workers is not None else []
        command += ["--ray", ray] if ray is not None else []
        command += ["--per-gpu", str(per_gpu)] if per_gpu != 1 else []
        command += ["--gpus-per-trial", str(gpus_per_trial)] if gpus_per_trial else []
        err.print(Text.assemble(("Stopped:", "yellow"),
                                f" {exc}.\nResume with:\n  {shlex.join(command)}"))
        raise typer.Exit(130) from None
    if record.multi_objective:
        front = study.best_trials[:top]
        if front:
            out.print(trials_table(record, front, title=f"Pareto front of {record.name}"))
        return
    ranked = study.ranked()[:top]
    if ranked:
        out.print(trials_table(record, ranked, title=f"Top {len(ranked)} trials of {record.name}"))


@app.command()
@friendly
def studies(storage: StorageOpt = DEFAULT_URL) -> None:
    """List the studies in the database with their trial counts and best values."""
    try:
        summaries = Storage(storage, create=False).list_studies()
    except NoTunerDatabase as exc:  # nothing to list is not an error
        out.print(str(exc))
        return
    if not summaries:
        out.print(f"No studies in {safe_url(storage)}.")
        return
    out.print(studies_table(summaries))


@app.command()
@friendly
def trials(
    name: NameArg,
    storage: StorageOpt = DEFAULT_URL,
    top: Annotated[int | None, typer.Option(min=1, help="Show only the best K.")] = None,
    state: Annotated[list[TrialState] | None, typer.Option(
        case_sensitive=False, help="Only trials in this state (repeatable).")] = None,
    sort: Annotated[str, typer.Option(
        help="Order by 'rank' (best first), 'number', 'value', 'duration', 'epochs' "
             "or a parameter's name.")] = "rank",
    pareto: Annotated[bool, typer.Option(
        "--pareto", help="Only the Pareto front (completed trials that keep the "
                         "constraints and that no other beats on every objective).")] = False,
) -> None:
    """Show a study's trials, best first."""
    study = Study.load(name, storage=storage)
    chosen = study.ranked(states=set(state) if state else None, sort=sort)
    if pareto:
        front = {t.number for t in study.best_trials}
        chosen = [t for t in chosen if t.number in front]
    chosen = chosen[:top] if top else chosen
    if not chosen:
        out.print(f"Study {name!r} has no trials" + (" in that state." if state else " yet."))
        return
    out.print(trials_table(study.record, chosen, title=f"Trials of {name}",
                           ranked=sort == "rank"))


@app.command()
@friendly
def best(
    name: NameArg,
    storage: StorageOpt = DEFAULT_URL,
    export: Annotated[Path | None, typer.Option(
        help="Save the best trial's trained model (its best epoch) to this .keras file.")] = None,
    trial_number: Annotated[int | None, typer.Option(
        "--trial", min=0, help="Show (and --export) this trial, e.g. one of the Pareto "
                               "front, rather than the best.")] = None,
) -> None:
    """Show the best trial (with several objectives, the Pareto front): its parameters,
    value, best epoch, and how to load its model."""
    study = Study.load(name, storage=storage)
    record = study.record
    if record.multi_objective and trial_number is None:
        show_front(study, export)
        return
    trial = study.best_trial if trial_number is None else study.trial(trial_number)
    if export is not None:
        with captured_stderr():
            study.load_model(trial).save(str(export))
        out.print(f"Saved the model of trial #{trial.number} to {export}")
    epoch = "" if trial.best_epoch is None else f" at epoch {shown_epoch(trial.best_epoch)}"
    values = (f"{record.metric} = {fmt(trial.value)} ({record.direction})"
              if not record.multi_objective else values_text(record, trial))
    out.print(Text.assemble("Best trial of " if trial_number is None else "Trial of ",
                            (name, "bold"), f": #{trial.number}, {values}{epoch}"))
    if record.constraints:
        out.print(f"Constraints ({', '.join(map(str, record.constraints))}): "
                  f"{verdict(record, trial)}")
    out.print("Parameters:")
    for key, value in trial.params.items():
        out.print(f"  {key} = {value!r}")
    schedule = study.schedule(trial)
    if len(schedule) > 1:
        out.print(schedule_table(record, schedule))
    out.print("Its model, trained (--export FILE saves it) or to train again:")
    out.print(textwrap.indent(rebuild_code(name, storage, trial.params), "  "), end="")


def judged_by(record: StudyRecord) -> str:
    """What a study is judged by: each objective with its direction, and the constraints."""
    text = ", ".join(map(label, record.objectives))
    return text + "".join(f" · {c}" for c in record.constraints)


def show_front(study: Study, export: Path | None) -> None:
    record = study.record
    if export is not None:
        raise TunerError(f"study {record.name!r} has {len(record.objectives)} objectives: "
                         "pick a trial of its Pareto front with --trial N to --export")
    front = study.best_trials
    if not front:
        raise TunerError(f"study {record.name!r} has no complete trial"
                         + (" that keeps its constraints" if record.constraints else "") + " yet")
    out.print(Text.assemble("Pareto front of ", (record.name, "bold"), f": {len(front)} of "
                            f"{len(study.trials)} trials, judged by {judged_by(record)}"))
    out.print(trials_table(record, front, title=None))
    out.print(f"Each one's parameters and model: tuner best {shlex.quote(record.name)} "
              "--trial N [--export FILE]")


def write_out(text: str, output: Path | None, what: str) -> None:
    """To stdout, or to the file `--out` names (an unwritable path is one clear error)."""
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise TunerError(f"cannot write {output}: {exc.strerror or exc}") from None
    err.print(f"Wrote {what} to {output}")


class Format(StrEnum):
    csv = "csv"
    json = "json"


@app.command()
@friendly
def export(
    name: NameArg,
    storage: StorageOpt = DEFAULT_URL,
    format: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.csv,
    output: Annotated[Path | None, typer.Option("--out", help="File to write [default: stdout].")]
    = None,
    tensorboard: Annotated[Path | None, typer.Option(
        "--tensorboard", help="Write the finished trials as TensorBoard HParams runs into this "
        "folder instead (`tensorboard --logdir DIR`, HPARAMS tab).")] = None,
) -> None:
    """Export every trial of a study (JSON includes the per-epoch metrics)."""
    if tensorboard is not None:
        from tuner.tensorboard_export import export_tensorboard  # loads TensorFlow

        with captured_stderr():
            runs = export_tensorboard(Storage(storage, create=False), name, tensorboard)
        err.print(f"Wrote {runs} runs to {tensorboard}: tensorboard --logdir {tensorboard}")
        return
    study = Study.load(name, storage=storage)
    trials = study.trials
    write_out(study.export_trials(format.value, trials), output, f"{len(trials)} trials")


class ReportFormat(StrEnum):
    html = "html"
    md = "md"


@app.command()
@friendly
def report(
    name: NameArg,
    storage: StorageOpt = DEFAULT_URL,
    format: Annotated[ReportFormat, typer.Option(
        "--format", help="html, or md (Markdown, charts as data-URI images).")] = ReportFormat.html,
    output: Annotated[Path | None, typer.Option("--out", help="File to write [default: stdout].")]
    = None,
) -> None:
    """Write a study's report, one self-contained file for a pull request or a paper: setup,
    top trials, the best configuration and how to rebuild it, charts."""
    from tuner.report import render_report  # matplotlib loads for this command only

    write_out(render_report(Storage(storage, create=False), name, format.value), output,
              "the report")


@app.command()
@friendly
def delete(
    name: NameArg,
    storage: StorageOpt = DEFAULT_URL,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a study and all its trials."""
    study = Study.load(name, storage=storage)
    count = len(study.trials)
    if not yes and not typer.confirm(f"Delete study {name!r} and its {count} trials?"):
        raise typer.Exit(1)
    study.delete()
    out.print(f"Deleted study {name!r} ({count} trials).")


@app.command()
@friendly
def worker(
    storage: StorageOpt = DEFAULT_URL,
    study: Annotated[str | None, typer.Option(
        help="Serve only this study [default: any study whose file is on this host].")] = None,
    gpus: Annotated[str, typer.Option(
        help="GPUs to use: 'all', 'none' or ids such as '0,2'.")] = "all",
    per_gpu: Annotated[int, typer.Option(
        min=1, help="Worker processes per GPU (small models share a GPU).")] = 1,
    workers: Annotated[int | None, typer.Option(
        min=1, help="Worker processes on a host without GPUs [default: 1].")] = None,
    heartbeat: Annotated[float, typer.Option(
        min=0.1, help="Seconds between heartbeats; keep it well under the coordinator's "
                      "--lease-grace.")] = 5.0,
) -> None:
    """Run trials of a shared database on this host's GPUs, until Ctrl-C or SIGTERM."""
    from workers.agent import agent_devices, run_agent
    from workers.pool import REPLACE_AFTER

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    devices = agent_devices(gpus, per_gpu, workers)
    options = replace(REPLACE_AFTER, heartbeat_interval=heartbeat)

    def started(processes: Any) -> None:
        where = ", ".join(sorted({f"gpu:{d}" if d is not None else "cpu" for d in devices}))
        out.print(f"Worker agent: {len(devices)} processes ({where}) serving "
                  f"{repr(study) if study else 'every study'} in {safe_url(storage)}; "
                  f"logs in {processes.log_dir}. Ctrl-C to stop.")

    run_agent(storage, study=study, devices=devices, options=options, on_start=started)
    out.print("Stopped; in-flight trials went back to the queue.")


@app.command("workers")
@friendly
def list_workers(
    storage: StorageOpt = DEFAULT_URL,
    all_: Annotated[bool, typer.Option("--all", help="Include stopped workers.")] = False,
) -> None:
    """List the workers: host, device, the trial each runs, last heartbeat, trials done."""
    store = Storage(storage, create=False)
    records = store.workers(alive_only=not all_)
    if not records:
        out.print(f"No {'' if all_ else 'live '}workers in {safe_url(storage)}.")
        return
    out.print(workers_table(records, store.now(), lease_graces(store, records)))


@app.command()
@friendly
def dashboard(
    storage: StorageOpt = DEFAULT_URL,
    host: Annotated[str, typer.Option(
        help="Address to listen on. Any other than loopback needs a token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    token: Annotated[str | None, typer.Option(
        envvar="TUNER_DASHBOARD_TOKEN", show_envvar=True,
        help="A secret every request must carry (?token=... once, then a cookie; or "
             "'Authorization: Bearer ...'), 16 characters or more.")] = None,
    allowed_host: Annotated[list[str] | None, typer.Option(
        "--allowed-host", metavar="NAME",
        help="Also answer requests for this host name (repeatable; *.domain for its "
             "subdomains), e.g. behind a proxy. On loopback other names are refused, so that "
             "no web page can read the dashboard by pointing its own name here; beyond "
             "loopback, names are checked only if given.")] = None,
) -> None:
    """Serve the read-only web dashboard of studies, trials and workers (and its JSON API)."""
    from tuner.dashboard import check_bind, serve
    from tuner.dashboard.app import as_host_header

    check_bind(host, token)
    store = Storage(storage, create=False)  # a bad database is one clear error, before serving
    shown = f"http://{as_host_header(host)}:{port}/" + (f"?token={token}" if token else "")
    serve(store, host=host, port=port, token=token, allowed_hosts=allowed_host or (),
          ready=lambda: out.print(f"Dashboard of {safe_url(storage)} on {shown} (Ctrl-C to "
                                  "stop)"))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
