"""Pareto fronts of objective vectors, signed so that higher is better on every axis:
dominance, non-dominated sorting and crowding distance (NSGA-II, Deb et al. 2002), and the
hypervolume a front dominates."""

from __future__ import annotations

import math
from collections.abc import Sequence

Point = Sequence[float]


def dominates(a: Point, b: Point) -> bool:
    """`a` is at least as good as `b` everywhere and better somewhere."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(
        x > y for x, y in zip(a, b, strict=True))


def nondominated_ranks(points: Sequence[Point]) -> list[int]:
    """Each point's front: 0 for the non-dominated, 1 for those only the first front
    dominates, and so on."""
    n = len(points)
    beaten_by = [0] * n
    beats: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if dominates(points[i], points[j]):
                beats[i].append(j)
                beaten_by[j] += 1
            elif dominates(points[j], points[i]):
                beats[j].append(i)
                beaten_by[i] += 1
    ranks = [0] * n
    front = [i for i in range(n) if beaten_by[i] == 0]
    rank = 0
    while front:
        following = []
        for i in front:
            ranks[i] = rank
            for j in beats[i]:
                beaten_by[j] -= 1
                if beaten_by[j] == 0:
                    following.append(j)
        front, rank = following, rank + 1
    return ranks


def front_indices(points: Sequence[Point]) -> list[int]:
    """The indices of the non-dominated points, in index order. In O(n x front) rather
    than O(n^2): sorted best first lexicographically, no point can be dominated by one
    after it, so each is checked against the front found so far only."""
    order = sorted(range(len(points)), key=lambda i: tuple(-x for x in points[i]))
    kept: list[int] = []
    for i in order:
        if not any(dominates(points[j], points[i]) for j in kept):
            kept.append(i)
    return sorted(kept)


def crowding_distances(points: Sequence[Point]) -> list[float]:
    """Each point's crowding distance within `points` (one front): the extremes are
    infinitely far, the others by the normalised gap between their neighbours."""
    n = len(points)
    distance = [0.0] * n
    if n == 0:
        return distance
    for axis in range(len(points[0])):
        order = sorted(range(n), key=lambda i: points[i][axis])
        low, high = points[order[0]][axis], points[order[-1]][axis]
        distance[order[0]] = distance[order[-1]] = math.inf
        if high == low:
            continue
        for k in range(1, n - 1):
            gap = points[order[k + 1]][axis] - points[order[k - 1]][axis]
            distance[order[k]] += gap / (high - low)
    return distance


def selection_order(points: Sequence[Point]) -> list[int]:
    """Indices best first, as NSGA-II selects: by front, then the less crowded first."""
    ranks = nondominated_ranks(points)
    crowding = [0.0] * len(points)
    for rank in set(ranks):
        members = [i for i, r in enumerate(ranks) if r == rank]
        for i, d in zip(members, crowding_distances([points[i] for i in members]), strict=True):
            crowding[i] = d
    return sorted(range(len(points)), key=lambda i: (ranks[i], -crowding[i], i))


def hypervolume(points: Sequence[Point], reference: Point) -> float:
    """The volume dominated by `points` and bounded below by `reference` (points not above
    it on every axis add nothing), by slicing along the last axis."""
    kept = [tuple(p) for p in points if all(x > r for x, r in zip(p, reference, strict=True))]
    return _volume(kept, tuple(reference))


def _volume(points: list[tuple[float, ...]], reference: tuple[float, ...]) -> float:
    if not points:
        return 0.0
    if len(reference) == 1:
        return max(p[0] for p in points) - reference[0]
    points = sorted(points, key=lambda p: p[-1], reverse=True)
    total = 0.0
    for k, point in enumerate(points):
        below = points[k + 1][-1] if k + 1 < len(points) else reference[-1]
        if point[-1] > below:
            slab = [p[:-1] for p in points[:k + 1]]
            total += _volume(front_of(slab), reference[:-1]) * (point[-1] - below)
    return total


def front_of(points: list[tuple[float, ...]]) -> list[tuple[float, ...]]:
    return [points[i] for i in front_indices(points)]
