"""What a user types, as a new user and as a hostile one would: names with markup, bad
options, a study file's own settings. Every error is one line and a non-zero exit, and a
refused run leaves nothing in the database."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import ROOT, STUDIES, run_cli
from tuner import InProcess, Study, TrialState
from tuner.display import printable
from tuner.storage import Storage

TRIVIAL = str(STUDIES / "trivial.py")


def one_line_error(result, *needles: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_a_name_with_markup_is_shown_as_typed_everywhere(sqlite_url):
    name = "a[/bold]b [red]x[/] :smile:"
    run = run_cli("run", TRIVIAL, "--name", name, "--trials", "3", "--workers", "1",
                  "--storage", sqlite_url, "--strategy", "random")
    assert run.returncode == 0, run.stderr
    assert f"Study {name} ·" in run.stdout and f"Top 3 trials of {name}" in run.stdout
    for command in (["studies"], ["trials", name], ["best", name]):
        shown = run_cli(*command, "--storage", sqlite_url)
        assert shown.returncode == 0, shown.stderr
        assert name in shown.stdout, shown.stdout


def test_a_name_with_control_characters_is_refused(sqlite_url):
    refused = run_cli("run", TRIVIAL, "--name", "evil\x1b[2J", "--storage", sqlite_url)
    one_line_error(refused, "control characters")
    assert "\x1b" not in refused.stderr  # shown escaped, never sent to the terminal
    assert Storage(sqlite_url).list_studies() == []


def test_printable_escapes_terminal_control_sequences():
    assert printable("a\x1b[31mb\x07\n\tc") == "a\\x1b[31mb\\x07\n\tc"


def test_the_demo_study_runs_under_grid_and_pbt(sqlite_url, tmp_path):
    for strategy in ("grid", "pbt"):
        run = run_cli("run", str(ROOT / "studies" / "digits_mlp.py"), "--strategy", strategy,
                      "--name", strategy, "--trials", "2", "--epochs", "2", "--workers", "1",
                      "--storage", sqlite_url, "--artifacts", str(tmp_path / strategy))
        assert run.returncode == 0, run.stderr
        trials = Study.load(strategy, storage=sqlite_url).trials
        assert len(trials) == 2 and all(t.state == TrialState.COMPLETE for t in trials)


def test_a_refused_run_leaves_nothing_in_the_database(sqlite_url):
    no_grid = run_cli("run", TRIVIAL, "--strategy", "grid", "--storage", sqlite_url)
    one_line_error(no_grid, "parameter 'x'", "step")
    no_mutable = run_cli("run", TRIVIAL, "--strategy", "pbt", "--storage", sqlite_url)
    one_line_error(no_mutable, "PBT needs mutable parameters", "--mutable")
    unknown = run_cli("run", TRIVIAL, "--strategy", "pbt", "--mutable", "x,nope",
                      "--storage", sqlite_url)
    one_line_error(unknown, "not parameters of the space: nope")
    assert Storage(sqlite_url).list_studies() == []


def test_mutable_names_what_pbt_explores_and_a_resume_keeps_it(sqlite_url, tmp_path):
    args = ["run", TRIVIAL, "--strategy", "pbt", "--mutable", "x", "--epochs", "4",
            "--storage", sqlite_url, "--workers", "1", "--artifacts", str(tmp_path)]
    first = run_cli(*args, "--trials", "2")
    assert first.returncode == 0, first.stderr
    resumed = run_cli("run", TRIVIAL, "--strategy", "pbt", "--storage", sqlite_url,
                      "--trials", "3", "--workers", "1")  # neither --mutable nor --epochs
    assert resumed.returncode == 0, resumed.stderr
    study = Study.load("trivial", storage=sqlite_url)
    assert study.record.settings["strategy_options"]["mutable"] == ["x"]
    assert study.record.settings["epochs"] == 4
    explored = [t for t in study.trials if t.attrs["copied_from"] is not None]
    for trial in explored:  # only x was explored: i is the copied member's own
        source = next(t for t in study.trials if t.number == trial.attrs["segment"]["restore"])
        assert trial.params["i"] == source.params["i"]


def test_a_resume_without_epochs_keeps_the_studys_own(sqlite_url):
    tiny = str(STUDIES / "tiny.py")
    first = run_cli("run", tiny, "--epochs", "1", "--trials", "1", "--workers", "1",
                    "--strategy", "random", "--storage", sqlite_url)
    assert first.returncode == 0, first.stderr
    resumed = run_cli("run", tiny, "--trials", "2", "--workers", "1", "--storage", sqlite_url)
    assert resumed.returncode == 0, resumed.stderr
    assert [t.epochs for t in Study.load("tiny", storage=sqlite_url).trials] == [1, 1]
    different = run_cli("run", tiny, "--epochs", "2", "--trials", "3", "--storage", sqlite_url)
    one_line_error(different, "settings", "'epochs': 1")


def test_progress_lines_count_each_trial_as_it_finishes(sqlite_url):
    run = run_cli("run", TRIVIAL, "--trials", "6", "--workers", "1", "--strategy", "random",
                  "--storage", sqlite_url)
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stdout.splitlines() if line.startswith("trial ")]
    assert [int(re.search(r"(\d+)/6 done", line)[1]) for line in lines] == [1, 2, 3, 4, 5, 6]
    best = float("-inf")
    for line in lines:  # the best so far, as of that trial
        best = max(best, float(re.search(r"score=(\S+)", line)[1]))
        assert float(re.search(r"best (\S+)", line)[1]) == pytest.approx(best, rel=1e-3)


def test_best_epoch_is_counted_from_one_everywhere(sqlite_url):
    study = Study.create(definition=STUDIES / "tiny.py", storage=sqlite_url, strategy="random",
                         seed=2)
    study.optimize(trials=1, executor=InProcess())
    trial = study.best_trial
    best = run_cli("best", "tiny", "--storage", sqlite_url)
    assert f"at epoch {trial.best_epoch + 1}" in best.stdout
    listing = run_cli("trials", "tiny", "--storage", sqlite_url)
    header = next(line for line in listing.stdout.splitlines() if "best epoch" in line)
    row = next(line for line in listing.stdout.splitlines() if line.startswith("│"))
    cells = dict(zip([c.strip() for c in header.split("┃")[1:-1]],
                     [c.strip() for c in row.split("│")[1:-1]], strict=True))
    assert cells["best epoch"] == str(trial.best_epoch + 1)
    assert cells["epochs"] == str(trial.epochs)


def test_help_texts_read_cleanly():
    result = run_cli("run", "--help", timeout=60)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert not re.search(r"\w \.|\w ;", text), text
    for option, default in (("--strategy", "bayes"), ("--workers", "one per visible GPU"),
                            ("--seed", "random"), ("--name", "the file's name")):
        assert re.search(rf"{option}.*?\[default: \(?{re.escape(default)}", text), option
    for command in ("run", "delete", "trials", "studies", "best", "dashboard"):
        shown = run_cli(command, "--help", timeout=60).stdout
        assert "<bool>" not in shown, command


def test_a_study_file_may_name_its_study(sqlite_url, tmp_path):
    path = tmp_path / "named.py"
    path.write_text(Path(TRIVIAL).read_text() + '\nname = "custom [name]"\n')
    run = run_cli("run", str(path), "--trials", "1", "--workers", "1", "--storage", sqlite_url)
    assert run.returncode == 0, run.stderr
    assert [s.study.name for s in Storage(sqlite_url).list_studies()] == ["custom [name]"]


def test_errors_print_only_the_tools_own_words(sqlite_url):
    # The Keras study imports TensorFlow, whose start-up logging must not precede the error.
    refused = run_cli("run", str(ROOT / "studies" / "digits_mlp.py"), "--strategy", "pbt",
                      "--mutable", "nope", "--storage", sqlite_url)
    one_line_error(refused, "not parameters of the space: nope")


def test_a_run_its_executor_refuses_leaves_nothing_behind(sqlite_url):
    refused = run_cli("run", TRIVIAL, "--ray", "local", "--workers", "64",
                      "--storage", sqlite_url)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "Error: " in refused.stderr and "64" in refused.stderr
    assert Storage(sqlite_url).list_studies() == []


@pytest.mark.parametrize("args, message", [
    (["--seed", "99999999999"], "seed: 99999999999 must be in [0, 2**31)"),
    (["--seed", "-1"], "must be in [0, 2**31)"),
    (["--name", "x" * 201], "1 to 200 characters"),
    (["--checkpoint-every", "soon"], "checkpoint_every: 'soon' is not an interval"),
    (["--early-stop", "asha", "--promotion", "--checkpoint-every", "off"],
     "promotion pauses trials at a checkpoint"),
    (["--strategy", "grid", "--mutable", "x"], "--mutable goes with --strategy pbt"),
    (["--early-stop", "median", "--promotion"], "--promotion goes with --early-stop asha"),
])
def test_bad_run_options_are_one_clear_message(args, message, storage_url):
    result = run_cli("run", TRIVIAL, "--storage", storage_url, *args)
    if message.startswith("--"):  # a usage error: exit 2
        assert result.returncode == 2 and message in result.stderr
        assert "Traceback" not in result.stderr
    else:
        one_line_error(result, message)
    assert Storage(storage_url).list_studies() == []


@pytest.mark.parametrize("command", [["studies"], ["trials", "x"], ["best", "x"],
                                     ["export", "x"], ["report", "x"], ["workers"],
                                     ["dashboard", "--port", "1"]])
def test_read_only_commands_create_nothing(command, storage_url, tmp_path):
    engine = sa.create_engine(storage_url)
    before = sa.inspect(engine).get_table_names()
    result = run_cli(*command, "--storage", storage_url)
    assert sa.inspect(engine).get_table_names() == before == []
    engine.dispose()
    assert "Traceback" not in result.stdout + result.stderr
    assert "holds no tuner studies" in result.stdout + result.stderr
    assert result.returncode == (0 if command == ["studies"] else 1)
    if storage_url.startswith("sqlite"):
        missing = tmp_path / "nothing-here.db"
        again = run_cli(*command, "--storage", f"sqlite:///{missing}")
        assert not missing.exists() and "there is no file" in again.stdout + again.stderr
