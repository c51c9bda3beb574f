"""Implicit ALS solved by conjugate gradient, block by block on the executors.

Spark MLlib's ALS solves each user's (and item's) normal equations exactly, by Cholesky: O(k^3)
per row on top of the O(nnz k^2) of building them. The ``implicit`` library (Frederickson) instead
takes a few conjugate-gradient steps from the row's previous factors, O(nnz k) per step, which is
what makes it several times faster at the same quality. This module runs implicit's CPU
conjugate-gradient kernel inside Spark, distributed the way MLlib distributes its own solves:

* users and items are each split into ``blocks`` blocks by index. A block's ratings (a sparse
  matrix, built once) and its factors (with its ids and which of its rows each block of the other
  side needs) are records of two cached RDDs, partitioned by block number alike: an iteration
  rewrites only the factors, and reads each block's ratings once, where they are solved;
* each half-iteration, every block of the other side sends each block one message (the only
  shuffle): the factor rows its ratings name, and the Gram matrix ``F^T F`` of the sender's other
  rows. The block then updates its factors from their previous values with ``cg_steps``
  conjugate-gradient steps;
* nothing passes through the driver between half-iterations: each is one Spark job, whose
  first stage reads the other side's cached factors and writes the messages, and whose second
  solves the blocks and caches their new factors. (Solving a block and writing its messages for
  the next half-iteration in one stage, through Spark's ``submitMapStage``, measured no faster,
  and that is not public API.)

implicit's kernel computes ``Y^T Y`` from the factor rows it is given; a block only receives the
rows its ratings touch, so the rest of the Gram matrix is added as ``k`` extra rows that no rating
refers to (an exact square root of the part its messages report, by eigendecomposition). Each
sender sums that part over the fewer of the rows it sends and the rows it does not (a block
usually needs nearly all of a sender's rows, or few of them).

The model is Hu, Koren & Volinsky's, as MLlib's with ``implicitPrefs``: confidence ``1 + alpha r``
and preference 1 for every rated pair, 0 (confidence 1) for the rest. One difference in the
objective: the regulariser is ``reg_param`` times the squared norm of every factor, as in
implicit, where MLlib multiplies it by the row's number of ratings. The result is an MLlib
``ALSModel``, so recommending, similar items and model logging are unchanged.
"""

from __future__ import annotations

import importlib.util
import logging
import pickle
from dataclasses import dataclass

import numpy as np
from pyspark import RDD
from pyspark.ml.recommendation import ALSModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shoprec import schemas as S

FACTOR_SCHEMA = "id int, features array<float>"
CHECKPOINT_EVERY = 10   # iterations between reliable checkpoints of the factors, when Spark has a checkpoint dir

log = logging.getLogger(__name__)


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


def completing_rows(missing_gram: np.ndarray) -> np.ndarray:
    """``rank`` rows ``G`` with ``G^T G = missing_gram`` (the Gram matrix of the factor rows a
    block does not receive; positive semi-definite, negative rounding clipped)."""
    values, vectors = np.linalg.eigh((missing_gram + missing_gram.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))).T.astype(np.float32)


def solve(state: BlockFactors, ratings: BlockRatings, received: list[np.ndarray], missing_gram: np.ndarray,
          reg_param: float, cg_steps: int) -> BlockFactors:
    """The block's factors after ``cg_steps`` conjugate-gradient steps, given the other side's
    factor rows it ``received`` (in sending block order) and the Gram matrix of the rest of them."""
    from implicit.cpu._als import least_squares_cg

    rank = missing_gram.shape[0]
    other = np.vstack(received) if received else np.zeros((0, rank), dtype=np.float32)
    if other.shape[0] != ratings.matrix.shape[1] - rank:
        raise RuntimeError(f"ALS block received {other.shape[0]} factor rows, expected {ratings.matrix.shape[1] - rank}")
    other_with_rest = np.ascontiguousarray(np.vstack([other, completing_rows(missing_gram)]), dtype=np.float32)
    factors = np.ascontiguousarray(state.factors.copy())
    least_squares_cg(ratings.matrix, factors, other_with_rest, reg_param, num_threads=1, cg_steps=cg_steps)
    return state.with_factors(factors)


@dataclass
class Message:
    """What block ``sender`` of one side sends a block of the other each half-iteration: the factor
    rows that block's ratings name (``rows``, in id order) and the Gram matrix ``F^T F`` (float64)
    of the sender's other factor rows (``unsent_gram``). The receiver's messages together give it
    every row its ratings name and the Gram matrix of all the others."""

    sender: int
    rows: np.ndarray
    unsent_gram: np.ndarray


@dataclass
class Side:
    """Users or items during a fit: RDDs of ``(block, BlockFactors)`` and ``(block, BlockRatings)``,
    partitioned by block alike and cached, and the blocks that hold rows."""

    factors: RDD
    ratings: RDD
    blocks_with_rows: list[int]


def blocks_of(pairs: DataFrame, row: str, col: str, blocks: int, rank: int, seed: int) -> Side:
    """One side's blocks, built from the rated pairs, with their starting factors."""
    def split(batches):
        import pandas as pd

        frames = [batch for batch in batches if len(batch)]
        if not frames:
            return
        for block, part in pd.concat(frames).groupby("block"):
            arrays = (part["row"].to_numpy(), part["col"].to_numpy(), part["confidence"].to_numpy())
            yield pd.DataFrame({"block": [int(block)], "chunk": [pickle.dumps(arrays, protocol=5)]})

    def build(partition):
        chunks = {}
        for block, chunk in partition:
            chunks.setdefault(block, []).append(pickle.loads(chunk))
        for block, parts in chunks.items():
            rows, cols, confidence = (np.concatenate(arrays) for arrays in zip(*parts))
            yield block, build_block(block, rows, cols, confidence, blocks, rank, seed)

    keyed = pairs.select(F.col(row).cast("long").alias("row"), F.col(col).cast("long").alias("col"), "confidence",
                         (F.col(row) % blocks).cast("int").alias("block"))
    # Each partition of pairs sends each block its share as one chunk of arrays; partitioned by
    # block number itself (not a hash of it, under which two blocks can share a partition and
    # be built one after the other), each block is built where it will be solved.
    chunks = keyed.mapInPandas(split, "block int, chunk binary").rdd.map(lambda r: (r["block"], r["chunk"]))
    states = chunks.partitionBy(blocks, block_key).mapPartitions(build, preservesPartitioning=True).persist()
    factors = states.mapValues(lambda state: state[0]).persist()
    ratings = states.mapValues(lambda state: state[1]).persist()
    ratings._jrdd.count()
    states.unpersist()
    # The block numbers, read in Spark SQL from the (cached) pairs rather than from the blocks
    # themselves, which would unpickle every block in Python.
    with_rows = sorted(r["block"] for r in keyed.select("block").distinct().collect())
    return Side(factors, ratings, with_rows)


def factor_gram(factors: np.ndarray) -> np.ndarray:
    """``F^T F`` in float64."""
    wide = factors.astype(np.float64)
    return wide.T @ wide


def message_to(block: int, factors: np.ndarray, sent: np.ndarray | None, full_gram: np.ndarray | None) -> Message:
    """``block``'s message to a block of the other side that needs its rows ``sent`` (local
    indices; None for none). The Gram matrix of the rows not sent is summed over the fewer of the
    two sets (usually a receiver needs nearly every row, or very few): when that is the rows
    sent, it is taken from ``full_gram``, the Gram matrix of all of ``factors``."""
    if sent is None:
        sent = np.zeros(0, dtype=np.int64)
    if sends_few(len(sent), len(factors)):
        unsent_gram = full_gram - factor_gram(factors[sent])
    else:
        unsent = np.ones(len(factors), dtype=bool)
        unsent[sent] = False
        unsent_gram = factor_gram(factors[unsent])
    return Message(block, factors[sent], unsent_gram)


def sends_few(sent: int, rows: int) -> bool:
    """Whether a message sending ``sent`` of a block's ``rows`` factor rows sends at most half."""
    return 2 * sent <= rows


def outbox(factors: RDD, receivers: list[int], blocks: int) -> RDD:
    """The messages one side's ``factors`` send the other side's blocks ``receivers`` (every
    receiver gets one from every block, rows or not, for its Gram matrix), partitioned by
    receiving block."""
    def send(keyed):
        block, state = keyed
        rows = len(state.factors)
        sent = {target: state.sends.get(target) for target in receivers}
        needs_full_gram = any(sends_few(0 if rows_sent is None else len(rows_sent), rows) for rows_sent in sent.values())
        full_gram = factor_gram(state.factors) if needs_full_gram else None
        for target, rows_sent in sent.items():
            yield target, message_to(block, state.factors, rows_sent, full_gram)

    return factors.flatMap(send).partitionBy(blocks, block_key)


def received_rows_and_missing_gram(messages: list[Message], senders: list[int], block: int
                                   ) -> tuple[list[np.ndarray], np.ndarray]:
    """The received rows in sending block order (as the block's ratings number them) and the
    Gram matrix of all the rows not received (summed in sender order, so that it does not depend
    on the order the messages arrived in); an error unless exactly ``senders`` sent one each."""
    by_sender = sorted(messages, key=lambda message: message.sender)
    if [message.sender for message in by_sender] != senders:
        raise RuntimeError(f"ALS block {block} heard from blocks {[m.sender for m in by_sender]}, "
                           f"expected one message from each of {senders}")
    missing = by_sender[0].unsent_gram.copy()
    for message in by_sender[1:]:
        missing += message.unsent_gram
    return [message.rows for message in by_sender], missing


def half_step(solving: Side, sending: Side, blocks: int, reg_param: float, cg_steps: int,
              checkpoint: bool = False) -> Side:
    """``solving`` with its factors updated from the messages ``sending``'s factors send it: one
    Spark job (the messages, then the solves), whose new factors are cached (and checkpointed
    when asked) and replace the previous ones, which are released."""
    senders = sending.blocks_with_rows

    def update(partition):
        block, state, block_ratings, messages = None, None, None, []
        for block, value in partition:
            if isinstance(value, BlockFactors):
                state = value
            elif isinstance(value, BlockRatings):
                block_ratings = value
            else:
                messages.append(value)
        if state is None:
            return
        received, missing_gram = received_rows_and_missing_gram(messages, senders, block)
        yield block, solve(state, block_ratings, received, missing_gram, reg_param, cg_steps)

    inbox = outbox(sending.factors, solving.blocks_with_rows, blocks)
    # All three partitioned by block alike, one block per partition: their union puts a block's
    # factors, ratings and messages in one partition without moving anything.
    updated = (solving.factors.union(solving.ratings).union(inbox)
               .mapPartitions(update, preservesPartitioning=True).persist())
    if checkpoint:
        updated.checkpoint()
    # Counted on the JVM side, so the solved blocks are cached without a second pass in Python;
    # a partition yields at most its own block, so the count says whether every block was solved.
    solved = updated._jrdd.count()
    if solved != len(solving.blocks_with_rows):
        raise RuntimeError(f"ALS half-iteration solved {solved} blocks, expected {len(solving.blocks_with_rows)} "
                           f"(blocks {solving.blocks_with_rows})")
    solving.factors.unpersist()
    return Side(updated, solving.ratings, solving.blocks_with_rows)


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
    log.info("fit_als_cg: %d user and %d item blocks built; %d iterations of rank %d", len(users.blocks_with_rows),
             len(items.blocks_with_rows), max_iter, rank)
    # As MLlib does: with a checkpoint directory, the factors are checkpointed every few
    # iterations, so that a lost block is not recomputed from the first iteration on.
    checkpointing = spark.sparkContext.getCheckpointDir() is not None
    # Nothing passes through the driver between half-steps: each is one job, which reads the
    # other side's cached factors.
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
