"""Search strategies: random, grid and Bayesian (Optuna TPE), driven by ask/tell."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tuner.errors import SpaceError
from tuner.space import Bool, Choice, Fixed, Float, Int, Space, canonical
from tuner.states import TrialState
from tuner.storage.records import Trial
from tuner.strategies import (
    STRATEGIES,
    Bayes,
    GridSearch,
    RandomSearch,
    Strategy,
    make_strategy,
    trial_seed,
)


def trial(number: int, params: dict[str, Any], value: float | None = None,
          state: TrialState = TrialState.COMPLETE) -> Trial:
    return Trial(id=number + 1, number=number, state=state, params=params, value=value)


def started(strategy: Strategy, space: Space, *, seed: int = 0, direction: str = "maximize",
            trials: list[Trial] | None = None) -> Strategy:
    strategy.start(space, direction=direction, seed=seed, trials=trials or [])
    return strategy


def drain(strategy: Strategy, space: Space, first: int = 0, limit: int = 1000) -> list[dict]:
    """Ask until the strategy answers None (bounded, so a bug cannot hang the test)."""
    proposals = []
    for number in range(first, first + limit):
        params = strategy.ask(number, space)
        if params is None:
            return proposals
        proposals.append(params)
    raise AssertionError(f"strategy still proposing after {limit} asks")


def mixed_space() -> Space:
    return Space(
        layers=Int(1, 3),
        units_3=Int(8, 64, step=8, when={"layers": [3]}),
        lr=Float(1e-4, 1e-1, log=True),
        width=Int(2, 32, step=2, log=True),
        act=Choice(["relu", "tanh"]),
        bn=Bool(),
        batch=Fixed(32),
    )


def assert_in_space(space: Space, params: dict[str, Any]) -> None:
    assert space.active(params) == params, f"unknown or inactive values in {params}"
    for name, value in params.items():
        assert space[name].contains(value), (name, value)
    for param in space:  # every active parameter has a value
        if param.is_active(params):
            assert param.name in params


# -- random --------------------------------------------------------------------------------


def test_random_is_reproducible_per_seed_and_number():
    space = mixed_space()
    one, two = started(RandomSearch(), space, seed=5), started(RandomSearch(), space, seed=5)
    assert [one.ask(n, space) for n in range(10)] == [two.ask(n, space) for n in range(10)]
    # the answer depends on the number only, not on the order of asks
    assert one.ask(7, space) == two.ask(7, space) == one.ask(7, space)


def test_random_differs_across_numbers_and_seeds():
    space = mixed_space()
    strategy = started(RandomSearch(), space, seed=5)
    proposals = [canonical(strategy.ask(n, space)) for n in range(20)]
    assert len(set(proposals)) == 20
    other = started(RandomSearch(), space, seed=6)
    assert [canonical(other.ask(n, space)) for n in range(20)] != proposals


def test_random_values_inside_the_space():
    space = mixed_space()
    strategy = started(RandomSearch(), space, seed=1)
    layers = set()
    for number in range(200):
        params = strategy.ask(number, space)
        assert_in_space(space, params)
        layers.add(params["layers"])
    assert layers == {1, 2, 3}


def test_random_never_exhausts():
    space = Space(a=Bool())
    strategy = started(RandomSearch(), space)
    assert all(strategy.ask(n, space) is not None for n in range(20))


# -- grid ----------------------------------------------------------------------------------


def small_grid_space() -> Space:
    return Space(act=Choice(["relu", "tanh"]), units=Int(8, 24, step=8), bn=Bool())


def test_grid_yields_every_combination_once_then_none():
    space = small_grid_space()
    strategy = started(GridSearch(), space)
    proposals = drain(strategy, space)
    expected = [
        {"act": a, "units": u, "bn": b}
        for a, u, b in itertools.product(["relu", "tanh"], [8, 16, 24], [False, True])
    ]
    assert proposals == expected
    assert strategy.ask(99, space) is None
    assert strategy.ask(100, space) is None


def test_grid_with_conditions_yields_only_active_values():
    space = Space(layers=Int(1, 3), units_3=Int(8, 16, step=8, when={"layers": [3]}),
                  batch=Fixed(32))
    proposals = drain(started(GridSearch(), space), space)
    assert proposals == [
        {"layers": 1, "batch": 32},
        {"layers": 2, "batch": 32},
        {"layers": 3, "units_3": 8, "batch": 32},
        {"layers": 3, "units_3": 16, "batch": 32},
    ]


def test_grid_resume_skips_tried_combinations():
    space = small_grid_space()
    everything = list(space.grid())
    history = [
        trial(0, everything[0], 0.5),
        trial(1, everything[5], state=TrialState.FAILED),
        trial(2, everything[7], state=TrialState.RUNNING),
        # a stale value of a parameter no longer in the space does not hide the combination
        trial(3, {**everything[9], "gone": 1}, 0.1),
    ]
    proposals = drain(started(GridSearch(), space, trials=history), space, first=4)
    keys = [canonical(p) for p in proposals]
    assert len(keys) == len(set(keys)) == len(everything) - 4
    assert set(keys) == {canonical(v) for v in everything} - {
        canonical(everything[i]) for i in (0, 5, 7, 9)
    }
    assert proposals == [v for i, v in enumerate(everything) if i not in (0, 5, 7, 9)]


def test_grid_growing_space_extends_without_repeating_asked_configurations():
    space = Space(act=Choice(["relu", "tanh"]))
    strategy = started(GridSearch(), space)
    first = strategy.ask(0, space)
    grown = space.copy()
    grown.add("bn", Bool())
    rest = drain(strategy, grown, first=1)
    keys = [canonical(p) for p in [first, *rest]]
    assert len(keys) == len(set(keys))
    assert first == {"act": "relu"}
    # trial 0 is still out: it meets `bn` at its default, which is not proposed again
    assert rest == [
        {"act": "relu", "bn": True}, {"act": "tanh", "bn": False}, {"act": "tanh", "bn": True},
    ]
    assert strategy.ask(9, grown) is None


def test_grid_resume_of_a_grown_space_skips_what_trials_ran():
    """A trial that met `bn` recorded its default; after a restart that combination is skipped."""
    space = Space(act=Choice(["relu", "tanh"]), bn=Bool())
    history = [trial(0, {"act": "relu", "bn": False}, 0.3)]
    proposals = drain(started(GridSearch(), space, trials=history), space, first=1)
    assert proposals == [
        {"act": "relu", "bn": True}, {"act": "tanh", "bn": False}, {"act": "tanh", "bn": True},
    ]


def test_grid_growing_space_skips_what_told_trials_ran():
    space = Space(act=Choice(["relu", "tanh"]))
    strategy = started(GridSearch(), space)
    first = strategy.ask(0, space)
    # the trial met `bn` while running, took its default and recorded it
    strategy.tell(trial(0, {**first, "bn": False}, 0.3))
    grown = space.copy()
    grown.add("bn", Bool())
    proposals = drain(strategy, grown, first=1)
    assert {"act": "relu", "bn": False} not in proposals


def test_grid_float_without_step_fails_at_start():
    space = Space(units=Int(1, 3), lr=Float(1e-4, 1e-2, log=True))
    with pytest.raises(SpaceError, match="'lr'"):
        GridSearch().start(space, direction="maximize", seed=0, trials=[])


def test_grid_float_with_step_works():
    space = Space(dropout=Float(0.0, 0.5, step=0.25))
    assert drain(started(GridSearch(), space), space) == [
        {"dropout": 0.0}, {"dropout": 0.25}, {"dropout": 0.5}
    ]


# -- bayes ---------------------------------------------------------------------------------


def optimise(strategy: Strategy, seed: int, *, direction: str = "maximize",
             trials: int = 25) -> float:
    """Run an ask/tell loop on a 1-D quadratic with its optimum at 0.3; the best x found."""
    space = Space(x=Float(0.0, 1.0))
    started(strategy, space, seed=seed, direction=direction)
    sign = 1 if direction == "maximize" else -1
    best_x, best_value = None, None
    for number in range(trials):
        params = strategy.ask(number, space)
        assert 0.0 <= params["x"] <= 1.0
        value = -sign * (params["x"] - 0.3) ** 2
        strategy.tell(trial(number, params, value))
        if best_value is None or sign * value > sign * best_value:
            best_x, best_value = params["x"], value
    return best_x


def test_bayes_finds_the_optimum_and_beats_random():
    seeds = range(4)
    bayes = [abs(optimise(Bayes(), seed) - 0.3) for seed in seeds]
    random = [abs(optimise(RandomSearch(), seed) - 0.3) for seed in seeds]
    assert max(bayes) < 0.05
    assert sum(bayes) / len(bayes) < sum(random) / len(random)


def test_bayes_minimize():
    assert abs(optimise(Bayes(), seed=11, direction="minimize") - 0.3) < 0.05


def test_bayes_is_deterministic_for_a_seed():
    assert optimise(Bayes(), seed=3, trials=15) == optimise(Bayes(), seed=3, trials=15)


def test_bayes_respects_conditions():
    space = mixed_space()
    strategy = started(Bayes(n_startup_trials=5), space, seed=2)
    layers = set()
    for number in range(25):
        params = strategy.ask(number, space)
        assert_in_space(space, params)
        assert ("units_3" in params) == (params["layers"] == 3)
        assert params["batch"] == 32
        assert params["width"] in (2, 4, 8, 16, 32)
        layers.add(params["layers"])
        value = params["layers"] + params.get("units_3", 0) / 64 - params["lr"]
        strategy.tell(trial(number, params, value))
    assert layers == {1, 2, 3}


def test_bayes_priming_with_finished_and_running_trials():
    space = Space(x=Float(0.0, 1.0), act=Choice(["relu", "tanh"]))
    history = [
        trial(0, {"x": 0.1, "act": "relu"}, 0.5),
        trial(1, {"x": 0.2, "act": "tanh"}, state=TrialState.FAILED),
        trial(2, {"x": 0.3, "act": "relu"}, state=TrialState.PRUNED),
        trial(3, {"x": 0.4, "act": "tanh"}, state=TrialState.RUNNING),
        trial(4, {"x": 0.6, "act": "relu"}, None),  # COMPLETE with a NaN result
    ]
    strategy = started(Bayes(), space, seed=0, trials=history)
    study = strategy._study  # the Optuna study the strategy owns
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    assert states == ["COMPLETE", "FAIL", "PRUNED", "RUNNING", "FAIL"]
    running = study.get_trials(deepcopy=False)[3]
    assert running.params == {"x": 0.4, "act": "tanh"}

    params = strategy.ask(5, space)
    assert_in_space(space, params)

    strategy.tell(trial(3, {"x": 0.4, "act": "tanh"}, 0.9))
    finished = study.get_trials(deepcopy=False)[3]
    assert finished.state.name == "COMPLETE" and finished.value == 0.9
    assert study.best_value == 0.9

    strategy.tell(trial(5, params, state=TrialState.FAILED))
    assert study.get_trials(deepcopy=False)[-1].state.name == "FAIL"


def test_bayes_priming_skips_trials_that_no_longer_fit_the_space(caplog):
    space = Space(x=Float(0.0, 1.0))
    history = [trial(0, {"x": 0.5}, 1.0), trial(1, {"x": 7.0}, 2.0)]  # range shrank since
    strategy = started(Bayes(), space, trials=history)
    assert len(strategy._study.trials) == 1
    assert "trial 1 left out" in caplog.text
    assert 0.0 <= strategy.ask(2, space)["x"] <= 1.0


def test_bayes_tell_of_unknown_trial_is_ignored():
    space = Space(x=Float(0.0, 1.0))
    strategy = started(Bayes(), space)
    strategy.tell(trial(42, {"x": 0.5}, 1.0))
    assert strategy._study.trials == []


def test_bayes_rejects_unknown_sampler():
    with pytest.raises(ValueError, match="sampler"):
        Bayes(sampler="cmaes")


# -- choosing a strategy -------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kind"),
                         [("grid", GridSearch), ("random", RandomSearch), ("bayes", Bayes)])
def test_make_strategy_by_name(name, kind):
    strategy = make_strategy(name)
    assert type(strategy) is kind
    assert strategy.name == name
    assert STRATEGIES[name] is kind


def test_make_strategy_bayes_gp():
    strategy = make_strategy("bayes-gp")
    assert isinstance(strategy, Bayes) and strategy.sampler == "gp"


def test_make_strategy_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="'annealing'") as err:
        make_strategy("annealing")
    for name in ("grid", "random", "bayes", "bayes-gp"):
        assert name in str(err.value)


def test_make_strategy_passes_instances_through():
    strategy = Bayes(n_startup_trials=3)
    assert make_strategy(strategy) is strategy


# -- trial seeds ---------------------------------------------------------------------------


def test_trial_seed_is_deterministic_and_in_range():
    assert trial_seed(0, 0) == trial_seed(0, 0)
    assert trial_seed(123, 7) == trial_seed(123, 7)
    seeds = {trial_seed(seed, number) for seed in (0, 1, 2**31, 2**40) for number in range(50)}
    assert len(seeds) == 200
    assert all(isinstance(s, int) and 0 <= s < 2**31 - 1 for s in seeds)
    assert trial_seed(0, 1) != trial_seed(1, 0)


def test_bayes_gp_sampler_proposes_inside_the_space_and_learns():
    """Optuna's Gaussian-process sampler (needs PyTorch) behind the same interface."""
    assert make_strategy("bayes-gp").sampler == "gp"
    space = Space(x=Float(0.0, 1.0), n=Int(1, 4))
    strategy = Bayes(sampler="gp", n_startup_trials=4)
    strategy.start(space, direction="maximize", seed=0, trials=[])
    best = -1.0
    for n in range(12):
        params = strategy.ask(n, space)
        assert 0.0 <= params["x"] <= 1.0 and params["n"] in (1, 2, 3, 4)
        value = -((params["x"] - 0.3) ** 2)
        best = max(best, value)
        strategy.tell(Trial(id=n, number=n, state=TrialState.COMPLETE, params=params,
                            value=value))
    assert best > -0.01
