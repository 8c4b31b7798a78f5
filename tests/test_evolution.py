"""Regularized (aging) evolution: random until the population fills, then tournaments over
the latest results and one-parameter mutations; rebuilt from the database on a resume."""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Sequence
from itertools import chain, combinations
from typing import Any

import numpy as np
import pytest

from tests.conftest import STUDIES, cli_env, start_cli
from tuner import InProcess, Study, TrialState
from tuner.space import Bool, Choice, Fixed, Float, Int, Space
from tuner.storage.records import Trial
from tuner.strategies import (
    STRATEGIES,
    Evolution,
    Proposal,
    RandomSearch,
    Strategy,
    make_strategy,
)
from tuner.strategies._evolution import mutate, new_value, varies

_ids = itertools.count(1)


def done(number: int, params: dict[str, Any], value: float | None = None, *,
         finished_at: float | None = None, values: list[float] | None = None,
         measures: dict[str, float] | None = None,
         state: TrialState = TrialState.COMPLETE) -> Trial:
    """A finished trial; by default it finished at time `number`."""
    return Trial(id=next(_ids), number=number, state=state, params=params, value=value,
                 values=values, measures=measures,
                 finished_at=float(number) if finished_at is None else finished_at)


def started(strategy: Evolution, space: Space, trials: Sequence[Trial] = (), *, seed: int = 0,
            direction: str = "maximize", settings: dict[str, Any] | None = None) -> Evolution:
    strategy.start(space, direction=direction, seed=seed, trials=list(trials),
                   settings=settings)
    return strategy


def flat_space() -> Space:
    return Space(
        layers=Int(1, 4),
        units=Int(8, 512, log=True),
        lr=Float(1e-4, 1e-1, log=True),
        dropout=Float(0.0, 0.5, step=0.1),
        act=Choice(["relu", "tanh", "gelu"]),
        bn=Bool(),
        batch=Fixed(32),
        only=Choice(["one"]),
    )


def conditional_space() -> Space:
    return Space(
        layers=Int(1, 3),
        units_2=Choice([16, 32, 64], when={"layers": [2, 3]}),
        units_3=Choice([16, 32, 64], when={"layers": [3]}),
        use_dropout=Bool(),
        dropout=Float(0.1, 0.5, when={"use_dropout": [True]}),
        act=Choice(["relu", "tanh"]),
    )


def assert_in_space(space: Space, params: dict[str, Any]) -> None:
    assert space.active(params) == params, f"unknown or inactive values in {params}"
    for name, value in params.items():
        assert space[name].contains(value), (name, value)
    for param in space:
        if param.is_active(params):
            assert param.name in params, (param.name, params)


def population_of(space: Space, count: int, *, seed: int = 1,
                  score: Any = lambda params: 0.0) -> list[Trial]:
    rng = np.random.default_rng(seed)
    trials = []
    for number in range(count):
        params = space.sample(rng)
        trials.append(done(number, params, score(params)))
    return trials


def proposals(strategy: Strategy, space: Space, numbers: range) -> list[Proposal]:
    out = []
    for number in numbers:
        proposal = strategy.ask(number, space)
        assert isinstance(proposal, Proposal), proposal
        out.append(proposal)
    return out


# -- filling the population ----------------------------------------------------------------


def test_proposals_are_random_until_the_population_fills():
    space = flat_space()
    history = [*population_of(space, 4),
               done(4, space.defaults(), state=TrialState.PRUNED),
               done(5, space.defaults(), state=TrialState.FAILED),
               done(6, space.defaults(), None)]  # complete, but no value (a NaN)
    strategy = started(Evolution(population=5, sample_size=2), space, history, seed=3)
    random = started(Evolution(population=5), space, seed=3)
    reference = RandomSearch()
    reference.start(space, direction="maximize", seed=3, trials=[])
    assert len(strategy.members) == 4  # pruned, failed and valueless trials do not join
    for number in range(7, 15):
        asked = strategy.ask(number, space)
        assert asked == reference.ask(number, space) == random.ask(number, space)
        assert not isinstance(asked, Proposal)
    strategy.tell(done(7, space.defaults(), 1.0))
    child = strategy.ask(8, space)
    assert isinstance(child, Proposal) and child.attrs["parent"] in range(8)


def test_multi_objective_trials_join_only_with_every_value():
    space = flat_space()
    settings = {"objectives": [["acc", "maximize"], ["cost", "minimize"]]}
    strategy = started(Evolution(population=2, sample_size=2), space, settings=settings)
    strategy.tell(done(0, space.defaults(), 0.5, values=[0.5, None]))
    strategy.tell(done(1, space.defaults(), 0.5))  # no values at all
    assert strategy.members == []
    strategy.tell(done(2, space.defaults(), 0.5, values=[0.5, 3.0]))
    assert [t.number for t in strategy.members] == [2]


# -- mutation ------------------------------------------------------------------------------


def test_a_child_differs_from_its_parent_in_exactly_one_varying_parameter():
    space = flat_space()
    history = population_of(space, 10)
    strategy = started(Evolution(population=10, sample_size=3), space, history, seed=2)
    by_number = {t.number: t for t in history}
    seen = set()
    for proposal in proposals(strategy, space, range(10, 310)):
        parent = by_number[proposal.attrs["parent"]].params
        child, name = proposal.params, proposal.attrs["mutated"]
        assert_in_space(space, child)
        assert child.keys() == parent.keys()
        assert [k for k in child if child[k] != parent[k]] == [name]
        seen.add(name)
    # every parameter that can vary does, and the constants never
    assert seen == {"layers", "units", "lr", "dropout", "act", "bn"}
    assert not varies(space["batch"]) and not varies(space["only"])


@pytest.mark.parametrize("param", [
    Int(1, 4), Int(8, 512, log=True), Int(2, 32, step=2, log=True), Int(0, 10, step=5),
    Float(1e-4, 1e-1, log=True), Float(0.0, 0.5, step=0.1), Float(0.0, 1.0),
    Choice([1, True, "a"]), Choice(["x", "y"]), Bool(), Int(3, 4),
], ids=repr)
def test_a_mutated_value_is_another_value_of_the_parameter(param):
    space = Space(p=param)
    param = space["p"]
    rng = np.random.default_rng(0)
    news = set()
    for _ in range(200):
        old = param.sample(rng)
        new = new_value(param, old, rng)
        assert param.contains(new), (old, new)
        assert not (type(new) is type(old) and new == old), (old, new)
        news.add(repr(new))
    assert len(news) >= 2


def test_a_mutated_integer_leaves_a_stale_value_out_of_range():
    param = Int(0, 3)
    rng = np.random.default_rng(1)
    assert {new_value(param, 7, rng) for _ in range(100)} == {0, 1, 2, 3}
    assert {new_value(param, 2, rng) for _ in range(100)} == {0, 1, 3}


def test_mutation_respects_conditions():
    space = conditional_space()
    history = population_of(space, 12)
    strategy = started(Evolution(population=12, sample_size=4), space, history, seed=5)
    by_number = {t.number: t for t in history}
    grew = shrank = 0
    for proposal in proposals(strategy, space, range(12, 612)):
        parent = by_number[proposal.attrs["parent"]].params
        child, name = proposal.params, proposal.attrs["mutated"]
        assert_in_space(space, child)  # no inactive value, a value for every active one
        assert child[name] != parent[name]
        # Besides the mutated one, only parameters whose activity it decides come or go,
        # and those kept keep their values.
        kept = child.keys() & parent.keys()
        assert [k for k in kept if child[k] != parent[k]] == [name]
        for changed in child.keys() ^ parent.keys():
            assert dict(space[changed].when).keys() & {name}, (name, changed)
        if name == "layers":
            grew += child["layers"] == 3 and parent["layers"] == 1
            shrank += child["layers"] == 1 and parent["layers"] == 3
    assert grew and shrank  # both directions happened, so the checks above saw them


def test_mutation_drops_values_of_removed_parameters_and_fills_added_ones():
    space = conditional_space()
    stale = {"layers": 1, "use_dropout": False, "act": "relu", "gone": 3}
    child, name = mutate(stale, space, np.random.default_rng(0))
    assert "gone" not in child
    assert_in_space(space, child)


def test_a_space_with_nothing_to_vary_gets_fresh_draws():
    space = Space(batch=Fixed(32), only=Choice(["one"]))
    strategy = started(Evolution(population=2, sample_size=1), space,
                       population_of(space, 2, score=lambda p: 1.0))
    proposal = strategy.ask(2, space)
    assert proposal.params == {"batch": 32, "only": "one"} and proposal.attrs["mutated"] is None


def test_complete_draws_the_parameters_a_grown_space_adds():
    small = Space(a=Int(0, 9))
    grown = Space(a=Int(0, 9), b=Choice(["x", "y"]), c=Float(0.0, 1.0, when={"b": ["y"]}))
    strategy = started(Evolution(population=2, sample_size=1), small, seed=4)
    values = [strategy.complete(n, {"a": 3}, grown) for n in range(20)]
    for v in values:
        assert v["a"] == 3
        assert_in_space(grown, v)
    assert {v["b"] for v in values} == {"x", "y"}
    assert values == [strategy.complete(n, {"a": 3}, grown) for n in range(20)]


# -- selection -----------------------------------------------------------------------------


def test_aging_retires_the_oldest_member_however_good():
    space = flat_space()
    params = population_of(space, 1)[0].params
    champion = done(0, params, 100.0)
    history = [champion, *(done(n, params, float(n)) for n in range(1, 4))]
    # The tournament holds the whole population: its best member always wins.
    strategy = started(Evolution(population=4, sample_size=4), space, history)
    assert {p.attrs["parent"] for p in proposals(strategy, space, range(4, 24))} == {0}
    strategy.tell(done(4, params, 0.5))
    assert [t.number for t in strategy.members] == [1, 2, 3, 4]
    assert {p.attrs["parent"] for p in proposals(strategy, space, range(5, 25))} == {3}
    for number in range(5, 8):  # three more: only the last four are members
        strategy.tell(done(number, params, -float(number)))
    assert {p.attrs["parent"] for p in proposals(strategy, space, range(8, 28))} == {4}


def test_the_population_is_the_latest_to_finish_not_the_latest_numbers():
    space = flat_space()
    params = space.defaults()
    # Trial 0 started first but finished last: it is the youngest member.
    history = [done(0, params, 9.0, finished_at=50.0),
               *(done(n, params, float(n)) for n in range(1, 5))]
    rebuilt = started(Evolution(population=4, sample_size=4), space, history)
    assert [t.number for t in rebuilt.members] == [2, 3, 4, 0]
    told = started(Evolution(population=4, sample_size=4), space)
    for trial in history:  # in the order the coordinator collects them
        told.tell(trial)
    assert [t.number for t in told.members] == [2, 3, 4, 0]
    told.tell(history[2])  # a trial told twice is one member
    assert [t.number for t in told.members] == [2, 3, 4, 0]
    assert ([p.params for p in proposals(told, space, range(5, 15))]
            == [p.params for p in proposals(rebuilt, space, range(5, 15))])


def test_minimizing_picks_the_lowest_value():
    space = flat_space()
    history = [done(n, space.defaults(), value) for n, value in enumerate([3.0, 1.0, 2.0])]
    strategy = started(Evolution(population=3, sample_size=3), space, history,
                       direction="minimize")
    assert {p.attrs["parent"] for p in proposals(strategy, space, range(3, 13))} == {1}


TWO = {"objectives": [["acc", "maximize"], ["cost", "minimize"]]}


def test_several_objectives_a_nondominated_member_beats_a_dominated_one():
    space = flat_space()
    params = space.defaults()
    frontier = [done(0, params, 0.9, values=[0.9, 9.0]),   # accurate, costly
                done(1, params, 0.1, values=[0.1, 1.0])]   # cheap, poor
    dominated = done(2, params, 0.8, values=[0.8, 9.5])    # beaten by 0
    strategy = started(Evolution(population=3, sample_size=2), space,
                       [*frontier, dominated], settings=TWO)
    ranks = strategy.ranks(strategy.members)
    # more accurate than trial 1, yet on a worse front: both front members rank first
    assert ranks[2] == 2 and sorted(ranks[:2]) == [0, 1]
    parents = {p.attrs["parent"] for p in proposals(strategy, space, range(3, 43))}
    assert parents == {0, 1}  # any draw of two holds a front member, which wins


def test_several_objectives_on_one_front_the_less_crowded_wins():
    space = flat_space()
    params = space.defaults()
    front = [done(n, params, a, values=[a, c])
             for n, (a, c) in enumerate([(0.1, 1.0), (0.5, 5.0), (0.52, 5.2), (0.9, 9.0)])]
    strategy = started(Evolution(population=4, sample_size=2), space, front, settings=TWO)
    ranks = strategy.ranks(strategy.members)
    assert max(ranks[0], ranks[3]) < min(ranks[1], ranks[2])  # the extremes first


CONSTRAINED = {"constraints": [["cost", "<=", 5.0]]}


def test_an_infeasible_member_loses_to_a_feasible_one():
    space = flat_space()
    params = space.defaults()
    history = [done(0, params, 100.0, measures={"cost": 10.0}),  # best value, too costly
               done(1, params, 1.0, measures={"cost": 1.0})]
    strategy = started(Evolution(population=2, sample_size=2), space, history,
                       settings=CONSTRAINED)
    assert {p.attrs["parent"] for p in proposals(strategy, space, range(2, 12))} == {1}


def test_of_infeasible_members_the_smaller_violation_wins():
    space = flat_space()
    params = space.defaults()
    history = [done(0, params, 100.0, measures={"cost": 10.0}),
               done(1, params, 50.0, measures={"cost": 6.0}),
               done(2, params, 200.0, measures={})]  # never measured: infinitely far
    strategy = started(Evolution(population=3, sample_size=3), space, history,
                       settings=CONSTRAINED)
    assert strategy.ranks(strategy.members) == [1, 0, 2]
    assert {p.attrs["parent"] for p in proposals(strategy, space, range(3, 13))} == {1}


def test_several_objectives_with_constraints_rank_feasible_fronts_first():
    space = flat_space()
    params = space.defaults()
    settings = {**TWO, "constraints": [["cost", "<=", 5.0]]}
    history = [done(0, params, 0.99, values=[0.99, 6.0], measures={"cost": 6.0}),
               done(1, params, 0.2, values=[0.2, 4.0], measures={"cost": 4.0}),
               done(2, params, 0.1, values=[0.1, 4.5], measures={"cost": 4.5})]
    strategy = started(Evolution(population=3, sample_size=3), space, history,
                       settings=settings)
    assert strategy.ranks(strategy.members) == [2, 0, 1]


# -- determinism ---------------------------------------------------------------------------


def test_proposals_depend_on_the_seed_number_and_population_only():
    space = conditional_space()
    history = population_of(space, 8, score=lambda p: p["layers"])
    one = started(Evolution(population=8, sample_size=3), space, history, seed=7)
    two = started(Evolution(population=8, sample_size=3), space, list(reversed(history)),
                  seed=7)
    asked = [one.ask(n, space) for n in range(8, 28)]
    assert [two.ask(n, space) for n in reversed(range(8, 28))] == asked[::-1]
    assert len({repr(sorted(p.params.items())) for p in asked}) > 10
    other = started(Evolution(population=8, sample_size=3), space, history, seed=8)
    assert [other.ask(n, space) for n in range(8, 28)] != asked


# -- options -------------------------------------------------------------------------------


def test_options_round_trip_through_make_strategy():
    assert STRATEGIES["evolution"] is Evolution
    made = make_strategy("evolution", Evolution(population=7, sample_size=3).options())
    assert isinstance(made, Evolution) and made.name == "evolution"
    assert (made.population, made.sample_size) == (7, 3)
    assert make_strategy("evolution").options() == {"population": 10, "sample_size": 3}


@pytest.mark.parametrize(("options", "message"), [
    ({"population": 1}, "population: 1 must be at least 2"),
    ({"population": 0}, "population: 0 must be at least 2"),
    ({"sample_size": 0}, "sample_size: 0 must be between 1 and the population"),
    ({"population": 4, "sample_size": 5}, r"sample_size: 5 must be between 1 and the "
                                          r"population \(4\)"),
    ({"population": 2.5}, "population: 2.5 must be an integer"),
    ({"sample_size": True}, "sample_size: True must be an integer"),
])
def test_bad_options_are_refused_clearly(options, message):
    with pytest.raises(ValueError, match=message):
        make_strategy("evolution", options)


# -- searching -----------------------------------------------------------------------------


def load_toy() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("evolution_toy", STUDIES / "evolution_toy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def best_of(strategy: Strategy, seed: int, trials: int = 60) -> float:
    """Ask, evaluate and tell in turn, as one worker would: the best value found."""
    toy = load_toy()
    strategy.start(toy.space, direction="maximize", seed=seed, trials=[])
    best = -np.inf
    for number in range(trials):
        asked = strategy.ask(number, toy.space)
        params = asked.params if isinstance(asked, Proposal) else asked
        value = toy.objective(params)
        best = max(best, value)
        strategy.tell(done(number, params, value))
    return best


def test_evolution_beats_random_on_the_toy_problem_across_seeds():
    evolved = np.array([best_of(Evolution(), seed) for seed in range(10)])
    drawn = np.array([best_of(RandomSearch(), seed) for seed in range(10)])
    assert (evolved > drawn).sum() >= 7, (evolved, drawn)
    assert evolved.mean() > drawn.mean() + 2, (evolved, drawn)


def test_a_study_evolves_two_objectives_under_a_constraint(sqlite_url):
    study = Study.create(definition=STUDIES / "evolution_pareto.py", storage=sqlite_url,
                         strategy=Evolution(population=8, sample_size=3), seed=4)
    assert study.record.strategy == "evolution"
    assert study.record.settings["strategy_options"] == {"population": 8, "sample_size": 3}
    study.optimize(trials=40, executor=InProcess(), show_progress=False)
    trials = {t.number: t for t in study.trials}
    assert sorted(trials) == list(range(40))
    assert all(t.state == TrialState.COMPLETE and len(t.values) == 2 for t in trials.values())
    space = Space.from_dict(study.record.space)
    children = [t for t in trials.values() if (t.attrs or {}).get("parent") is not None]
    assert len(children) >= 40 - 8 - 2  # all but the random ones (a couple asked ahead)
    for child in children:
        parent = trials[child.attrs["parent"]]
        name = child.attrs["mutated"]
        assert parent.finished_at <= child.queued_at  # bred from a finished member
        assert child.params[name] != parent.params[name]
        assert_in_space(space, child.params)
    mutated = {t.attrs["mutated"] for t in children}
    assert "layers" in mutated and len(mutated) >= 3
    # the conditional width came and went with the number of layers
    assert any(("width_3" in t.params) != ("width_3" in trials[t.attrs["parent"]].params)
               for t in children)
    # An infeasible member wins a tournament only if all it drew were infeasible: with
    # few of those in the population, (almost) never. Ranked by objectives alone, the
    # costly ones (most accurate, at the front's edge) would win often.
    assert any(t.measures["cost"] > 8.0 for t in trials.values())
    bred_from_infeasible = [t for t in children
                            if trials[t.attrs["parent"]].measures["cost"] > 8.0]
    assert len(bred_from_infeasible) <= 1, bred_from_infeasible


def test_a_study_with_evolution_beats_random_search(sqlite_url):
    best = {}
    for strategy in ("evolution", "random"):
        study = Study.create(f"toy-{strategy}", definition=STUDIES / "evolution_toy.py",
                             storage=sqlite_url, strategy=strategy, seed=0)
        study.optimize(trials=60, executor=InProcess(), show_progress=False)
        assert study.counts()[TrialState.COMPLETE] == 60
        best[strategy] = study.best_trial.value
    assert best["evolution"] > best["random"] + 3, best


# -- resuming ------------------------------------------------------------------------------


def latest(trials: Sequence[Trial], count: int) -> list[Trial]:
    """The `count` latest COMPLETE trials by finish: the population they make."""
    ordered = sorted((t for t in trials if t.state == TrialState.COMPLETE),
                     key=lambda t: (t.finished_at, t.number))
    return ordered[-count:]


def subsets(items: Sequence[Trial]) -> chain[tuple[Trial, ...]]:
    return chain.from_iterable(combinations(items, k) for k in range(len(items) + 1))


@pytest.mark.slow
def test_a_killed_evolution_resumes_from_the_population_in_its_database(sqlite_url):
    population, budget = 6, 30
    Study.create(definition=STUDIES / "evolution_toy.py", storage=sqlite_url,
                 strategy=Evolution(population=population, sample_size=3), seed=11)
    env = dict(cli_env(), TUNER_TEST_SLEEP="0.1")
    args = ["run", str(STUDIES / "evolution_toy.py"), "--storage", sqlite_url,
            "--trials", str(budget), "--workers", "1", "--strategy", "evolution"]
    run = start_cli(*args, env=env)
    deadline = time.monotonic() + 120
    while Study.load("evolution_toy", storage=sqlite_url).counts()[
            TrialState.COMPLETE] < 2 * population:
        assert time.monotonic() < deadline and run.poll() is None, "too few trials finished"
        time.sleep(0.1)
    os.killpg(run.pid, signal.SIGKILL)  # the coordinator and its worker at once
    run.communicate(timeout=60)
    before = Study.load("evolution_toy", storage=sqlite_url).trials
    last_before = max(t.number for t in before)
    at_kill = {t.number for t in before if t.state == TrialState.COMPLETE}
    assert len(at_kill) >= 2 * population

    resumed = start_cli(*args, env=env)
    _, stderr = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, stderr
    study = Study.load("evolution_toy", storage=sqlite_url)
    trials = study.trials
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(budget))  # each number once
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert study.record.settings["strategy_options"] == {"population": population,
                                                         "sample_size": 3}
    by_number = {t.number: t for t in trials}
    space = Space.from_dict(study.record.space)
    new = [t for t in trials if t.number > last_before]  # asked by the resumed run
    assert new, "the resumed run proposed nothing"
    for child in new:
        # Bred (not a random draw, as a strategy that forgot its population would make)
        # from a member of the population as the database held it when it was asked: one
        # of the latest to finish before it was queued (a couple of those finishing
        # while the coordinator asked may not have been collected yet).
        assert child.attrs and child.attrs.get("parent") is not None, child
        finished = [t for t in trials if t.finished_at <= child.queued_at]
        candidates = {t.number for t in latest(finished, population + 2)}
        assert child.attrs["parent"] in candidates, (child.number, child.attrs, candidates)
    # The first is exactly what the population rebuilt from the database proposes: the
    # members at the kill, plus any trial collected since (one requeued by the kill).
    first = min(new, key=lambda t: t.number)
    since = [t for t in trials if t.number not in at_kill and t.finished_at <= first.queued_at]
    expected = []
    for extra in subsets(since):
        history = [by_number[n] for n in at_kill] + list(extra)
        strategy = started(Evolution(population=population, sample_size=3), space, history,
                           seed=study.record.seed)
        expected.append(strategy.ask(first.number, space))
    assert Proposal(first.params, first.attrs) in expected
