"""The inverted-file index: exact when every list is probed, close to exact with a few, never an
excluded item, never short of k while the catalogue has them."""

import numpy as np
import pytest

from shoprec.models import ivf
from shoprec.models.neighbours import top_columns

#: Probes of the 45 lists that find most but not all of the exact top 10 here (0.99 measured).
FEW_PROBES = 8
MIN_RECALL_AT_FEW_PROBES = 0.95


def clustered(rng, n, dims, centres):
    """Vectors around a few centres with spread-out norms, as trained factors tend to be."""
    points = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.normal(size=(n, dims))
    return points * rng.lognormal(0.0, 0.3, size=(n, 1))


@pytest.fixture(scope="module")
def catalogue():
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(30, 12))
    ids = np.sort(rng.choice(100_000, 2_000, replace=False)).astype(np.int64)
    targets = clustered(rng, len(ids), 12, centres)
    queries = clustered(rng, 400, 12, centres)
    excluded = [rng.choice(ids, rng.integers(0, 40), replace=False) for _ in range(len(queries))]
    return ids, targets, queries, excluded


def exact_top(ids, targets, queries, excluded, k):
    scores = queries @ targets.T
    for row, left_out in enumerate(excluded):
        scores[row, np.searchsorted(ids, left_out)] = -np.inf
    rows, ranks, columns, values = top_columns(scores, ids, k)
    return {(int(r), int(rank)): (int(ids[c]), v) for r, rank, c, v in zip(rows, ranks, columns, values)}


def as_dict(found):
    rows, ranks, ids, scores = found
    return {(int(r), int(rank)): (int(i), s) for r, rank, i, s in zip(rows, ranks, ids, scores)}


def test_probing_every_list_is_the_exact_search(catalogue):
    ids, targets, queries, excluded = catalogue
    index = ivf.build_index(ids, targets, lists=40, seed=1)

    found = as_dict(ivf.search(index, queries, 10, index.lists, excluded))
    exact = exact_top(ids, targets, queries, excluded, 10)

    assert {key: item for key, (item, _) in found.items()} == {key: item for key, (item, _) in exact.items()}
    assert max(abs(found[key][1] - exact[key][1]) for key in exact) < 1e-9


def test_a_few_probes_find_nearly_all_of_the_exact_top_k_and_never_an_excluded_item(catalogue):
    ids, targets, queries, excluded = catalogue
    index = ivf.build_index(ids, targets, seed=1)
    assert index.lists == ivf.default_lists(len(ids)) == 45
    assert sorted(index.list_ids.tolist()) == ids.tolist()

    rows, ranks, found_ids, scores = ivf.search(index, queries, 10, FEW_PROBES, excluded)
    exact = exact_top(ids, targets, queries, excluded, 10)

    assert np.bincount(rows, minlength=len(queries)).tolist() == [10] * len(queries)
    assert not any(item in set(excluded[row].tolist()) for row, item in zip(rows.tolist(), found_ids.tolist()))
    recall = len({(int(r), int(i)) for r, i in zip(rows, found_ids)}
                 & {(row, item) for (row, _), (item, _) in exact.items()}) / len(exact)
    assert MIN_RECALL_AT_FEW_PROBES <= recall < 1.0  # approximate, and close
    # Within each row: ranks 1..10, scores descending, each the query's product with that item.
    for row in range(len(queries)):
        mine = rows == row
        assert ranks[mine].tolist() == list(range(1, 11))
        assert np.all(np.diff(scores[mine]) <= 0)
        assert np.allclose(scores[mine], queries[row] @ targets[np.searchsorted(ids, found_ids[mine])].T)


def test_a_query_probes_more_lists_when_the_nearest_hold_too_few_items():
    # Six items in three far-apart pairs; one probe reaches only a pair.
    ids = np.array([1, 2, 3, 4, 5, 6], dtype=np.int64)
    targets = np.array([[10, 0], [10, 1], [0, 10], [1, 10], [-10, 0], [-10, -1]], dtype=np.float64)
    index = ivf.build_index(ids, targets, lists=3, seed=0)
    assert sorted(np.diff(index.offsets).tolist()) == [2, 2, 2]
    query = np.array([[1.0, 0.0]])

    rows, ranks, found, _ = ivf.search(index, query, 4, probes=1, excluded=[np.array([2, 99])])

    # Its nearest list holds 2 items, one excluded, and it asked for 4: three lists probed.
    assert found.tolist() == [1, 4, 3, 5] and ranks.tolist() == [1, 2, 3, 4]
    rows, _, found, _ = ivf.search(index, query, 10, probes=1)
    assert found.tolist() == [1, 2, 4, 3, 5, 6]  # the whole catalogue, and no more (ties: smaller id first)


def test_the_index_is_the_same_for_the_same_seed_and_every_list_is_used(catalogue):
    ids, targets, _, _ = catalogue
    first, second = ivf.build_index(ids, targets, seed=7), ivf.build_index(ids, targets, seed=7)
    assert np.array_equal(first.list_ids, second.list_ids) and np.array_equal(first.offsets, second.offsets)
    assert np.diff(first.offsets).min() > 0


def test_inner_product_lists_put_long_vectors_where_a_query_finds_them():
    # Lists are probed by inner product: the long vector's list comes first for this query,
    # where the nearest centroid in Euclidean terms is that of the short vectors.
    rng = np.random.default_rng(2)
    short = rng.normal(scale=0.1, size=(200, 2)) + np.array([1.0, 0.0])
    ids = np.arange(201, dtype=np.int64)
    targets = np.vstack([short, [[0.0, 5.0]]])
    index = ivf.build_index(ids, targets, lists=8, seed=3)

    _, _, found, _ = ivf.search(index, np.array([[0.2, 1.0]]), 1, probes=1)

    assert found.tolist() == [200]


#: Recall@10 at 16 of 55 lists on vectors with lengths over orders of magnitude: 0.991 measured
#: with the radius term in the probe order, 0.954 by the centroids alone.
MIN_RECALL_WITH_SPREAD_LENGTHS = 0.98


def test_loose_lists_of_long_vectors_are_probed_early_enough():
    # As ALS item factors: random directions, lengths spread over orders of magnitude. A list
    # holding a few long vectors pointing different ways has a short mean; its radius tells.
    rng = np.random.default_rng(8)
    directions = rng.normal(size=(3000, 8))
    targets = directions / np.linalg.norm(directions, axis=1, keepdims=True) * rng.lognormal(-3.0, 1.5, (3000, 1))
    ids = np.arange(3000, dtype=np.int64)
    queries = rng.normal(size=(300, 8))
    index = ivf.build_index(ids, targets, seed=1)
    assert index.lists == 55

    rows, _, found, _ = ivf.search(index, queries, 10, probes=16)

    exact = exact_top(ids, targets, queries, [np.empty(0, dtype=np.int64)] * len(queries), 10)
    recall = len(set(zip(rows.tolist(), found.tolist())) & {(r, i) for (r, _), (i, _) in exact.items()}) / len(exact)
    assert recall >= MIN_RECALL_WITH_SPREAD_LENGTHS
