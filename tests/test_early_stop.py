"""Early stopping across trials: the rules' maths, and real studies where some
configurations cannot learn."""

from __future__ import annotations

import pytest

from tests.conftest import STUDIES, run_cli
from tuner import InProcess, Study, TrialState
from tuner.early_stop import (
    ASHA,
    Curves,
    Hyperband,
    MedianStop,
    bracket_of,
    bracket_weights,
    early_stop_from_dict,
    make_early_stop,
    promotable,
    rungs,
)
from tuner.storage.records import Trial
from tuner.strategies import Bayes


def curves(values, finished=(), max_epochs=9, seed=0):
    return Curves(values, frozenset(finished), max_epochs, seed)


def test_rungs_are_geometric_below_the_last_epoch():
    assert rungs(1, 3, 9) == [1, 3]
    assert rungs(1, 3, 10) == [1, 3, 9]
    assert rungs(2, 2, 20) == [2, 4, 8, 16]


@pytest.mark.parametrize("value, rivals, eta, expected", [
    (0.9, [], 3, True),                     # the first at a rung goes on
    (0.5, [0.9], 3, False),                 # fewer than eta: only the best so far goes on
    (0.9, [0.5], 3, True),
    (0.7, [0.9, 0.8, 0.1, 0.2, 0.3], 3, False),  # 6 at the rung: the top 2 go on, 0.7 is 3rd
    (0.85, [0.9, 0.8, 0.1, 0.2, 0.3], 3, True),
    (0.5, [0.9, 0.8, 0.1, 0.2, 0.3], 3, False),
    (None, [], 3, False),                   # no finite value: stop
    (0.5, [0.5, 0.5, 0.5], 2, True),        # ties go on
])
def test_promotion_keeps_the_top_fraction(value, rivals, eta, expected):
    assert promotable(value, rivals, eta) is expected


def test_asha_judges_only_at_rungs():
    rule = ASHA(min_epochs=1, reduction_factor=3)
    data = curves({0: [0.9, 0.9, 0.9], 1: [0.1, 0.1, 0.1], 2: [0.5]}, finished=[0])
    assert rule.should_stop(1, 1, data)          # rung 1: worse than trial 0
    assert not rule.should_stop(1, 2, data)      # epoch 2 is no rung
    assert not rule.should_stop(0, 1, data)      # the best goes on
    assert rule.should_stop(1, 3, data)          # rung 3


def test_median_rule_waits_for_warmup_and_enough_trials():
    rule = MedianStop(warmup_epochs=2, min_trials=3)
    good = {n: [0.8, 0.9, 0.9] for n in range(3)}
    data = curves({**good, 9: [0.1, 0.1]}, finished=[0, 1, 2])
    assert not rule.should_stop(9, 1, data)      # warm-up
    assert rule.should_stop(9, 2, data)
    assert not rule.should_stop(0, 2, data)      # as good as the median
    few = curves({0: [0.9, 0.9], 9: [0.1, 0.1]}, finished=[0])
    assert not rule.should_stop(9, 2, few)       # one trial is no median
    running_short = curves({**{n: [0.9] for n in range(3)}, 9: [0.1, 0.1]})
    assert not rule.should_stop(9, 2, running_short)  # others have not reached epoch 2


def test_hyperband_brackets_are_deterministic_and_weighted():
    weights = bracket_weights(1, 27, 3)
    assert len(weights) == 4 and weights[0] > weights[-1] and abs(sum(weights) - 1) < 1e-9
    draws = [bracket_of(n, 5, weights) for n in range(2000)]
    assert draws == [bracket_of(n, 5, weights) for n in range(2000)]
    shares = [draws.count(b) / len(draws) for b in range(4)]
    assert all(abs(s - w) < 0.05 for s, w in zip(shares, weights, strict=True))


def test_rules_round_trip_through_the_database_form():
    for rule in (MedianStop(warmup_epochs=3), ASHA(min_epochs=2, reduction_factor=2),
                 Hyperband(min_epochs=1, reduction_factor=4)):
        assert early_stop_from_dict(rule.to_dict()) == rule
    assert make_early_stop("asha") == ASHA()
    with pytest.raises(ValueError, match="median, asha, hyperband"):
        make_early_stop("patience")
    with pytest.raises(ValueError):
        ASHA(reduction_factor=1)


def test_bayes_learns_from_pruned_trials():
    """A pruned trial reaches Optuna as PRUNED with its last value, as Optuna's pruners do."""
    from tuner.space import Float, Space

    space = Space(x=Float(0.0, 1.0))
    pruned = Trial(id=1, number=0, state=TrialState.PRUNED, params={"x": 0.9}, value=0.2,
                   epochs=3)
    strategy = Bayes(n_startup_trials=2)
    strategy.start(space, direction="maximize", seed=0, trials=[pruned])
    params = strategy.ask(1, space)
    strategy.tell(Trial(id=2, number=1, state=TrialState.PRUNED, params=params, value=0.1,
                        epochs=1))
    states = [t.state.name for t in strategy._study.trials]
    assert states == ["PRUNED", "PRUNED"]
    assert strategy._study.trials[0].intermediate_values == {2: 0.2}
    assert strategy._study.trials[1].intermediate_values == {0: 0.1}


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["median", "asha", "hyperband"])
def test_rules_stop_hopeless_trials_and_let_good_ones_finish(rule, sqlite_url):
    """4 good configurations, then 4 that cannot learn (lr=1e-7); each kind trains the
    same way, so every verdict is known in advance."""
    study = Study.create(definition=STUDIES / "learners.py", storage=sqlite_url,
                         strategy="grid", early_stop=rule, seed=4)
    study.optimize(trials=8, executor=InProcess())
    trials = {t.number: t for t in study.trials}
    good, bad = range(4), range(4, 8)
    for n in good:
        assert trials[n].state == TrialState.COMPLETE and trials[n].epochs == 9
    expected_pruned = set(bad)
    if rule == "hyperband":  # only where a good trial shares the bracket, and it can stop
        weights = bracket_weights(1, 9, 3)
        last = len(weights) - 1
        bracket = {n: bracket_of(n, 4, weights) for n in trials}
        expected_pruned = {n for n in bad if bracket[n] != last
                           and any(bracket[g] == bracket[n] for g in good)}
        assert expected_pruned and expected_pruned != set(bad)  # this seed shows both
    assert {n for n in bad if trials[n].state == TrialState.PRUNED} == expected_pruned
    for n in expected_pruned:
        assert trials[n].epochs < 9 and trials[n].value is not None  # best so far is kept
    ranked = study.ranked()
    assert [t.state for t in ranked[:4]] == [TrialState.COMPLETE] * 4  # pruned rank after


@pytest.mark.slow
def test_cli_early_stop_reaches_the_worker_processes(sqlite_url):
    bad = run_cli("run", str(STUDIES / "learners.py"), "--storage", sqlite_url,
                  "--early-stop", "sometimes", timeout=120)
    assert bad.returncode == 2 and "sometimes" in bad.stderr
    # One worker, so the grid runs in order: 4 good trials, then a hopeless one.
    run = run_cli("run", str(STUDIES / "learners.py"), "--storage", sqlite_url,
                  "--strategy", "grid", "--early-stop", "asha", "--trials", "5",
                  "--workers", "1")
    assert run.returncode == 0, run.stderr
    study = Study.load("learners", storage=sqlite_url)
    assert study.record.settings["early_stop"] == ASHA().to_dict()
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4 + [TrialState.PRUNED]
    assert "PRUNED" in run.stdout


def test_promotion_resumes_a_paused_trial_once_later_ones_rank_below_it():
    rule = ASHA(min_epochs=1, reduction_factor=3, promotion=True)
    assert early_stop_from_dict(rule.to_dict()) == rule
    assert "promotion" not in ASHA().to_dict()  # the stored form of studies made before it
    at_rung = {0: [0.9, 0.9, 0.9], 1: [0.8]}  # 1 paused at rung 1: only the best goes on
    assert rule.promotions({1: 1}, curves(at_rung)) == []
    worse = {n: [0.1] for n in range(2, 6)}  # six at the rung now: the top two go on
    assert rule.promotions({1: 1, 2: 1, 3: 1}, curves({**at_rung, **worse})) == [1]
    bands = Hyperband(promotion=True)
    assert early_stop_from_dict(bands.to_dict()) == bands


def test_promotion_pauses_at_rungs_and_resumes_the_promoted_from_their_checkpoint(
        sqlite_url, tmp_path):
    """A grid of a good learner, a slower one and four that cannot learn, one worker, the
    run killed mid-bracket and resumed: every trial stops at a rung unless the rung's rule
    let it on; the slower learner, paused at the first rung, is promoted once the hopeless
    ones rank below it and goes on from its checkpoint; nothing is left paused."""
    import os
    import signal
    import time

    from tests.conftest import start_cli

    args = ["run", str(STUDIES / "rungs.py"), "--storage", sqlite_url, "--trials", "6",
            "--workers", "1", "--strategy", "grid"]
    run = start_cli(*args)
    deadline = time.monotonic() + 180
    while True:
        assert time.monotonic() < deadline, "no trial paused"
        try:
            counts = Study.load("rungs", storage=sqlite_url).counts()
        except Exception:  # not created yet
            counts = {}
        if counts.get(TrialState.PAUSED, 0) >= 2:
            break
        time.sleep(0.1)
    os.killpg(run.pid, signal.SIGKILL)  # the coordinator and its worker, mid-bracket
    run.communicate(timeout=60)
    resumed = start_cli(*args)
    _, stderr = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, stderr

    study = Study.load("rungs", storage=sqlite_url)
    trials = {t.params["lr"]: t for t in study.trials}
    assert len(trials) == 6 and study.counts()[TrialState.PAUSED] == 0
    assert all(t.epochs in (2, 4, 8) for t in trials.values())  # rungs 2 and 4, or the end
    best, slower = trials[3e-2], trials[1e-2]
    assert best.state == TrialState.COMPLETE and best.epochs == 8
    # Paused at the first rung behind the best, promoted once the hopeless ones ranked
    # below it, on from its checkpoint to the end.
    assert slower.state == TrialState.COMPLETE and slower.epochs == 8
    assert "resumed_at_epoch" in slower.attrs
    curve = [e["epoch"] for e in study.storage.epochs([slower.id])[slower.id]]
    assert curve == list(range(slower.epochs))  # one curve across the pause
    hopeless = [t for lr, t in trials.items() if lr < 1e-6]
    assert all(t.state == TrialState.PRUNED and t.epochs < 8 for t in hopeless)
