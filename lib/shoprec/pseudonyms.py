"""Pseudonymous user ids on Spark: the UDF that hashes a user-id column, and the map back.

The hash itself, the secret's checks and the threat model are in ``shoprec.privacy``.
"""

from __future__ import annotations

import pandas as pd  # module level: pandas_udf resolves the UDF's type hints from these globals
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.privacy import PSEUDONYM, pseudonym


def pseudonym_column(secret: bytes):
    """A function ``Column -> Column`` mapping user ids to their pseudonyms (null stays null).

    The secret lives in the closure of the UDF's Python function, so the plan shows only the
    UDF's name.
    """
    @F.pandas_udf("string")
    def user_pseudonym(user_ids: pd.Series) -> pd.Series:
        # Events repeat their users: hash each distinct id of the batch once.
        codes = {u: pseudonym(secret, u) for u in user_ids.dropna().unique()}
        return user_ids.map(codes)

    return user_pseudonym


def pseudonymize(df: DataFrame, user_col: str, users: DataFrame, *keys: str, broadcast: bool = True) -> DataFrame:
    """``df`` with ``user_col`` replaced by its pseudonym, looked up in ``users``.

    Each distinct user is hashed once (in :func:`id_map`), not every event, and every row gets
    the pseudonym the map holds.

    Args:
        df: rows with ``user_col`` and ``keys``.
        users: the output of :func:`id_map` over the same ``keys`` (``user_pseudonym``,
            ``user_col``, ``*keys``), built from ``df`` or a superset of its users.
        keys: further columns the map is keyed by (e.g. the ingest batch).
        broadcast: ship ``users`` whole to every task (no shuffle of ``df``); for maps too large
            for that, False lets Spark plan a shuffle join.

    Returns:
        ``df``'s columns in order, ``user_col`` holding the pseudonym (string); null where the
        user id is null or missing from ``users``.
    """
    S.require_columns(df, [user_col, *keys], "pseudonymize")
    lookup = users.select(F.col(PSEUDONYM).alias("_pseudonym"), F.col(user_col).alias("_user"),
                          *[F.col(k).alias(f"_key_{k}") for k in keys])
    lookup = F.broadcast(lookup) if broadcast else lookup
    condition = F.col(user_col) == F.col("_user")
    for k in keys:
        condition = condition & (F.col(k) == F.col(f"_key_{k}"))
    joined = df.join(lookup, condition, "left")
    return joined.select(*[F.col("_pseudonym").alias(user_col) if c == user_col else F.col(c) for c in df.columns])


def id_map(df: DataFrame, user_col: str, secret: bytes, *keys: str | Column) -> DataFrame:
    """The distinct ``(user_pseudonym, user_col, *keys)`` of ``df``: the restricted map back."""
    to_pseudonym = pseudonym_column(secret)
    users = df.select(user_col, *keys).where(F.col(user_col).isNotNull()).distinct()
    return users.select(to_pseudonym(F.col(user_col)).alias(PSEUDONYM), user_col, *keys)
