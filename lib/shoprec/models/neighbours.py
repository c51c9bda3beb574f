"""Exact scoring of dense vectors against a broadcast matrix, computed on the executors: each
query's top targets by dot product with some targets left out, and cosine nearest neighbours."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shoprec.evaluation.ranking import RANK

SIMILAR_INDEX = "similar_index"
SCORE = "score"
#: Scores held at once per block of rows (float64): bounds a Python worker's memory whatever the catalogue.
BLOCK_SCORES = 1 << 22
#: The list of ids :func:`nearest_neighbours` leaves out of each row's own result: the row itself.
SELF = "excluded_self"


def unit_rows(matrix):
    """``matrix`` with each row scaled to length 1 (rows of zeros stay zeros)."""
    import numpy as np

    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1, norms)


def broadcast_matrix(vectors: DataFrame, normalise: bool = False):
    """``(id int, features array<float>)`` rows as one ``(ids int64, matrix float64)`` pair sorted
    by id, broadcast to the executors (it passes through the driver once), or None when empty.

    The matrix is float64 so that a score does not depend on how rows were batched: BLAS takes
    other code paths for one row than for a block, and in float32 the difference reaches the
    seventh digit, enough to reorder near-ties between a local run and a cluster run.

    Returns:
        ``(broadcast, row count)``.
    """
    import numpy as np

    ids, rows = [], []
    for row in vectors.orderBy("id").toLocalIterator():
        ids.append(row["id"])
        rows.append(row["features"])
    if not ids:
        return None, 0
    matrix = np.asarray(rows, dtype=np.float64)
    if normalise:
        matrix = unit_rows(matrix)
    return vectors.sparkSession.sparkContext.broadcast((np.asarray(ids, dtype=np.int64), matrix)), len(ids)


def block_rows_for(columns: int) -> int:
    """Rows per block so that a block of scores stays near :data:`BLOCK_SCORES` values."""
    return max(1, min(4096, BLOCK_SCORES // max(columns, 1)))


def top_columns(scores, column_ids, k: int):
    """Each row's ``k`` highest finite scores, best first, ties to the smaller column id
    (``column_ids`` ascending, as :func:`broadcast_matrix` sorts them).

    Returns:
        ``(rows, ranks, columns, scores)`` flat arrays; ranks count from 1 within each row.
    """
    import numpy as np

    n_rows, n_columns = scores.shape
    keep = min(k, n_columns)
    if keep < n_columns:
        top = np.argpartition(scores, n_columns - keep, axis=1)[:, n_columns - keep:]
        top_scores = np.take_along_axis(scores, top, axis=1)
        # argpartition cuts through a tie at the k-th score arbitrarily; such rows (rare with
        # float scores) are picked again, taking the tied columns in id order.
        kth = top_scores.min(axis=1, keepdims=True)
        straddling = np.flatnonzero((scores == kth).sum(axis=1) > (top_scores == kth).sum(axis=1))
        for row in straddling:
            above = np.flatnonzero(scores[row] > kth[row])
            tied = np.flatnonzero(scores[row] == kth[row])[:keep - len(above)]
            top[row] = np.concatenate([above, tied])
            top_scores[row] = scores[row, top[row]]
    else:
        top = np.broadcast_to(np.arange(n_columns), (n_rows, n_columns))
        top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.lexsort((column_ids[top], -top_scores), axis=1)
    top = np.take_along_axis(top, order, axis=1)
    top_scores = np.take_along_axis(top_scores, order, axis=1)
    # Left-out columns score -inf and sort last, so the ranks of what is kept stay 1, 2, 3, ...
    finite = np.isfinite(top_scores)
    ranks = np.broadcast_to(np.arange(1, keep + 1), (n_rows, keep))
    rows = np.broadcast_to(np.arange(n_rows)[:, None], (n_rows, keep))
    return rows[finite], ranks[finite], top[finite], top_scores[finite]


def top_unexcluded(queries: DataFrame, targets: DataFrame, k: int, excluded_col: str | None = None,
                   id_col: str = "id", target_col: str = "target", score_col: str = SCORE,
                   cosine: bool = False) -> DataFrame:
    """Each query vector's ``k`` targets with the highest dot product (or cosine similarity),
    leaving out the target ids listed in the query's ``excluded_col`` (exact, however many are
    left out).

    The targets are broadcast once (:func:`broadcast_matrix`); each partition multiplies its
    queries against them in blocks (:func:`block_rows_for`) and keeps the best ``k``, ties to
    the smaller target id. A query with fewer than ``k`` targets left gets them all. Executor
    memory is about ``targets x dims x 8`` bytes for the matrix plus ``8 x``
    :data:`BLOCK_SCORES` bytes for one block of scores, so this suits catalogues up to a few
    million items.

    Args:
        queries: ``(id_col int, features array<float>[, excluded_col array<int>])``.
        targets: ``(id int, features array<float>)``, ids unique, vectors as long as the queries'.
        cosine: score by cosine similarity: queries and targets scaled to length 1 first.

    Returns:
        ``(id_col int, rank int, target_col int, score_col double)``, rank 1 = best.
    """
    spark = queries.sparkSession
    schema = f"{id_col} int, {RANK} int, {target_col} int, {score_col} double"
    shared, n = broadcast_matrix(targets, normalise=cosine)
    if k <= 0 or n == 0:
        return spark.createDataFrame([], schema)
    block_rows = block_rows_for(n)

    def score(batches):
        import numpy as np
        import pandas as pd

        target_ids, target_vectors = shared.value
        for batch in batches:
            for start in range(0, len(batch), block_rows):
                block = batch.iloc[start:start + block_rows]
                query_vectors = np.stack(block["features"].to_numpy()).astype(np.float64)
                if cosine:
                    query_vectors = unit_rows(query_vectors)
                scores = query_vectors @ target_vectors.T
                if excluded_col is not None:
                    lists = [np.asarray(ids if ids is not None else [], dtype=np.int64) for ids in block[excluded_col]]
                    left_out = np.concatenate(lists)
                    rows = np.repeat(np.arange(len(block)), [len(ids) for ids in lists])
                    columns = np.minimum(np.searchsorted(target_ids, left_out), n - 1)
                    known = target_ids[columns] == left_out
                    scores[rows[known], columns[known]] = -np.inf
                rows, ranks, columns, top_scores = top_columns(scores, target_ids, k)
                yield pd.DataFrame({
                    id_col: block[id_col].to_numpy()[rows].astype("int32"),
                    RANK: ranks.astype("int32"),
                    target_col: target_ids[columns].astype("int32"),
                    score_col: top_scores,
                })

    return queries.mapInPandas(score, schema)


def nearest_neighbours(vectors: DataFrame, k: int) -> DataFrame:
    """Each vector's ``k`` most cosine-similar other vectors (exact; never the vector itself;
    ties to the smaller id): :func:`top_unexcluded` with each row's own id as its excluded list.

    Args:
        vectors: ``(id int, features array<float>)``, ids unique (``ALSModel.itemFactors`` has this shape).
        k: neighbours per vector.

    Returns:
        ``(id int, rank int, similar_index int, score double)``, rank 1 = most similar.
    """
    queries = vectors.select("id", "features", F.array("id").alias(SELF))
    return top_unexcluded(queries, vectors, k, SELF, target_col=SIMILAR_INDEX, cosine=True)
