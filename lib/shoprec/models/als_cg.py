"""Implicit ALS solved by conjugate gradient, block by block on the executors.

Spark MLlib's ALS solves each user's (and item's) normal equations exactly, by Cholesky: O(k^3)
per row on top of the O(nnz k^2) of building them. The ``implicit`` library (Frederickson) instead
takes a few conjugate-gradient steps from the row's previous factors, O(nnz k) per step, which is
what makes it several times faster at the same quality. This module runs implicit's CPU
conjugate-gradient kernel inside Spark, distributed the way MLlib distributes its own solves:

* users and items are each split into ``blocks`` blocks by index. A block's ratings (a sparse
  matrix, built once) and its factors (with its ids and which of its rows each block of the other
  side needs) are records of two cached RDDs, partitioned by block alike: an iteration rewrites
  only the factors, and reads each block's ratings once, where they are solved;
* each half-iteration, every block of the other side sends each block only the factor rows its
  ratings name, as one matrix per pair of blocks (the only shuffle); the block then updates its
  factors from their previous values with ``cg_steps`` conjugate-gradient steps;
* the only thing that passes through the driver is the k x k Gram matrix ``Y^T Y`` of the other
  side's factors: each block's share of it comes back with the result of the task that solved
  the block, so the new factors are never read back to compute it, and each half-iteration is
  one Spark job of two stages.

implicit's kernel computes ``Y^T Y`` from the factor rows it is given; a block only receives the
rows its ratings touch, so the rest of the Gram matrix is added as ``k`` extra rows that no rating
refers to (an exact square root of the missing part, by eigendecomposition).

The model is Hu, Koren & Volinsky's, as MLlib's with ``implicitPrefs``: confidence ``1 + alpha r``
and preference 1 for every rated pair, 0 (confidence 1) for the rest. One difference in the
objective: the regulariser is ``reg_param`` times the squared norm of every factor, as in
implicit, where MLlib multiplies it by the row's number of ratings. The result is an MLlib
``ALSModel``, so recommending, similar items and model logging are unchanged.
"""

from __future__ import annotations

import importlib.util
import pickle
from dataclasses import dataclass

import numpy as np
from pyspark import RDD
from pyspark.accumulators import AccumulatorParam
from pyspark.ml.recommendation import ALSModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shoprec import schemas as S

FACTOR_SCHEMA = "id int, features array<float>"
CHECKPOINT_EVERY = 10   # iterations between reliable checkpoints of the factors, when Spark has a checkpoint dir


@dataclass
class BlockFactors:
    """One block of one side: its rows, their current factors, and what it sends.

    ``ids`` (sorted) are the block's rows and ``factors`` their current factors. ``sends[d]`` are
    the local indices of the rows block ``d`` of the other side needs from this one (sorted by id,
    as ``d`` expects them).
    """

    ids: np.ndarray
    factors: np.ndarray
    sends: dict[int, np.ndarray]

    def with_factors(self, factors: np.ndarray) -> BlockFactors:
        return BlockFactors(self.ids, factors, self.sends)


@dataclass
class BlockRatings:
    """One block's ratings: a CSR matrix of its rows against the factor rows it receives from the
    other side, in the order they arrive (by sending block, then by id), plus ``rank`` empty
    columns for the rows that complete the Gram matrix. Built once; never rewritten."""

    matrix: object


def block_key(block: int) -> int:
    """The partition of a block (one module-level function, so that RDDs partitioned by it are
    recognised as partitioned alike and joined without a shuffle)."""
    return block


def build_block(block: int, rows: np.ndarray, cols: np.ndarray, confidence: np.ndarray, blocks: int, rank: int,
                seed: int) -> tuple[BlockFactors, BlockRatings]:
    """``block``'s starting factors and its ratings, from its rated pairs (``rows`` of this side,
    ``cols`` of the other)."""
    import scipy.sparse as sparse

    ids, local_rows = np.unique(rows, return_inverse=True)
    # Received factor rows: grouped by the other side's block, then by id (as each block sends them).
    received = np.unique(cols)
    received = received[np.lexsort((received, received % blocks))]
    position = np.empty(0, dtype=np.int64)
    if len(received):
        order = np.argsort(received)
        position = order[np.searchsorted(received[order], cols)]
    ratings = sparse.csr_matrix((confidence.astype(np.float32), (local_rows, position)),
                                shape=(len(ids), len(received) + rank))
    ratings.sum_duplicates()
    ratings.sort_indices()
    sends = {}
    for target in range(blocks):
        needed = np.unique(local_rows[cols % blocks == target])
        if len(needed):
            sends[target] = needed.astype(np.int64)
    return BlockFactors(ids.astype(np.int64), initial_factors(ids, rank, seed), sends), BlockRatings(ratings)


def initial_factors(ids: np.ndarray, rank: int, seed: int) -> np.ndarray:
    """Small pseudo-random starting factors in [0, 0.01) (as implicit starts), a function of each
    id and the seed alone (splitmix64 of both), so they do not depend on the blocks."""
    with np.errstate(over="ignore"):
        state = (np.asarray(ids, dtype=np.uint64)[:, None] * np.uint64(0x9E3779B97F4A7C15)
                 + np.arange(1, rank + 1, dtype=np.uint64)[None, :] * np.uint64(0xD1B54A32D192ED03)
                 + np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x94D049BB133111EB))
        state ^= state >> np.uint64(30)
        state *= np.uint64(0xBF58476D1CE4E5B9)
        state ^= state >> np.uint64(27)
        state *= np.uint64(0x94D049BB133111EB)
        state ^= state >> np.uint64(31)
    return ((state >> np.uint64(11)).astype(np.float64) / float(1 << 53) * 0.01).astype(np.float32)


def completing_rows(full_gram: np.ndarray, local: np.ndarray) -> np.ndarray:
    """``rank`` rows ``G`` with ``G^T G = full_gram - local^T local`` (the Gram matrix of the factor
    rows a block does not hold; positive semi-definite, negative rounding clipped)."""
    missing = full_gram - local.astype(np.float64).T @ local.astype(np.float64)
    values, vectors = np.linalg.eigh((missing + missing.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))).T.astype(np.float32)


def solve(state: BlockFactors, ratings: BlockRatings, received: list[tuple[int, np.ndarray]], full_gram: np.ndarray,
          reg_param: float, cg_steps: int) -> BlockFactors:
    """The block's factors after ``cg_steps`` conjugate-gradient steps, given the other side's
    factor rows it ``received`` (``(sending block, rows)``) and their full Gram matrix."""
    from implicit.cpu._als import least_squares_cg

    rank = full_gram.shape[0]
    parts = [rows for _, rows in sorted(received, key=lambda message: message[0])]
    other = np.vstack(parts) if parts else np.zeros((0, rank), dtype=np.float32)
    if other.shape[0] != ratings.matrix.shape[1] - rank:
        raise RuntimeError(f"ALS block received {other.shape[0]} factor rows, expected {ratings.matrix.shape[1] - rank}")
    other_with_rest = np.ascontiguousarray(np.vstack([other, completing_rows(full_gram, other)]), dtype=np.float32)
    factors = np.ascontiguousarray(state.factors.copy())
    least_squares_cg(ratings.matrix, factors, other_with_rest, reg_param, num_threads=1, cg_steps=cg_steps)
    return state.with_factors(factors)


@dataclass
class Side:
    """Users or items during a fit: RDDs of ``(block, BlockFactors)`` and ``(block, BlockRatings)``,
    partitioned by block alike and cached, the Gram matrix ``F^T F`` (float64) of the current
    factors, and the blocks that hold rows."""

    factors: RDD
    ratings: RDD
    gram: np.ndarray
    blocks_with_rows: list[int]


def blocks_of(pairs: DataFrame, row: str, col: str, blocks: int, rank: int, seed: int) -> Side:
    """One side's blocks, built from the rated pairs, with their starting factors."""
    def build(batches):
        import pandas as pd

        frames = [batch for batch in batches if len(batch)]
        if not frames:
            return
        for block, part in pd.concat(frames).groupby("block"):
            built = build_block(int(block), part["row"].to_numpy(), part["col"].to_numpy(),
                                part["confidence"].to_numpy(), blocks, rank, seed)
            yield pd.DataFrame({"block": [int(block)], "state": [pickle.dumps(built, protocol=5)]})

    keyed = pairs.select(F.col(row).cast("long").alias("row"), F.col(col).cast("long").alias("col"), "confidence",
                         (F.col(row) % blocks).cast("int").alias("block"))
    # Each block's ratings gathered in one partition (as Arrow batches) and turned into its state
    # there; only the finished states, one row per block, pass to the RDD.
    built = keyed.repartition(blocks, "block").mapInPandas(build, "block int, state binary")
    states = built.rdd.map(lambda r: (r["block"], pickle.loads(r["state"]))).partitionBy(blocks, block_key).persist()
    factors = states.mapValues(lambda state: state[0]).persist()
    ratings = states.mapValues(lambda state: state[1]).persist()
    ratings._jrdd.count()
    parts = factors.map(lambda kv: (kv[0], factor_gram(kv[1].factors))).collect()
    states.unpersist()
    total = np.sum([part for _, part in parts], axis=0) if parts else np.zeros((rank, rank))
    return Side(factors, ratings, total, sorted(block for block, _ in parts))


class BlockGrams(AccumulatorParam):
    """Each block's ``F^T F``, gathered by block: a block solved twice (a retried task) reports the
    same matrix again, and merging by block, not summing, counts it once."""

    def zero(self, value: dict) -> dict:
        return {}

    def addInPlace(self, value: dict, other: dict) -> dict:
        value.update(other)
        return value


def factor_gram(factors: np.ndarray) -> np.ndarray:
    """``F^T F`` in float64."""
    wide = factors.astype(np.float64)
    return wide.T @ wide


def half_step(solving: Side, sending: Side, blocks: int, reg_param: float, cg_steps: int, checkpoint: bool) -> Side:
    """``solving`` with its factors updated from ``sending``'s: the new factors cached (and
    checkpointed to the reliable checkpoint directory when ``checkpoint``), the old ones released."""
    messages = sending.factors.flatMap(
        lambda kv: [(target, (kv[0], kv[1].factors[local])) for target, local in kv[1].sends.items()]
    ).partitionBy(blocks, block_key)
    # Each block's share of the new Gram matrix is computed where the block is solved and comes
    # back with the task's result, so the new factors are not read again to compute it.
    grams = solving.factors.context.accumulator({}, BlockGrams())
    sending_gram = sending.gram

    def update(keyed):
        block, values = keyed
        state, block_ratings, received = None, None, []
        for value in values:
            if isinstance(value, BlockFactors):
                state = value
            elif isinstance(value, BlockRatings):
                block_ratings = value
            else:
                received.append(value)
        solved = solve(state, block_ratings, received, sending_gram, reg_param, cg_steps)
        grams.add({block: factor_gram(solved.factors)})
        return block, solved

    # All three partitioned by block alike: the union and the grouping move only the messages.
    updated = (solving.factors.union(solving.ratings).union(messages).groupByKey(blocks, block_key)
               .map(update, preservesPartitioning=True).persist())
    if checkpoint:
        updated.checkpoint()
    # Counted on the JVM side: the solved blocks are cached without a second pass in Python.
    updated._jrdd.count()
    solving.factors.unpersist()
    reported = grams.value
    # PySpark's driver keeps every accumulator it ever made: leave this one empty.
    grams.value = {}
    if sorted(reported) != solving.blocks_with_rows:
        raise RuntimeError(f"ALS half-step solved blocks {sorted(reported)}, expected {solving.blocks_with_rows}")
    return Side(updated, solving.ratings, np.sum(list(reported.values()), axis=0), solving.blocks_with_rows)


def fit_als_cg(indexed: DataFrame, rank: int, reg_param: float, alpha: float, max_iter: int, seed: int,
               blocks: int, cg_steps: int = 3, user_col: str = "user_index", item_col: str = "item_index",
               strength_col: str = "confidence") -> ALSModel:
    """Implicit ALS on ``(user_col, item_col, strength_col)`` rows by blocked conjugate gradient.

    Args:
        rank: factors per user and item.
        reg_param: the regulariser's weight (per factor, not scaled by the row's ratings).
        alpha: confidence ``1 + alpha * strength`` (repeated pairs summed first).
        max_iter: iterations; each updates the item factors, then the user factors.
        blocks: how many blocks each side is split into (about the cores of the cluster).
        cg_steps: conjugate-gradient steps per row and half-iteration (implicit's default is 3).

    Returns:
        an ``ALSModel`` with ``user_col``/``item_col`` set, cold-start strategy ``drop``.
    """
    S.require_columns(indexed, [user_col, item_col, strength_col], "fit_als_cg")
    if importlib.util.find_spec("implicit") is None:
        raise RuntimeError("als.solver: cg needs the 'implicit' package in the job environment "
                           "(pip install 'shoprec[als-cg]', or requirements/jobs.txt)")
    spark = indexed.sparkSession
    pairs = (indexed.groupBy(F.col(user_col).alias("u"), F.col(item_col).alias("i"))
             .agg(F.sum(strength_col).alias("s"))
             .select("u", "i", (1.0 + alpha * F.col("s")).alias("confidence"))
             .cache())
    users = blocks_of(pairs, "u", "i", blocks, rank, seed)
    items = blocks_of(pairs, "i", "u", blocks, rank, seed + 1)
    pairs.unpersist()
    # As MLlib does: with a checkpoint directory, the factors are checkpointed every few
    # iterations, so that a lost block is not recomputed from the first iteration on.
    checkpointing = spark.sparkContext.getCheckpointDir() is not None
    for iteration in range(1, max_iter + 1):
        checkpoint = checkpointing and iteration % CHECKPOINT_EVERY == 0
        items = half_step(items, users, blocks, reg_param, cg_steps, checkpoint)
        users = half_step(users, items, blocks, reg_param, cg_steps, checkpoint)
    user_factors, item_factors = factor_frame(spark, users.factors), factor_frame(spark, items.factors)
    for side in (users, items):
        side.factors.unpersist()
        side.ratings.unpersist()
    # MLlib's own model class, built from the factors (its constructor is Scala-package-private,
    # which the JVM does not enforce), so everything that serves an ALSModel serves this one.
    java_model = spark.sparkContext._jvm.org.apache.spark.ml.recommendation.ALSModel(
        f"ALSModel_cg_{seed}", rank, user_factors._jdf, item_factors._jdf)
    java_model.setUserCol(user_col).setItemCol(item_col).setColdStartStrategy("drop")
    model = ALSModel(java_model)
    model._transfer_params_from_java()
    return model


def factor_frame(spark, states) -> DataFrame:
    """``id int, features array<float>`` rows of every block's factors, cached."""
    rows = states.flatMap(lambda kv: zip(kv[1].ids.tolist(), kv[1].factors.tolist()))
    frame = spark.createDataFrame(rows, FACTOR_SCHEMA).cache()
    frame.count()
    return frame
