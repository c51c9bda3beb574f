"""Train/test splits for offline evaluation: per-user stratified random, and by time."""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from shoprec import schemas as S

SPLIT = "_split"


def stratified_split(interactions: DataFrame, ratio: float, seed: int, user_col: str = S.USER_ID,
                     item_col: str = S.ITEM_ID) -> tuple[DataFrame, DataFrame]:
    """Split each user's interactions at random into ``ratio`` for training and the rest for testing.

    The order within a user is a hash of ``(seed, user, item)``, so the split depends only on the
    seed and the data, not on how Spark partitions it. A user with ``n`` interactions keeps
    ``round(ratio * n)`` of them (at least one) in training.

    Returns:
        ``(train, test)``, both with the columns of ``interactions``.
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"stratified_split: ratio must be in (0, 1), got {ratio}")
    S.require_columns(interactions, [user_col, item_col], "stratified_split")
    shuffled = Window.partitionBy(user_col).orderBy(
        F.xxhash64(F.lit(seed), F.col(user_col).cast("string"), F.col(item_col).cast("string")), item_col)
    per_user = Window.partitionBy(user_col)
    marked = (interactions
              .withColumn("_position", F.row_number().over(shuffled))
              .withColumn("_keep", F.greatest(F.lit(1), F.round(F.count(F.lit(1)).over(per_user) * ratio)))
              .withColumn(SPLIT, F.col("_position") <= F.col("_keep"))
              .drop("_position", "_keep"))
    return marked.where(F.col(SPLIT)).drop(SPLIT), marked.where(~F.col(SPLIT)).drop(SPLIT)


def time_split(events: DataFrame, cutoff: str, time_col: str = S.EVENT_TIME) -> tuple[DataFrame, DataFrame]:
    """Events strictly before ``cutoff`` (a UTC timestamp or date string) and those at or after it."""
    S.require_columns(events, [time_col], "time_split")
    boundary = F.to_timestamp(F.lit(cutoff))
    return events.where(F.col(time_col) < boundary), events.where(F.col(time_col) >= boundary)
