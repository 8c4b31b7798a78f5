"""A two-objective toy problem for the evolution strategy (no Keras): accuracy against
cost, with a conditional parameter and a bound on cost. More layers buy accuracy at a
price; a third layer has a width of its own."""

from tuner import Choice, Float, Int, Space

metric = ["accuracy", "cost"]
direction = ["maximize", "minimize"]
constraints = {"cost": ("<=", 8.0)}

space = Space(
    layers=Int(1, 3),
    width_3=Choice([2, 4, 8], when={"layers": [3]}),
    x=Float(0.0, 1.0),
    act=Choice(["relu", "tanh"]),
)


def objective(hp):
    cost = hp["layers"] + (hp["width_3"] if hp["layers"] == 3 else 0) + hp["x"]
    accuracy = 1 - 1 / (1 + cost) - 0.1 * (hp["act"] == "tanh") - 0.2 * abs(hp["x"] - 0.7)
    return {"accuracy": accuracy, "cost": cost}
