"""Parameters first met during a trial (in a HyperModel's fit, or behind a branch the default
build does not take) reach the trials queued before the space grew: each strategy completes
their values (`Strategy.complete`) and the coordinator stores them while they are queued."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

import pytest

from tests.conftest import STUDIES
from tuner import CoordinatorOptions, InProcess, Study, TrialState, load_definition
from tuner.space import Bool, Choice, Float, Int, Space, canonical
from tuner.storage.records import Trial
from tuner.strategies import PBT, Bayes, GridSearch, RandomSearch, Strategy

STUDY = STUDIES / "discovered_params.py"


def trial(number: int, params: dict[str, Any], value: float | None = 0.5,
          state: TrialState = TrialState.COMPLETE) -> Trial:
    return Trial(id=number + 1, number=number, state=state, params=params, value=value)


def started(strategy: Strategy, space: Space, *, seed: int = 0,
            settings: dict[str, Any] | None = None) -> Strategy:
    strategy.start(space, direction="maximize", seed=seed, trials=[], settings=settings)
    return strategy


def grown(space: Space, **params: Any) -> Space:
    """`space` with parameters appended, as a trial that met them stores it."""
    bigger = space.copy()
    for name, param in params.items():
        bigger.add(name, param)
    return bigger


def with_optimizer(space: Space) -> Space:
    """A new parent and its conditional child (met only under "sgd"), and a plain one."""
    return grown(space, opt=Choice(["adam", "sgd"]),
                 momentum=Float(0.5, 0.99, when={"opt": ["sgd"]}), shuffle=Bool())


def assert_completed(space: Space, queued: dict[str, Any], values: dict[str, Any]) -> None:
    """`values` keep what was queued and hold exactly the active parameters of `space`."""
    assert {k: values[k] for k in queued} == queued
    assert space.active(values) == values
    for param in space:
        assert (param.name in values) == param.is_active(values), (param.name, values)
        if param.name in values:
            assert param.contains(values[param.name]), (param.name, values)


# -- random ------------------------------------------------------------------------------


def test_random_completes_from_the_trial_s_own_seed_as_if_the_space_had_been_known():
    old = Space(units=Int(16, 64, step=16))
    new = with_optimizer(old)
    one, two = started(RandomSearch(), old, seed=4), started(RandomSearch(), old, seed=4)
    completed = []
    for number in range(40):
        queued = one.ask(number, old)
        values = one.complete(number, queued, new)
        assert_completed(new, queued, values)
        assert values == two.complete(number, queued, new)  # any process, any time
        assert values == two.ask(number, new)
        completed.append(values)
    assert {v["opt"] for v in completed} == {"adam", "sgd"}
    assert {v["shuffle"] for v in completed} == {False, True}
    assert len({v["momentum"] for v in completed if "momentum" in v}) > 5


def test_random_completes_a_branch_the_queued_values_take():
    """The grown space holds a child under a value the queued trial already has."""
    old = Space(layers=Int(1, 3))
    new = grown(old, units_3=Int(8, 64, step=8, when={"layers": [3]}))
    strategy = started(RandomSearch(), old, seed=1)
    for number in range(30):
        queued = strategy.ask(number, old)
        values = strategy.complete(number, queued, new)
        assert_completed(new, queued, values)
        assert ("units_3" in values) == (queued["layers"] == 3)
    # values queued by another hand (not this generator's draws) are completed too
    assert "units_3" in strategy.complete(0, {"layers": 3}, new)


# -- grid ---------------------------------------------------------------------------------


def test_grid_completes_queued_configurations_and_tries_every_other_one_once():
    old = Space(act=Choice(["relu", "tanh"]))
    new = grown(old, opt=Choice(["adam", "sgd"]),
                momentum=Choice([0.5, 0.9], when={"opt": ["sgd"]}), bn=Bool())
    strategy = started(GridSearch(), old)
    running, queued = strategy.ask(0, old), strategy.ask(1, old)
    assert strategy.ask(2, old) is None
    # trial 0 runs on and meets the new parameters, at their defaults; 1 is still queued
    values = strategy.complete(1, queued, new)
    assert values == {"act": "tanh", "opt": "adam", "bn": False}  # what it would have run
    rest = [strategy.ask(n, new) for n in range(2, 13)]
    assert rest[-1] is None
    strategy.tell(trial(0, {**running, "opt": "adam", "bn": False}))
    assert strategy.ask(12, new) is None
    tried = [{**running, "opt": "adam", "bn": False}, values, *rest[:-1]]
    keys = Counter(canonical(v) for v in tried)
    assert max(keys.values()) == 1
    assert set(keys) == {canonical(v) for v in new.grid()}


def test_grid_completion_takes_the_first_untried_expansion_and_a_new_child():
    old = Space(units=Int(8, 16, step=8))
    new = grown(old, opt=Choice(["adam", "sgd"], default="sgd"),
                momentum=Choice([0.5, 0.9], when={"opt": ["sgd"]}))
    strategy = started(GridSearch(), old)
    queued = [strategy.ask(n, old) for n in range(2)]
    # a trial queued by another hand already ran trial 1's defaults
    strategy.tell(trial(7, {"units": 16, "opt": "sgd", "momentum": 0.5}))
    first = strategy.complete(0, queued[0], new)
    assert first == {"units": 8, "opt": "sgd", "momentum": 0.5}  # its defaults: untried
    second = strategy.complete(1, queued[1], new)
    assert second == {"units": 16, "opt": "adam"}  # the first untried one
    rest = [strategy.ask(n, new) for n in range(2, 6)]
    assert rest == [{"units": 8, "opt": "adam"}, {"units": 8, "opt": "sgd", "momentum": 0.9},
                    {"units": 16, "opt": "sgd", "momentum": 0.9}, None]


def test_grid_completion_after_the_new_grid_was_walked_keeps_its_own_defaults():
    """The grid reserves an unfinished trial's defaults when it walks a grown space; that
    trial, completed afterwards, may still take them, and nothing is lost."""
    old = Space(act=Choice(["relu", "tanh"]))
    new = grown(old, bn=Bool())
    strategy = started(GridSearch(), old)
    queued = [strategy.ask(n, old) for n in range(2)]
    asked = strategy.ask(2, new)
    assert asked == {"act": "relu", "bn": True}  # both trials' defaults are reserved
    assert strategy.complete(1, queued[1], new) == {"act": "tanh", "bn": False}
    assert [strategy.ask(n, new) for n in (3, 4)] == [{"act": "tanh", "bn": True}, None]


def test_grid_resumed_with_queued_trials_completes_them():
    new = Space(act=Choice(["relu", "tanh"]), bn=Bool())
    history = [trial(0, {"act": "relu", "bn": False}),
               trial(1, {"act": "tanh"}, None, state=TrialState.QUEUED)]
    strategy = GridSearch()
    strategy.start(new, direction="maximize", seed=0, trials=history)
    assert strategy.complete(1, {"act": "tanh"}, new) == {"act": "tanh", "bn": False}
    assert [strategy.ask(n, new) for n in (2, 3, 4)] == [
        {"act": "relu", "bn": True}, {"act": "tanh", "bn": True}, None]


# -- bayes --------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["tpe", "gp"])
def test_bayes_suggests_missing_values_on_the_trial_s_own_optuna_trial(sampler):
    old = Space(x=Float(0.0, 1.0))
    new = with_optimizer(old)
    strategy = started(Bayes(sampler=sampler, n_startup_trials=3), old, seed=2)
    completed = []
    for number in range(12):
        queued = strategy.ask(number, old if number < 6 else new)
        values = strategy.complete(number, queued, new)
        assert_completed(new, queued, values)
        # the sampler learns them: they are the Optuna trial's own parameters
        assert strategy._study.trials[number].params == values
        assert strategy.complete(number, values, new) == values
        strategy.tell(trial(number, values, -((values["x"] - 0.3) ** 2)))
        completed.append(values)
    frozen = strategy._study.trials
    assert all(t.state.name == "COMPLETE" and t.params == v
               for t, v in zip(frozen, completed, strict=True))
    assert {v["opt"] for v in completed} == {"adam", "sgd"}
    assert any("momentum" in v for v in completed)


def test_bayes_completes_a_trial_it_does_not_hold_with_defaults():
    old = Space(x=Float(0.0, 1.0))
    new = with_optimizer(old)
    strategy = started(Bayes(), old)
    assert strategy.complete(5, {"x": 0.4}, new) == {"x": 0.4, "opt": "adam", "shuffle": False}


def test_bayes_resumed_with_queued_trials_completes_them_on_their_optuna_trials():
    new = with_optimizer(Space(x=Float(0.0, 1.0)))
    history = [trial(0, {"x": 0.2, "opt": "adam", "shuffle": True}, 0.1),
               trial(1, {"x": 0.7}, None, state=TrialState.QUEUED)]
    strategy = Bayes()
    strategy.start(new, direction="maximize", seed=0, trials=history)
    values = strategy.complete(1, {"x": 0.7}, new)
    assert_completed(new, {"x": 0.7}, values)
    assert strategy._study.trials[1].params == values


# -- pbt ----------------------------------------------------------------------------------


def test_pbt_samples_a_member_s_missing_values_deterministically():
    old = Space(lr=Float(1e-3, 1e-1, log=True, mutable=True))
    new = with_optimizer(old)

    def population() -> PBT:
        strategy = PBT(population=6)
        strategy.start(old, direction="maximize", seed=9, trials=[], settings={"epochs": 4})
        return strategy

    one, two = population(), population()
    proposals = [one.ask(n, old) for n in range(6)]
    twins = [two.ask(n, old) for n in range(6)]
    completed = []
    for number, proposal in enumerate(proposals):
        values = one.complete(number, proposal.params, new)
        assert_completed(new, proposal.params, values)
        assert values == two.complete(number, twins[number].params, new)
        completed.append(values)
    assert {v["opt"] for v in completed} == {"adam", "sgd"}
    # the member's next segment goes on with the values its first one ran
    for number, values in enumerate(completed):
        one.tell(Trial(id=number + 1, number=number, state=TrialState.COMPLETE, params=values,
                       value=1.0 - 0.1 * number, attrs=proposals[number].attrs))
    follow_up = one.ask(6, new)
    assert follow_up.attrs["member"] == 0 and follow_up.attrs["copied_from"] is None
    assert follow_up.params == completed[0]


# -- a real study: a HyperModel whose fit() declares batch_size and shuffle ---------------


def pairs(trials: list[Trial]) -> list[tuple[int, bool]]:
    return [(t.params["batch_size"], t.params["shuffle"]) for t in trials]


def optimized(url: str, strategy: str, definition: Any = STUDY,
              options: CoordinatorOptions = CoordinatorOptions()) -> tuple[Study, list[Trial]]:
    study = Study.create(definition=definition, storage=url, strategy=strategy, seed=3,
                         artifacts=url.replace("sqlite:///", "").replace(".db", "-artifacts"))
    study.optimize(trials=8, executor=InProcess(), options=options)
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * len(trials)
    assert {"batch_size", "shuffle"} <= set(study.space.names)
    return study, trials


# Trial 0 meets the parameters and runs their defaults; its worker may claim trial 1 in the
# instant before the coordinator sees the space grow. Every later trial gets its own values.


@pytest.mark.slow
def test_random_trials_queued_before_fit_met_its_parameters_vary(sqlite_url):
    study, trials = optimized(sqlite_url, "random")  # all 8 are queued from the start
    assert len(trials) == 8 and pairs(trials[:1]) == [(8, False)]
    later = trials[2:]
    assert len(set(pairs(later))) >= 3
    draws = started(RandomSearch(), study.space, seed=3)
    assert [t.params for t in later] == [draws.ask(t.number, study.space) for t in later]


@pytest.mark.slow
def test_bayes_trials_queued_before_fit_met_its_parameters_vary(sqlite_url):
    # As with many workers: every trial is queued from the start.
    study, trials = optimized(sqlite_url, "bayes",
                              options=CoordinatorOptions(queue_ahead=8))
    assert len(trials) == 8
    later = trials[2:]
    assert len(set(pairs(later))) >= 2
    otrials = study.strategy._study.trials  # type: ignore[attr-defined]
    for t in later:  # the sampler knows the values each trial ran
        assert otrials[t.number].params == t.params


@pytest.mark.slow
def test_grid_tries_every_configuration_once_though_fit_meets_new_parameters(sqlite_url):
    definition = load_definition(STUDY)
    small = type(definition.hypermodel)(units=(16, 32), batch_sizes=(8, 16))
    definition = replace(definition, hypermodel=small, path=None, name="grid-discovered")
    study, trials = optimized(sqlite_url, "grid", definition)
    keys = Counter(canonical(t.params) for t in trials)
    assert max(keys.values()) == 1
    assert set(keys) == {canonical(v) for v in study.space.grid()}
    assert len(keys) == 8  # units 2 x batch_size 2 x shuffle 2
