"""Pareto fronts, crowding and hypervolume, against their definitions computed the long way."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from tuner.pareto import (
    crowding_distances,
    dominates,
    front_indices,
    hypervolume,
    nondominated_ranks,
    selection_order,
)


def points(n: int, dims: int, seed: int, high: int = 6) -> list[tuple[float, ...]]:
    rng = random.Random(seed)  # small integers: ties and duplicates
    return [tuple(float(rng.randint(0, high)) for _ in range(dims)) for _ in range(n)]


@pytest.mark.parametrize(("dims", "seed"), [(2, 0), (2, 1), (3, 2), (3, 3), (4, 4)])
def test_front_and_ranks_follow_the_definition(dims, seed):
    pts = points(120, dims, seed)
    front = {i for i, p in enumerate(pts) if not any(dominates(q, p) for q in pts)}
    assert set(front_indices(pts)) == front
    ranks = nondominated_ranks(pts)
    assert {i for i, r in enumerate(ranks) if r == 0} == front
    for i, j in itertools.permutations(range(len(pts)), 2):
        if dominates(pts[i], pts[j]):
            assert ranks[i] < ranks[j]


def test_crowding_keeps_the_extremes_and_selection_prefers_the_front():
    pts = [(0.0, 4.0), (1.0, 3.0), (1.5, 2.9), (4.0, 0.0), (0.5, 0.5)]
    crowding = crowding_distances(pts[:4])
    assert math.isinf(crowding[0]) and math.isinf(crowding[3])
    assert crowding[2] > 0 and crowding[1] > 0
    order = selection_order(pts)
    assert order[-1] == 4  # the only dominated point comes last
    assert set(order[:2]) == {0, 3}  # the front's extremes first


def brute_hypervolume(pts, reference) -> float:
    """The dominated volume as a sum over the grid the points' coordinates cut space into."""
    axes = [sorted({reference[d], *(p[d] for p in pts)}) for d in range(len(reference))]
    total = 0.0
    for cell in itertools.product(*(range(len(a) - 1) for a in axes)):
        corner = [axes[d][k + 1] for d, k in enumerate(cell)]  # the cell's upper corner
        if any(all(p[d] >= corner[d] for d in range(len(p))) for p in pts):
            total += math.prod(axes[d][k + 1] - axes[d][k] for d, k in enumerate(cell))
    return total


@pytest.mark.parametrize(("dims", "seed"), [(2, 5), (3, 6), (3, 7), (4, 8)])
def test_hypervolume_is_the_dominated_volume(dims, seed):
    pts = points(10, dims, seed, high=9)
    reference = (1.0,) * dims  # points at or below it on an axis add nothing
    kept = [p for p in pts if all(x > 1.0 for x in p)]
    assert hypervolume(pts, reference) == pytest.approx(brute_hypervolume(kept, reference))


def test_hypervolume_of_a_simple_front():
    assert hypervolume([(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)], (0.0, 0.0)) == 6.0
    assert hypervolume([], (0.0, 0.0)) == 0.0
