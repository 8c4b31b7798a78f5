"""The define-by-run `hp` object: KerasTuner's `HyperParameters` semantics."""

from __future__ import annotations

import pytest

from tuner.errors import SpaceError
from tuner.hyperparameters import HyperParameters
from tuner.space import Bool, Choice, Fixed, Float, Int, Space


def test_int_returns_min_on_first_registration_and_registers():
    hp = HyperParameters()
    assert hp.Int("units", 32, 512, step=32) == 32
    assert hp.values == {"units": 32}
    assert hp.space["units"] == Int(32, 512, step=32, name="units")


def test_int_returns_its_default_when_given():
    hp = HyperParameters()
    assert hp.Int("units", 32, 512, step=32, default=128) == 128
    assert hp.space["units"].default == 128


def test_registration_with_values_returns_those_values():
    hp = HyperParameters(values={"units": 256, "lr": 0.005, "act": "tanh", "bn": True})
    assert hp.Int("units", 32, 512, step=32) == 256
    assert hp.Float("lr", 1e-4, 1e-2, sampling="log") == 0.005
    assert hp.Choice("act", ["relu", "tanh"]) == "tanh"
    assert hp.Boolean("bn") is True
    assert set(hp.space.to_dict()) == {"units", "lr", "act", "bn"}


def test_second_call_with_same_definition_returns_same_value():
    hp = HyperParameters(values={"units": 64})
    assert hp.Int("units", 32, 512, step=32) == 64
    assert hp.Int("units", 32, 512, step=32) == 64
    assert len(hp.space) == 1


def test_log_sampling():
    hp = HyperParameters()
    assert hp.Float("lr", 1e-4, 1e-2, sampling="log") == pytest.approx(1e-4)
    assert hp.Int("width", 2, 64, step=2, sampling="LOG") == 2
    assert hp.space["lr"].log is True
    assert hp.space["width"].log is True
    assert hp.space["width"].grid() == [2, 4, 8, 16, 32, 64]
    assert hp.Float("dropout", 0.0, 0.5, sampling="linear") == 0.0
    assert hp.space["dropout"].log is False


def test_log_sampling_with_non_positive_min_raises():
    hp = HyperParameters()
    with pytest.raises(SpaceError, match="'lr'.*low > 0"):
        hp.Float("lr", 0.0, 1.0, sampling="log")


@pytest.mark.parametrize("method", ["Int", "Float"])
def test_unknown_sampling_raises_naming_the_parameter(method):
    hp = HyperParameters()
    with pytest.raises(SpaceError, match="'x'.*sampling='cubic'"):
        getattr(hp, method)("x", 1, 10, sampling="cubic")
    assert "x" not in hp.space


def test_invalid_range_raises_naming_the_parameter():
    hp = HyperParameters()
    with pytest.raises(SpaceError, match="'units'.*greater than"):
        hp.Int("units", 512, 32)
    assert "units" not in hp.space


def test_parent_name_inactive_returns_none_and_stays_out_of_values():
    hp = HyperParameters(values={"model": "mlp"})
    assert hp.Choice("model", ["mlp", "cnn"]) == "mlp"
    filters = hp.Int("filters", 8, 64, parent_name="model", parent_values=["cnn"])
    assert filters is None
    assert "filters" not in hp.values
    assert "filters" not in hp
    assert hp.space["filters"].when == (("model", ("cnn",)),)


def test_parent_name_active_returns_value():
    hp = HyperParameters(values={"model": "cnn"})
    hp.Choice("model", ["mlp", "cnn"])
    assert hp.Int("filters", 8, 64, parent_name="model", parent_values=["cnn"]) == 8
    assert hp.values == {"model": "cnn", "filters": 8}


def test_parent_name_without_parent_values_raises():
    hp = HyperParameters()
    hp.Choice("model", ["mlp", "cnn"])
    with pytest.raises(SpaceError, match="'filters'.*parent_values"):
        hp.Int("filters", 8, 64, parent_name="model")


def test_parent_name_undefined_raises():
    hp = HyperParameters()
    with pytest.raises(SpaceError, match="'filters'.*'model'"):
        hp.Int("filters", 8, 64, parent_name="model", parent_values=["cnn"])


def test_inactive_value_given_for_trial_is_dropped_when_registered():
    """A stale value for a parameter whose condition does not hold is removed."""
    hp = HyperParameters(values={"model": "mlp", "filters": 32})
    hp.Choice("model", ["mlp", "cnn"])
    assert hp.Int("filters", 8, 64, parent_name="model", parent_values=["cnn"]) is None
    assert hp.values == {"model": "mlp"}


@pytest.mark.parametrize(("parent", "value"), [("act", "relu"), ("layers", 3)])
def test_parent_values_accepts_a_single_value(parent, value):
    hp = HyperParameters(values={"act": "relu", "layers": 3})
    hp.Choice("act", ["relu", "tanh"])
    hp.Int("layers", 1, 3)
    assert hp.Int("child", 1, 4, parent_name=parent, parent_values=value) == 1
    assert hp.space["child"].when == ((parent, (value,)),)


def test_conditional_scope_on_undefined_parent_raises():
    hp = HyperParameters()
    with pytest.raises(SpaceError, match="'model'.*not defined"):
        with hp.conditional_scope("model", ["cnn"]):
            pass


def test_conditional_scope_accepts_a_single_value():
    hp = HyperParameters(values={"layers": 3})
    hp.Int("layers", 1, 3)
    with hp.conditional_scope("layers", 3):
        assert hp.Int("units_3", 8, 16) == 8
    assert hp.space["units_3"].when == (("layers", (3,)),)


def test_conditional_scope_ends_with_the_block():
    hp = HyperParameters(values={"model": "mlp"})
    hp.Choice("model", ["mlp", "cnn"])
    with hp.conditional_scope("model", ["cnn"]):
        assert hp.Int("filters", 8, 64) is None
    assert hp.Int("units", 8, 64) == 8
    assert hp.space["units"].when == ()


def test_conditional_scope_pops_its_condition_after_an_error():
    hp = HyperParameters()
    hp.Choice("model", ["mlp", "cnn"])
    with pytest.raises(RuntimeError):
        with hp.conditional_scope("model", ["cnn"]):
            raise RuntimeError("boom")
    assert hp.Int("units", 8, 64) == 8
    assert hp.space["units"].when == ()


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"model": "mlp"}, {"model": "mlp"}),
        ({"model": "cnn", "pool": False}, {"model": "cnn", "pool": False, "filters": 8}),
        ({"model": "cnn", "pool": True, "pool_size": 3},
         {"model": "cnn", "pool": True, "pool_size": 3, "filters": 8}),
    ],
)
def test_nested_conditional_scopes(values, expected):
    """`pool_size` lives under two scopes: both conditions must hold."""
    hp = HyperParameters(values=values)
    hp.Choice("model", ["mlp", "cnn"])
    with hp.conditional_scope("model", ["cnn"]):
        hp.Boolean("pool")
        with hp.conditional_scope("pool", [True]):
            pool_size = hp.Int("pool_size", 2, 4)
        hp.Int("filters", 8, 64)
    assert hp.values == expected
    assert pool_size == expected.get("pool_size")
    assert hp.space["pool_size"].when == (("model", ("cnn",)), ("pool", (True,)))
    assert hp.space["filters"].when == (("model", ("cnn",)),)


def test_name_scope_prefixes_names():
    hp = HyperParameters()
    with hp.name_scope("block_1"):
        assert hp.Int("units", 8, 64) == 8
        with hp.name_scope("conv"):
            hp.Int("filters", 4, 8)
            assert hp.get("filters") == 4  # read inside the scope without the prefix
            assert "filters" in hp
        assert hp["units"] == 8
    assert set(hp.values) == {"block_1/units", "block_1/conv/filters"}
    assert hp["block_1/conv/filters"] == 4
    assert "units" not in hp
    with pytest.raises(KeyError):
        hp.get("units")


def test_name_scope_applies_to_conditional_parents():
    hp = HyperParameters(values={"block/kind": "dense"})
    with hp.name_scope("block"):
        hp.Choice("kind", ["dense", "conv"])
        with hp.conditional_scope("kind", ["dense"]):
            assert hp.Int("units", 8, 64) == 8
    assert hp.space["block/units"].when == (("block/kind", ("dense",)),)


def test_get_inactive_raises_value_error_and_unknown_raises_key_error():
    hp = HyperParameters(values={"model": "mlp"})
    hp.Choice("model", ["mlp", "cnn"])
    hp.Int("filters", 8, 64, parent_name="model", parent_values=["cnn"])
    with pytest.raises(ValueError, match="filters is currently inactive"):
        hp.get("filters")
    with pytest.raises(ValueError, match="inactive"):
        hp["filters"]
    with pytest.raises(KeyError, match="nothing does not exist"):
        hp.get("nothing")
    with pytest.raises(KeyError):
        hp["nothing"]
    assert hp["model"] == "mlp"


def test_in_operator():
    hp = HyperParameters(values={"model": "mlp"})
    hp.Choice("model", ["mlp", "cnn"])
    hp.Int("filters", 8, 64, parent_name="model", parent_values=["cnn"])
    assert "model" in hp
    assert "filters" not in hp  # defined but inactive
    assert "nothing" not in hp
    assert 3 not in hp


def test_is_active():
    hp = HyperParameters(values={"model": "mlp"})
    hp.Choice("model", ["mlp", "cnn"])
    hp.Int("filters", 8, 64, parent_name="model", parent_values=["cnn"])
    assert hp.is_active("model")
    assert not hp.is_active("filters")


def test_boolean():
    hp = HyperParameters()
    assert hp.Boolean("bn") is False
    assert hp.Boolean("shuffle", default=True) is True
    assert hp.space["bn"] == Bool(name="bn")
    assert hp.space["shuffle"].default is True
    assert HyperParameters(values={"bn": True}).Boolean("bn") is True


def test_fixed():
    hp = HyperParameters()
    assert hp.Fixed("batch_size", 64) == 64
    assert hp.values["batch_size"] == 64
    assert hp.space["batch_size"] == Fixed(64, name="batch_size")
    assert list(hp.space.grid()) == [{"batch_size": 64}]
    with pytest.raises(SpaceError, match="'batch_size'"):
        hp.Fixed("batch_size", 128)


def test_choice_defaults_to_first_value_or_given_default():
    hp = HyperParameters()
    assert hp.Choice("act", ["relu", "tanh"]) == "relu"
    assert hp.Choice("opt", ["adam", "sgd"], default="sgd") == "sgd"
    with pytest.raises(SpaceError, match="'bad'.*duplicates"):
        hp.Choice("bad", [1, 1])


def declared_space() -> Space:
    return Space(
        layers=Int(1, 3, default=2),
        units_3=Int(32, 256, step=32, when={"layers": [3]}),
        lr=Float(1e-4, 1e-2, log=True),
        act=Choice(["relu", "tanh"]),
    )


def test_declared_space_answers_without_registration():
    space = declared_space()
    hp = HyperParameters(space, space.defaults())
    assert hp["layers"] == 2
    assert hp["lr"] == pytest.approx(1e-4)
    assert hp["act"] == "relu"
    assert "layers" in hp
    with pytest.raises(ValueError, match="inactive"):
        hp["units_3"]


def test_declared_space_same_definition_returns_trial_value():
    space = declared_space()
    hp = HyperParameters(space, {"layers": 3, "units_3": 128, "lr": 0.001, "act": "tanh"})
    assert hp.Int("layers", 1, 3, default=2) == 3
    with hp.conditional_scope("layers", [3]):
        assert hp.Int("units_3", 32, 256, step=32) == 128
    assert hp.space == space  # nothing new was discovered


def test_redefining_a_declared_name_with_a_different_range_raises():
    space = declared_space()
    hp = HyperParameters(space, space.defaults())
    with pytest.raises(SpaceError, match="'lr'.*defined twice"):
        hp.Float("lr", 1e-5, 1e-2, sampling="log")
    with pytest.raises(SpaceError, match="'act'"):
        hp.Choice("act", ["relu", "gelu"])


def test_new_parameters_do_not_change_the_given_space():
    space = declared_space()
    hp = HyperParameters(space, space.defaults())
    hp.Float("dropout", 0.0, 0.5)
    assert "dropout" in hp.space
    assert "dropout" not in space


def test_from_values():
    hp = HyperParameters.from_values({"units": 96})
    assert hp["units"] == 96
    assert hp.Int("units", 32, 512, step=32) == 96


def build_model(hp: HyperParameters) -> dict:
    """A KerasTuner-style build function that returns a plain description, not a model."""
    model: dict = {"layers": []}
    for i in range(hp.Int("num_layers", 1, 3, default=2)):
        model["layers"].append({
            "units": hp.Int(f"units_{i}", 32, 256, step=32),
            "activation": hp.Choice("activation", ["relu", "tanh"]),
        })
    if hp.Boolean("dropout"):
        with hp.conditional_scope("dropout", [True]):
            model["dropout"] = hp.Float("rate", 0.1, 0.5, step=0.1)
    optimizer = hp.Choice("optimizer", ["adam", "sgd"])
    with hp.conditional_scope("optimizer", ["sgd"]):
        momentum = hp.Float("momentum", 0.0, 0.9, step=0.1)
    model["optimizer"] = {
        "name": optimizer,
        "lr": hp.Float("lr", 1e-4, 1e-2, sampling="log"),
        "momentum": momentum,
    }
    return model


def test_build_model_discovers_space_and_values():
    hp = HyperParameters()
    model = build_model(hp)
    assert model == {
        "layers": [{"units": 32, "activation": "relu"}] * 2,
        "optimizer": {"name": "adam", "lr": pytest.approx(1e-4), "momentum": None},
    }
    # the scope around `rate` never ran, so it is not discovered yet; momentum is
    assert list(hp.space.to_dict()) == [
        "num_layers", "units_0", "activation", "units_1", "dropout", "optimizer", "momentum",
        "lr",
    ]
    assert hp.space["momentum"].when == (("optimizer", ("sgd",)),)
    assert hp.values == {
        "num_layers": 2, "units_0": 32, "activation": "relu", "units_1": 32,
        "dropout": False, "optimizer": "adam", "lr": pytest.approx(1e-4),
    }


def test_build_model_second_trial_extends_the_space():
    """A later trial with other values meets new parameters, which take their defaults."""
    first = HyperParameters()
    build_model(first)
    hp = HyperParameters(first.space, {
        "num_layers": 3, "units_0": 64, "activation": "tanh", "units_1": 96,
        "dropout": True, "optimizer": "sgd", "momentum": 0.9, "lr": 0.001,
    })
    model = build_model(hp)
    assert [layer["units"] for layer in model["layers"]] == [64, 96, 32]
    assert model["dropout"] == pytest.approx(0.1)
    assert model["optimizer"] == {"name": "sgd", "lr": 0.001, "momentum": 0.9}
    assert {"units_2", "rate"} <= set(hp.space.to_dict())
    assert hp.space["rate"].when == (("dropout", (True,)),)
    assert hp.values["units_2"] == 32
    assert set(hp.values) == set(hp.space.to_dict())  # everything is active here
    assert "units_2" not in first.space
