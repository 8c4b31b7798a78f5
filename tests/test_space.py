"""Search spaces: validation, grids, sampling, serialisation and defaults."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from tuner.errors import SpaceError
from tuner.hyperparameters import HyperParameters
from tuner.space import Bool, Choice, Fixed, Float, Int, Space, canonical, describe


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def conditional_space() -> Space:
    """layers in 1..3; `units` always; `units_3` only with three layers; a constant."""
    return Space(
        layers=Int(1, 3),
        units=Choice([16, 32]),
        units_3=Choice([32, 64], when={"layers": [3]}),
        seed=Fixed(7),
    )


# -- validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("param", "problem"),
    [
        (Int(5, 1), "greater than high"),
        (Float(1.0, 0.5), "greater than high"),
        (Int(0, 10, log=True), "log sampling needs low > 0"),
        (Float(0.0, 1.0, log=True), "log sampling needs low > 0"),
        (Float(-1.0, 1.0, log=True), "log sampling needs low > 0"),
        (Choice([]), "at least one value"),
        (Choice(["relu", "tanh", "relu"]), "duplicates"),
        (Int(1, 10, step=0), "step=0"),
        (Int(1, 10, default=11), "default=11"),
        (Choice(["a", "b"], default="c"), "default='c'"),
        (Float(0.0, math.inf), "finite"),
        (Int(1.5, 3), "must be an integer"),
        (Fixed([1, 2]), "must be a number"),
    ],
    ids=lambda v: v if isinstance(v, str) else type(v).__name__,
)
def test_invalid_parameter_raises_space_error_naming_it(param, problem):
    with pytest.raises(SpaceError, match="'bad_param'") as err:
        Space(bad_param=param)
    assert problem in str(err.value)


def test_space_error_is_a_value_error():
    """Callers that only know ValueError still catch space errors."""
    with pytest.raises(ValueError, match="'x'"):
        Space(x=Int(3, 1))


def test_add_same_name_with_different_range_raises():
    space = Space(units=Int(32, 256))
    with pytest.raises(SpaceError, match="'units'.*defined twice") as err:
        space.add("units", Int(32, 512))
    assert "Int(32, 256)" in str(err.value) and "Int(32, 512)" in str(err.value)
    assert space["units"].high == 256  # the first definition stays


def test_add_identical_definition_is_a_no_op():
    space = Space(units=Int(32, 256))
    known = space["units"]
    assert space.add("units", Int(32, 256)) is known
    assert len(space) == 1


def test_same_name_with_different_condition_is_a_different_definition():
    space = Space(layers=Int(1, 3), units=Int(8, 16))
    with pytest.raises(SpaceError, match="'units'"):
        space.add("units", Int(8, 16, when={"layers": [3]}))


def test_hyperparameters_same_name_with_different_range_raises():
    hp = HyperParameters()
    hp.Float("lr", 1e-4, 1e-2, sampling="log")
    with pytest.raises(SpaceError, match="'lr'"):
        hp.Float("lr", 1e-4, 1e-1, sampling="log")


def test_add_rejects_non_parameter():
    with pytest.raises(SpaceError, match="'units'"):
        Space().add("units", 32)  # type: ignore[arg-type]


def test_float_grid_without_step_raises_naming_it():
    space = Space(units=Int(1, 2), lr=Float(0.001, 0.1))
    with pytest.raises(SpaceError, match="'lr'.*step"):
        list(space.grid())
    with pytest.raises(SpaceError, match="'lr'"):
        space.grid_size()


def test_condition_on_undefined_parent_raises():
    with pytest.raises(SpaceError, match="'units_3'.*'layers'.*not defined"):
        Space(units_3=Int(32, 64, when={"layers": [3]}))


def test_condition_on_parent_defined_later_raises():
    """Parents must come before their children."""
    with pytest.raises(SpaceError, match="'units_3'.*'layers'"):
        Space({"units_3": Int(32, 64, when={"layers": [3]}), "layers": Int(1, 3)})


@pytest.mark.parametrize(
    ("parent", "values"),
    [
        (Int(1, 3), [4]),
        (Int(1, 3), [3, 0]),
        (Int(1, 3), []),
        (Choice(["mlp", "cnn"]), ["rnn"]),
        (Bool(), [1]),
        (Int(1, 3), ["3"]),
    ],
)
def test_condition_values_not_valid_for_parent_raise(parent, values):
    with pytest.raises(SpaceError, match="'child'.*not values of 'parent'"):
        Space(parent=parent, child=Int(1, 2, when={"parent": values}))


def test_condition_value_off_a_float_step_grid_raises():
    with pytest.raises(SpaceError, match="'child'"):
        Space(parent=Float(0.0, 1.0, step=0.25), child=Int(1, 2, when={"parent": [0.3]}))


# -- grids ---------------------------------------------------------------------------------


def test_grid_is_the_cartesian_product_in_order():
    space = Space(act=Choice(["relu", "tanh"]), bn=Bool(), units=Int(1, 3))
    expected = [
        {"act": a, "bn": b, "units": u}
        for a, b, u in itertools.product(["relu", "tanh"], [False, True], [1, 2, 3])
    ]
    assert list(space.grid()) == expected
    assert space.grid_size() == 12


def test_grid_with_condition_counts_and_contents():
    """layers 1 or 2: 2 units each; layers 3: 2 units x 2 units_3 -> 2 + 2 + 4."""
    space = conditional_space()
    grid = list(space.grid())
    assert len(grid) == space.grid_size() == 8
    for values in grid:
        assert ("units_3" in values) == (values["layers"] == 3)
        assert values["seed"] == 7
    with_three = [v for v in grid if v["layers"] == 3]
    assert sorted((v["units"], v["units_3"]) for v in with_three) == [
        (16, 32), (16, 64), (32, 32), (32, 64)
    ]


def test_grid_has_no_duplicates_and_a_stable_order():
    space = Space(
        model=Choice(["mlp", "cnn"]),
        filters=Int(8, 16, step=8, when={"model": ["cnn"]}),
        pool=Bool(when={"model": ["cnn"]}),
        dropout=Float(0.0, 0.5, step=0.25),
    )
    first, second = list(space.grid()), list(space.grid())
    assert first == second
    assert list(Space.from_dict(space.to_dict()).grid()) == first
    keys = [canonical(v) for v in first]
    assert len(set(keys)) == len(keys) == 3 + 2 * 2 * 3


def test_nested_conditions_in_grid():
    space = Space(
        model=Choice(["mlp", "cnn"]),
        pool=Bool(when={"model": ["cnn"]}),
        pool_size=Int(2, 3, when={"pool": [True]}),
    )
    assert list(space.grid()) == [
        {"model": "mlp"},
        {"model": "cnn", "pool": False},
        {"model": "cnn", "pool": True, "pool_size": 2},
        {"model": "cnn", "pool": True, "pool_size": 3},
    ]


def test_int_grid_with_step():
    assert Int(0, 10, step=5).grid() == [0, 5, 10]
    assert Int(1, 10, step=4).grid() == [1, 5, 9]


def test_int_log_with_step_is_multiplicative():
    """KerasTuner: with sampling='log', step is a factor between values."""
    assert Int(2, 32, step=2, log=True).grid() == [2, 4, 8, 16, 32]
    assert Int(1, 100, step=10, log=True).grid() == [1, 10, 100]
    assert Int(3, 30, step=3, log=True).grid() == [3, 9, 27]


def test_float_grid_with_step():
    assert Float(0.0, 1.0, step=0.25).grid() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert Float(0.1, 0.5, step=0.1).grid() == [0.1, 0.2, 0.3, 0.4, 0.5]  # no 0.30000000000000004
    assert Float(0.0, 1.0, step=0.3).grid() == [0.0, 0.3, 0.6, 0.9]


def test_float_log_grid_with_step():
    grid = Float(1e-4, 1e-1, step=10, log=True).grid()
    assert grid == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1])


# -- sampling ------------------------------------------------------------------------------


def test_samples_are_inside_the_space():
    space = Space(
        layers=Int(1, 3),
        units=Int(32, 512, step=32),
        width=Int(2, 64, step=2, log=True),
        filters=Int(1, 1000, log=True),
        lr=Float(1e-5, 1e-1, log=True),
        dropout=Float(0.0, 0.5),
        momentum=Float(0.0, 0.9, step=0.1),
        act=Choice(["relu", "tanh"]),
        bn=Bool(),
        units_3=Int(8, 16, when={"layers": [3]}),
        seed=Fixed(1),
    )
    generator = rng(1)
    seen_layers = set()
    for _ in range(300):
        values = space.sample(generator)
        seen_layers.add(values["layers"])
        for name, value in values.items():
            assert space[name].contains(value), (name, value)
        assert values["units"] % 32 == 0
        assert values["width"] in (2, 4, 8, 16, 32, 64)
        assert values["momentum"] in space["momentum"].grid()
        assert isinstance(values["layers"], int) and isinstance(values["bn"], bool)
        assert ("units_3" in values) == (values["layers"] == 3)
        assert space.active(values) == values
    assert seen_layers == {1, 2, 3}


def test_sampling_is_deterministic_per_seed():
    space = conditional_space()
    space.add("lr", Float(1e-4, 1e-1, log=True))

    def draw(seed: int) -> list[dict]:
        generator = rng(seed)
        return [space.sample(generator) for _ in range(10)]

    assert draw(42) == draw(42)
    assert draw(42) != draw(43)
    assert len({canonical(v) for v in draw(42)}) > 1  # successive draws differ too


def test_log_sampling_spreads_over_orders_of_magnitude():
    param = Float(1e-5, 1e-1, log=True)
    generator = rng(3)
    samples = np.array([param.sample(generator) for _ in range(2000)])
    decades = np.floor(np.log10(samples)).astype(int)
    counts = np.bincount(decades + 5, minlength=4)
    assert set(decades) == {-5, -4, -3, -2}
    assert counts.min() > 350  # about 500 per decade; a linear draw puts ~90% in the top one
    assert 1e-4 < np.median(samples) < 1e-2


def test_int_log_sampling_spreads_over_orders_of_magnitude():
    param = Int(1, 10_000, log=True)
    generator = rng(4)
    samples = [param.sample(generator) for _ in range(2000)]
    assert all(1 <= s <= 10_000 for s in samples)
    assert sum(s < 10 for s in samples) > 300
    assert sum(s >= 1000 for s in samples) > 300


def test_linear_float_sampling_is_uniform():
    param = Float(0.0, 1.0)
    generator = rng(5)
    samples = np.array([param.sample(generator) for _ in range(2000)])
    assert 0.45 < samples.mean() < 0.55
    assert (samples < 0.1).sum() > 100


# -- defaults, active values ----------------------------------------------------------


def test_defaults_respect_conditions():
    space = conditional_space()
    assert space.defaults() == {"layers": 1, "units": 16, "seed": 7}
    space3 = Space(
        layers=Int(1, 3, default=3),
        units_3=Int(32, 64, when={"layers": [3]}),
        lr=Float(1e-4, 1e-2, default=1e-3),
        bn=Bool(default=True),
        act=Choice(["relu", "tanh"], default="tanh"),
    )
    assert space3.defaults() == {"layers": 3, "units_3": 32, "lr": 1e-3, "bn": True,
                                 "act": "tanh"}


def test_active_drops_inactive_and_unknown_values():
    space = conditional_space()
    values = {"layers": 2, "units": 32, "units_3": 64, "seed": 7, "stale": 1}
    assert space.active(values) == {"layers": 2, "units": 32, "seed": 7}
    assert space.active({**values, "layers": 3}) == {"layers": 3, "units": 32, "units_3": 64,
                                                     "seed": 7}


def test_contains_is_type_strict():
    assert not Int(0, 10).contains(True)
    assert not Int(0, 10).contains(2.0)
    assert Int(0, 10, step=5).contains(5) and not Int(0, 10, step=5).contains(4)
    assert Choice([1, 2]).contains(1) and not Choice([1, 2]).contains(1.0)
    assert not Choice([1, 2]).contains(True)
    assert Bool().contains(False) and not Bool().contains(0)


# -- storing -------------------------------------------------------------------------------


def test_to_dict_from_dict_round_trip():
    space = Space(
        layers=Int(1, 3, default=2),
        width=Int(2, 32, step=2, log=True),
        lr=Float(1e-4, 1e-1, log=True, default=1e-3),
        dropout=Float(0.0, 0.5, step=0.1),
        act=Choice(["relu", "tanh"], ordered=False, default="tanh"),
        bn=Bool(default=True),
        seed=Fixed("abc"),
        units_3=Choice([32, 64], when={"layers": [3]}),
    )
    data = space.to_dict()
    assert data["units_3"]["when"] == {"layers": [3]}
    assert data["lr"]["type"] == "float" and data["lr"]["log"] is True
    restored = Space.from_dict(data)
    assert restored == space
    assert list(restored) == list(space)
    assert restored.to_dict() == data


def test_copy_is_independent():
    space = Space(a=Int(1, 2))
    copy = space.copy()
    copy.add("b", Bool())
    assert "b" in copy and "b" not in space
    assert copy != space


def test_canonical_key_ignores_order_but_not_type():
    assert canonical({"a": 1, "b": "x"}) == canonical({"b": "x", "a": 1})
    assert canonical({"a": 1}) != canonical({"a": 1.0})
    assert canonical({"a": 1}) != canonical({"a": True})


def test_describe():
    assert describe(Int(32, 512, log=True)) == "Int(32, 512, log)"
    assert describe(Float(0.0, 1.0, step=0.5)) == "Float(0.0, 1.0, step=0.5)"
    assert describe(Choice(["relu", "tanh"])) == "Choice(['relu', 'tanh'])"
    assert describe(Fixed(3)) == "Fixed(3)"
    space = conditional_space()
    assert describe(space["units_3"]) == "Choice([32, 64]) when layers in [3]"
