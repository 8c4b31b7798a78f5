"""Plotly figures (as plain JSON-able dicts) of a study's data from `data`.

Plotly renders a subset of HTML in titles, labels and hover text, and parameter names and
values are user input: every string from the database goes through `esc` first."""

from __future__ import annotations

import html
import random
from typing import Any

from tuner.analysis import HistoryPoint, improvements
from tuner.states import TrialState

MAX_POINTS = 5000  # scatter points drawn at most; the best-so-far curve keeps every step
_COLORS = {TrialState.COMPLETE.value: "#1f77b4", TrialState.PRUNED.value: "#ff7f0e",
           TrialState.FAILED.value: "#d62728", TrialState.RUNNING.value: "#2ca02c",
           TrialState.PAUSED.value: "#9467bd"}
_DASH = {TrialState.PRUNED.value: "dash", TrialState.FAILED.value: "dot"}


def esc(value: Any) -> str:
    return html.escape(str(value))


def _layout(title: str, x: str, y: str, **extra: Any) -> dict[str, Any]:
    return {"title": {"text": title}, "xaxis": {"title": {"text": x}},
            "yaxis": {"title": {"text": y}}, "margin": {"l": 60, "r": 20, "t": 40, "b": 50},
            "height": 340, "hovermode": "closest", **extra}


def _thin(points: list[HistoryPoint]) -> list[HistoryPoint]:
    if len(points) <= MAX_POINTS:
        return points
    return sorted(random.Random(0).sample(points, MAX_POINTS), key=lambda p: p.finished_at)


def history(points: list[HistoryPoint], metric: str, *, over: str) -> dict[str, Any]:
    """Every completed trial's value and the best so far, over trial numbers or time."""
    steps = improvements(points)
    shown = _thin(points)
    start = points[0].finished_at if points else 0.0

    def x(p: HistoryPoint) -> float:
        return p.number if over == "trials" else (p.finished_at - start) / 60

    return {
        "data": [
            {"type": "scattergl", "mode": "markers", "name": "trial",
             "x": [x(p) for p in shown], "y": [p.value for p in shown],
             "text": [f"#{p.number}" for p in shown], "marker": {"size": 5, "opacity": 0.6}},
            {"type": "scatter", "mode": "lines", "name": "best so far",
             "x": [x(p) for p in steps], "y": [p.best for p in steps],
             "line": {"shape": "hv", "width": 2}},
        ],
        "layout": _layout(f"Best so far over {'trials' if over == 'trials' else 'time'}",
                          "trial" if over == "trials" else "minutes since the first result",
                          esc(metric)),
    }


def curves(rows: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """Each trial's metric per epoch (numbered from 1, as `data` gives them); pruned dashed,
    failed dotted, by colour too."""
    data = []
    seen: set[str] = set()
    for row in rows:
        state = row["state"]
        data.append({"type": "scatter", "mode": "lines+markers", "x": row["epochs"],
                     "y": row["values"], "name": state.lower(), "legendgroup": state,
                     "showlegend": state not in seen, "text": f"#{row['number']} {state}",
                     "hoverinfo": "text+x+y", "marker": {"size": 4},
                     "line": {"color": _COLORS.get(state, "#7f7f7f"),
                              "dash": _DASH.get(state, "solid"), "width": 1.5}})
        seen.add(state)
    return {"data": data, "layout": _layout("Learning curves", "epoch", esc(metric))}


def parallel(data: dict[str, Any], metric: str) -> dict[str, Any]:
    """Parameters against the metric; categorical values get a tick each."""
    trials = data["trials"]
    dimensions = []
    for name in data["params"]:
        values = [t["params"].get(name) for t in trials]
        present = [v for v in values if v is not None]
        if not present:
            continue
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
            dimensions.append({"label": esc(name),
                               "values": [v if v is not None else None for v in values]})
        else:
            labels = sorted({str(v) for v in present})
            index = {label: i for i, label in enumerate(labels)}
            dimensions.append({"label": esc(name), "tickvals": list(range(len(labels))),
                               "ticktext": [esc(label) for label in labels],
                               "values": [index.get(str(v)) if v is not None else None
                                          for v in values]})
    scores = [t["value"] for t in trials]
    dimensions.append({"label": esc(metric), "values": scores})
    return {"data": [{"type": "parcoords", "dimensions": dimensions,
                      "line": {"color": scores, "colorscale": "Viridis", "showscale": True}}],
            "layout": {"title": {"text": "Parameters against the metric"}, "height": 380,
                       "margin": {"l": 60, "r": 60, "t": 70, "b": 30}}}


def importance(scores: dict[str, float]) -> dict[str, Any]:
    names = list(scores)[::-1]  # most important on top
    layout = _layout("Parameter importance (fANOVA)", "importance", "",
                     height=max(200, 60 + 28 * len(names)))
    layout["yaxis"]["automargin"] = True  # room for long parameter names
    if not scores:  # say why rather than draw bare axes
        layout.update(xaxis={"visible": False}, yaxis={"visible": False}, annotations=[{
            "text": "not yet known: needs completed trials whose parameters and values vary",
            "showarrow": False, "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5}])
    return {"data": [{"type": "bar", "orientation": "h", "x": [scores[n] for n in names],
                      "y": [esc(n) for n in names]}],
            "layout": layout}


def lineage(segments: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """PBT: each member's segments as bars along epochs; an arrow where one copied another."""
    by_number = {s["number"]: s for s in segments}
    data = [{"type": "scatter", "mode": "lines+markers", "showlegend": False,
             "x": [s["start"], s["start"] + s["epochs"]], "y": [s["member"], s["member"]],
             "line": {"width": 6}, "hoverinfo": "text",
             "text": f"#{s['number']} member {s['member']} gen {s['generation']} "
                     f"{esc(metric)}={s['value']}"} for s in segments]
    for s in segments:
        source = by_number.get(s["restored_from"])
        if s["copied_from"] is not None and source is not None:
            data.append({"type": "scatter", "mode": "lines", "showlegend": False,
                         "x": [source["start"] + source["epochs"], s["start"]],
                         "y": [source["member"], s["member"]], "hoverinfo": "skip",
                         "line": {"dash": "dot", "color": "#d62728", "width": 1}})
    return {"data": data,
            "layout": _layout("PBT lineage (dotted: copied a better member)", "epochs trained",
                              "member",
                              yaxis={"title": {"text": "member"}, "dtick": 1})}
