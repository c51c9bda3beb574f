"""Exact scoring of dense vectors against a broadcast matrix, computed on the executors: cosine
nearest neighbours, and each user's top items by dot product with some items left out."""

from __future__ import annotations

from pyspark.sql import DataFrame

from shoprec.evaluation.ranking import RANK

SIMILAR_INDEX = "similar_index"
SCORE = "score"
#: Scores held at once per block of rows (float32): bounds a Python worker's memory whatever the catalogue.
BLOCK_SCORES = 1 << 23


def broadcast_matrix(vectors: DataFrame, normalise: bool = False):
    """``(id int, features array<float>)`` rows as one ``(ids int64, matrix float32)`` pair sorted
    by id, broadcast to the executors (it passes through the driver once), or None when empty.

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
    matrix = np.asarray(rows, dtype=np.float32)
    if normalise:
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix = matrix / np.where(norms == 0, 1, norms)
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


def nearest_neighbours(vectors: DataFrame, k: int) -> DataFrame:
    """Each vector's ``k`` most cosine-similar other vectors.

    The normalised matrix is broadcast once; each partition multiplies its rows against it in
    blocks (:func:`block_rows_for`) and keeps the top ``k`` (never the row itself; ties broken by
    the smaller id). Executor memory is about ``n x dims x 4`` bytes for the matrix plus
    ``4 x`` :data:`BLOCK_SCORES` bytes for one block of scores, so this suits catalogues up to a
    few million items; the matrix passes through the driver once.

    Args:
        vectors: ``(id int, features array<float>)``, ids unique (``ALSModel.itemFactors`` has this shape).
        k: neighbours per vector.

    Returns:
        ``(id int, rank int, similar_index int, score double)``, rank 1 = most similar.
    """
    spark = vectors.sparkSession
    schema = f"id int, {RANK} int, {SIMILAR_INDEX} int, {SCORE} double"
    shared, n = broadcast_matrix(vectors, normalise=True)
    if min(k, n - 1) <= 0:
        return spark.createDataFrame([], schema)
    block_rows = block_rows_for(n)

    def nearest(batches):
        import numpy as np
        import pandas as pd

        all_ids, all_vectors = shared.value
        for batch in batches:
            wanted = np.searchsorted(all_ids, batch["id"].to_numpy())
            for start in range(0, len(wanted), block_rows):
                block = wanted[start:start + block_rows]
                scores = all_vectors[block] @ all_vectors.T
                scores[np.arange(len(block)), block] = -np.inf
                rows, ranks, columns, top_scores = top_columns(scores, all_ids, k)
                yield pd.DataFrame({
                    "id": all_ids[block][rows].astype("int32"),
                    RANK: ranks.astype("int32"),
                    SIMILAR_INDEX: all_ids[columns].astype("int32"),
                    SCORE: top_scores.astype("float64"),
                })

    return vectors.select("id").mapInPandas(nearest, schema)


def top_unexcluded(queries: DataFrame, targets: DataFrame, k: int, excluded_col: str | None = None,
                   id_col: str = "id", target_col: str = "target", score_col: str = SCORE) -> DataFrame:
    """Each query vector's ``k`` targets with the highest dot product, leaving out the target ids
    listed in the query's ``excluded_col`` (exact, however many are left out).

    ``targets`` are broadcast once and scored in blocks as in :func:`nearest_neighbours`; ties go
    to the smaller target id. A query with fewer than ``k`` targets left gets them all.

    Args:
        queries: ``(id_col int, features array<float>[, excluded_col array<int>])``.
        targets: ``(id int, features array<float>)``, ids unique, vectors as long as the queries'.

    Returns:
        ``(id_col int, rank int, target_col int, score_col double)``, rank 1 = best.
    """
    spark = queries.sparkSession
    schema = f"{id_col} int, {RANK} int, {target_col} int, {score_col} double"
    shared, n = broadcast_matrix(targets)
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
                scores = np.stack(block["features"].to_numpy()).astype(np.float32) @ target_vectors.T
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
                    score_col: top_scores.astype("float64"),
                })

    return queries.mapInPandas(score, schema)
