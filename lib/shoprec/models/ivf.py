"""Approximate top-K by inner product over an inverted-file (IVF) index, with per-query exclusions.

Exact top-K (:func:`~shoprec.models.neighbours.top_unexcluded`) scores every query against every
target: users x items x factors multiplications, which a catalogue of millions of items makes
the largest cost of a run. An IVF index splits the targets into lists (k-means clusters) and
scores a query only against the targets of the few lists most likely to hold its best ones.

A list's best inner product with a query ``q`` is at most ``q.c + |q| r`` (``c`` its centroid,
``r`` the largest distance of a member from it). Lists are probed in descending
``q.c + RADIUS_WEIGHT |q| r``: by the centroid alone (as FAISS's ``IndexIVFFlat`` probes for this
metric) a small list of long vectors pointing different ways has a short mean and is probed late
although one of its members may be a query's best; the whole bound, on the other hand, favours
loose lists over likely ones. Half the bound found more of the exact top K for the same probes
than either on ALS factors (``reports/README.md``).

Lists are k-means clusters of the targets as they are. ALS item factors differ in length by
orders of magnitude (a popular item's is long), and inner product rewards length: the crowd of
short vectors near the origin, which rarely reaches anyone's top K, sits in lists that are
seldom probed. (Clustering after the transform of Bachrach et al. (2014), which
adds ``sqrt(M^2 - |x|^2)`` to each vector so that inner product becomes a Euclidean distance, was
measured worse on ALS factors: with lengths spread this wide, nearly every vector's added
coordinate is ``M`` and the clusters stop telling them apart.) For unit vectors, cosine search,
this is k-means on the sphere.

Each query probes at least ``probes`` lists, and more while the lists probed hold fewer targets
than its ``k`` plus its excluded ones, so that a query gets ``k`` results whenever the catalogue
has them. With ``probes`` equal to the number of lists the search is exact. Ties are broken by
the smaller target id, as in the exact search. Everything here is NumPy: the index is built on
the driver and broadcast, the search runs on the executors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shoprec.models.neighbours import excluded_positions, top_columns

#: k-means is trained on at most this many targets per list (as FAISS does: more adds time, not quality).
TRAINING_POINTS_PER_LIST = 64
KMEANS_ITERATIONS = 20
#: Rows per chunk when comparing targets with centroids: bounds the arrays held at once.
ASSIGN_CHUNK_ROWS = 8192
#: The share of a list's radius term in its probe order (0: centroids alone; 1: the upper bound).
RADIUS_WEIGHT = 0.5


@dataclass(frozen=True)
class IvfIndex:
    """Targets grouped by list, as :func:`search` reads them.

    ``ids`` ascending with ``list_of`` and ``slot_of`` aligned to them (where each target went);
    ``list_ids`` / ``list_vectors`` hold the targets list by list (ids ascending within a list),
    list ``c`` at ``offsets[c]:offsets[c + 1]``; a query ``q`` probes lists in descending
    ``q . centroids[c] + RADIUS_WEIGHT |q| radii[c]`` (each centroid the mean of its list's
    targets, each radius the largest distance of one of them from it).
    """

    ids: np.ndarray
    list_of: np.ndarray
    slot_of: np.ndarray
    offsets: np.ndarray
    list_ids: np.ndarray
    list_vectors: np.ndarray
    centroids: np.ndarray
    radii: np.ndarray

    @property
    def lists(self) -> int:
        return len(self.offsets) - 1


def default_lists(targets: int) -> int:
    """About the square root of the targets, the usual balance between probing centroids and
    scanning lists."""
    return max(1, int(round(targets ** 0.5)))


def _nearest(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of each point's nearest centroid (Euclidean), computed in chunks."""
    squared = (centroids ** 2).sum(axis=1)
    nearest = np.empty(len(points), dtype=np.int64)
    for start in range(0, len(points), ASSIGN_CHUNK_ROWS):
        chunk = points[start:start + ASSIGN_CHUNK_ROWS]
        nearest[start:start + len(chunk)] = np.argmin(squared[None, :] - 2.0 * chunk @ centroids.T, axis=1)
    return nearest


def _sums(points: np.ndarray, assigned: np.ndarray, clusters: int) -> np.ndarray:
    """``(clusters, dims)``: the sum of the points assigned to each cluster."""
    return np.stack([np.bincount(assigned, weights=points[:, dim], minlength=clusters)
                     for dim in range(points.shape[1])], axis=1)


def kmeans_plus_plus(points: np.ndarray, clusters: int, rng: np.random.Generator) -> np.ndarray:
    """``clusters`` distinct starting centroids, each drawn with probability proportional to its
    squared distance from the nearest already drawn (Arthur & Vassilvitskii, 2007): a random
    start can put two centroids in one cluster and none in another, which Lloyd's steps do not
    repair."""
    chosen = [int(rng.integers(len(points)))]
    nearest = ((points - points[chosen[0]]) ** 2).sum(axis=1)
    for _ in range(1, clusters):
        total = nearest.sum()
        if total <= 0:  # fewer distinct points than clusters: the rest start anywhere not yet used
            unused = np.setdiff1d(np.arange(len(points)), chosen)
            chosen.extend(rng.choice(unused, clusters - len(chosen), replace=False).tolist())
            break
        pick = int(rng.choice(len(points), p=nearest / total))
        chosen.append(pick)
        nearest = np.minimum(nearest, ((points - points[pick]) ** 2).sum(axis=1))
    return points[chosen].copy()


def kmeans(points: np.ndarray, clusters: int, rng: np.random.Generator,
           iterations: int = KMEANS_ITERATIONS) -> np.ndarray:
    """Lloyd's k-means from k-means++ starting centroids; a cluster left empty is given the point
    farthest from its own centroid, so every centroid stands for some points.

    Returns:
        ``(clusters, dims)`` centroids.
    """
    centroids = kmeans_plus_plus(points, clusters, rng)
    for _ in range(iterations):
        assigned = _nearest(points, centroids)
        counts = np.bincount(assigned, minlength=clusters)
        sums = _sums(points, assigned, clusters)
        filled = counts > 0
        moved = centroids.copy()
        moved[filled] = sums[filled] / counts[filled, None]
        empty = np.flatnonzero(~filled)
        if len(empty):
            distance = ((points - moved[assigned]) ** 2).sum(axis=1)
            moved[empty] = points[np.argsort(-distance, kind="stable")[:len(empty)]]
        if np.array_equal(moved, centroids):
            break
        centroids = moved
    return centroids


def build_index(ids: np.ndarray, vectors: np.ndarray, lists: int = 0, seed: int = 42) -> IvfIndex:
    """Cluster ``vectors`` (rows aligned with ``ids``, ascending) into ``lists`` lists (0: about
    the square root of their number) by k-means on a sample of them; deterministic for a ``seed``."""
    n, _ = vectors.shape
    lists = min(lists or default_lists(n), n)
    rng = np.random.default_rng(seed)
    sample_size = min(n, TRAINING_POINTS_PER_LIST * lists)
    sample = vectors if sample_size == n else vectors[np.sort(rng.choice(n, sample_size, replace=False))]
    centroids = kmeans(sample, lists, rng)
    list_of = _nearest(vectors, centroids)
    sizes = np.bincount(list_of, minlength=lists)
    # Probed by the mean of what each list holds, not by the sample's centroid.
    filled = sizes > 0
    centroids[filled] = _sums(vectors, list_of, lists)[filled] / sizes[filled, None]
    radii = np.zeros(lists)
    for start in range(0, n, ASSIGN_CHUNK_ROWS):
        chunk = slice(start, start + ASSIGN_CHUNK_ROWS)
        np.maximum.at(radii, list_of[chunk], np.sqrt(((vectors[chunk] - centroids[list_of[chunk]]) ** 2).sum(axis=1)))
    order = np.lexsort((ids, list_of))
    slot_of = np.empty(n, dtype=np.int64)
    slot_of[order] = np.arange(n)
    return IvfIndex(ids=ids, list_of=list_of, slot_of=slot_of, offsets=np.concatenate([[0], np.cumsum(sizes)]),
                    list_ids=ids[order], list_vectors=np.ascontiguousarray(vectors[order]), centroids=centroids,
                    radii=radii)


def probe_order(index: IvfIndex, queries: np.ndarray) -> np.ndarray:
    """Each query's lists, most promising first (see :class:`IvfIndex`)."""
    promise = queries @ index.centroids.T + RADIUS_WEIGHT * np.linalg.norm(queries, axis=1)[:, None] * index.radii
    return np.argsort(-promise, axis=1, kind="stable")


def probe_counts(index: IvfIndex, order: np.ndarray, needed: np.ndarray, probes: int) -> np.ndarray:
    """Lists each query probes: at least ``probes``, and enough of the first in its ``order`` to
    hold ``needed`` targets (all of them when the catalogue is smaller)."""
    covered = np.cumsum(np.diff(index.offsets)[order], axis=1)
    reaching = covered >= needed[:, None]
    first = np.where(reaching.any(axis=1), reaching.argmax(axis=1), index.lists - 1)
    return np.clip(np.maximum(probes, first + 1), 1, index.lists)


def search(index: IvfIndex, queries: np.ndarray, k: int, probes: int,
           excluded: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each query's ``k`` targets of highest inner product among the lists it probes, leaving
    out the ids in its ``excluded`` array (ids the index does not hold are ignored).

    Returns:
        ``(rows, ranks, target ids, scores)`` flat arrays, best first within a row, ranks from 1,
        ties to the smaller id; a row gets fewer than ``k`` only when fewer targets are left.
    """
    n_rows = len(queries)
    if excluded is None:
        excluded = [np.empty(0, dtype=np.int64)] * n_rows
    # Exclusions as (row, list, position in list), ids unknown to the index dropped.
    ex_rows, at = excluded_positions(index.ids, excluded)
    ex_lists = index.list_of[at]
    ex_positions = index.slot_of[at] - index.offsets[ex_lists]
    by_list = np.argsort(ex_lists, kind="stable")
    ex_rows, ex_lists, ex_positions = ex_rows[by_list], ex_lists[by_list], ex_positions[by_list]
    ex_bounds = np.searchsorted(ex_lists, np.arange(index.lists + 1))

    order = probe_order(index, queries)
    counts = probe_counts(index, order, k + np.bincount(ex_rows, minlength=n_rows), probes)
    rows, places = np.nonzero(np.arange(index.lists)[None, :] < counts[:, None])
    probed = order[rows, places]
    grouped = np.argsort(probed, kind="stable")
    rows, probed = rows[grouped], probed[grouped]
    bounds = np.searchsorted(probed, np.arange(index.lists + 1))

    local = np.full(n_rows, -1, dtype=np.int64)
    found_rows, found_ids, found_scores = [], [], []
    for lst in np.flatnonzero(np.diff(bounds)):
        members = rows[bounds[lst]:bounds[lst + 1]]
        start, stop = index.offsets[lst], index.offsets[lst + 1]
        if start == stop:
            continue
        ids = index.list_ids[start:stop]
        scores = queries[members] @ index.list_vectors[start:stop].T
        ex_from, ex_to = ex_bounds[lst], ex_bounds[lst + 1]
        if ex_to > ex_from:
            local[members] = np.arange(len(members))
            hit = local[ex_rows[ex_from:ex_to]]
            mine = hit >= 0
            scores[hit[mine], ex_positions[ex_from:ex_to][mine]] = -np.inf
            local[members] = -1
        top_rows, _, top_cols, top_scores = top_columns(scores, ids, k)
        found_rows.append(members[top_rows])
        found_ids.append(ids[top_cols])
        found_scores.append(top_scores)
    if not found_rows:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, empty, np.empty(0)
    found_rows, found_ids, found_scores = (np.concatenate(found_rows), np.concatenate(found_ids),
                                           np.concatenate(found_scores))
    best = np.lexsort((found_ids, -found_scores, found_rows))
    found_rows, found_ids, found_scores = found_rows[best], found_ids[best], found_scores[best]
    ranks = np.arange(len(found_rows)) - np.searchsorted(found_rows, found_rows) + 1
    kept = ranks <= k
    return found_rows[kept], ranks[kept], found_ids[kept], found_scores[kept]
