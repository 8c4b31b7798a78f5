"""Plotly figures of a study's objectives, from `data.pareto`: the Pareto scatter (2-D for
two objectives, 3-D for three or more: the first three) and the hypervolume over time.

Objective names are user input: they reach Plotly (which renders some HTML) escaped."""

from __future__ import annotations

import random
from typing import Any

from tuner.dashboard.charts import MAX_POINTS, _layout, esc

FRONT, DOMINATED, INFEASIBLE = "#d62728", "#1f77b4", "#7f7f7f"


def axis_title(objective: dict[str, Any]) -> str:
    return esc(f"{objective['name']} ({objective['direction']})")


def _hover(point: dict[str, Any], names: list[str]) -> str:
    # <br> is Plotly's line break; everything else in the text is escaped
    lines = [f"#{point['number']}", *(f"{name} = {value:.6g}" for name, value
                                      in zip(names, point["values"], strict=False))]
    if point["broken"]:
        lines.append(esc("breaks " + "; ".join(point["broken"])))
    return "<br>".join(lines)


def _trace(kind: str, name: str, points: list[dict[str, Any]], dims: int,
           names: list[str], **style: Any) -> dict[str, Any]:
    trace = {"type": kind, "mode": "markers", "name": name, "hoverinfo": "text",
             "text": [_hover(p, names) for p in points], **style}
    for axis, i in zip("xyz", range(dims), strict=False):
        trace[axis] = [p["values"][i] for p in points]
    return trace


def pareto(data: dict[str, Any]) -> dict[str, Any]:
    """Front trials red (joined by their staircase in 2-D), dominated ones blue, infeasible
    ones grey crosses; hover shows the trial and each objective's value."""
    objectives = data["objectives"]
    dims = min(3, len(objectives))
    names = [esc(o["name"]) for o in objectives]
    points = data["points"]
    front = [p for p in points if p["front"]]
    dominated = [p for p in points if p["feasible"] and not p["front"]]
    infeasible = [p for p in points if not p["feasible"]]
    rng = random.Random(0)  # the front is always drawn whole; the rest thinned if huge
    dominated = dominated if len(dominated) <= MAX_POINTS else rng.sample(dominated, MAX_POINTS)
    infeasible = (infeasible if len(infeasible) <= MAX_POINTS
                  else rng.sample(infeasible, MAX_POINTS))
    kind = "scatter" if dims == 2 else "scatter3d"
    marker = {"size": 7 if dims == 2 else 4}
    data_ = [
        _trace(kind, "dominated", dominated, dims, names,
               marker={**marker, "color": DOMINATED, "opacity": 0.6}),
        _trace(kind, "infeasible", infeasible, dims, names,
               marker={**marker, "color": INFEASIBLE, "symbol": "x", "opacity": 0.7}),
    ]
    if dims == 2:
        # The front in order along the first objective, better last; "vh" draws the
        # boundary of what it dominates whichever way each objective goes.
        signs = [1 if o["direction"] == "maximize" else -1 for o in objectives]
        ordered = sorted(front, key=lambda p: signs[0] * p["values"][0])
        data_.append(_trace(kind, "Pareto front", ordered, dims, names, mode="lines+markers",
                            line={"shape": "vh", "color": FRONT, "width": 1.5},
                            marker={**marker, "color": FRONT, "size": 9}))
        layout = _layout("Pareto front", axis_title(objectives[0]), axis_title(objectives[1]))
    else:
        data_.append(_trace(kind, "Pareto front", front, dims, names,
                            marker={**marker, "color": FRONT, "size": 6}))
        shown = "" if len(objectives) == 3 else f" (the first 3 of {len(objectives)} objectives)"
        layout = {"title": {"text": f"Pareto front{shown}"}, "height": 520,
                  "margin": {"l": 0, "r": 0, "t": 40, "b": 0}, "hovermode": "closest",
                  "scene": {f"{axis}axis": {"title": {"text": axis_title(objectives[i])}}
                            for i, axis in enumerate("xyz")}}
    layout["legend"] = {"orientation": "h"}
    return {"data": data_, "layout": layout}


def hypervolume(data: dict[str, Any]) -> dict[str, Any]:
    """The hypervolume the front dominates after each feasible trial finished, over minutes
    since the first one; from each objective's worst value (the `reference`)."""
    history = data["hypervolume"]
    start = history[0]["finished_at"] if history else 0.0
    reference = data["reference"]
    where = "" if reference is None else esc(", ".join(
        f"{o['name']} = {r:.4g}" for o, r in zip(data["objectives"], reference, strict=True)))
    return {"data": [{"type": "scatter", "mode": "lines+markers", "name": "hypervolume",
                      "x": [(h["finished_at"] - start) / 60 for h in history],
                      "y": [h["hypervolume"] for h in history],
                      "text": [f"#{h['number']}" for h in history],
                      "line": {"shape": "hv", "width": 2}, "marker": {"size": 4}}],
            "layout": _layout("Hypervolume over time", "minutes since the first result",
                              f"hypervolume from {where}" if where else "hypervolume")}
