"""Exact cosine nearest neighbours of dense vectors, computed on the executors."""

from __future__ import annotations

from pyspark.sql import DataFrame

from shoprec.evaluation.ranking import RANK

SIMILAR_INDEX = "similar_index"
SCORE = "score"


def nearest_neighbours(vectors: DataFrame, k: int, block_rows: int = 1024) -> DataFrame:
    """Each vector's ``k`` most cosine-similar other vectors.

    The normalised matrix is broadcast once; each partition multiplies its rows against it in
    blocks of ``block_rows`` and keeps the top ``k`` (never the row itself; ties broken by the
    smaller id). Executor memory is about ``n x dims x 4`` bytes for the matrix plus
    ``block_rows x n x 4`` for one block of scores, so this suits catalogues up to a few million
    items; the matrix passes through the driver once.

    Args:
        vectors: ``(id int, features array<float>)``, ids unique (``ALSModel.itemFactors`` has this shape).
        k: neighbours per vector.

    Returns:
        ``(id int, rank int, similar_index int, score double)``, rank 1 = most similar.
    """
    import numpy as np

    spark = vectors.sparkSession
    schema = f"id int, {RANK} int, {SIMILAR_INDEX} int, {SCORE} double"
    ids, rows = [], []
    for row in vectors.orderBy("id").toLocalIterator():
        ids.append(row["id"])
        rows.append(row["features"])
    n_neighbours = min(k, len(ids) - 1)
    if n_neighbours <= 0:
        return spark.createDataFrame([], schema)
    matrix = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    shared = spark.sparkContext.broadcast((np.asarray(ids, dtype=np.int64), matrix / np.where(norms == 0, 1, norms)))

    def nearest(batches):
        import numpy as np
        import pandas as pd

        all_ids, all_vectors = shared.value
        position = {item: i for i, item in enumerate(all_ids.tolist())}
        for batch in batches:
            wanted = np.array([position[i] for i in batch["id"].tolist()], dtype=np.int64)
            for start in range(0, len(wanted), block_rows):
                block = wanted[start:start + block_rows]
                scores = all_vectors[block] @ all_vectors.T
                scores[np.arange(len(block)), block] = -np.inf
                top = np.argpartition(-scores, n_neighbours - 1, axis=1)[:, :n_neighbours]
                top_scores = np.take_along_axis(scores, top, axis=1)
                order = np.lexsort((all_ids[top], -top_scores), axis=1)
                top = np.take_along_axis(top, order, axis=1)
                yield pd.DataFrame({
                    "id": np.repeat(all_ids[block], n_neighbours).astype("int32"),
                    RANK: np.tile(np.arange(1, n_neighbours + 1), len(block)).astype("int32"),
                    SIMILAR_INDEX: all_ids[top].ravel().astype("int32"),
                    SCORE: np.take_along_axis(top_scores, order, axis=1).ravel().astype("float64"),
                })

    return vectors.select("id").mapInPandas(nearest, schema)
