"""Pseudonymous user ids on Spark: the UDF that hashes a user-id column, and the map back.

The hash itself, the secret's checks and the threat model are in ``shoprec.privacy``.
"""

from __future__ import annotations

import pandas as pd  # module level: pandas_udf resolves the UDF's type hints from these globals
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

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


def pseudonymize(df: DataFrame, user_col: str, secret: bytes) -> DataFrame:
    """``df`` with ``user_col`` replaced by its pseudonym."""
    to_pseudonym = pseudonym_column(secret)
    return df.withColumn(user_col, to_pseudonym(F.col(user_col)))


def id_map(df: DataFrame, user_col: str, secret: bytes, *keys: str | Column) -> DataFrame:
    """The distinct ``(user_pseudonym, user_col, *keys)`` of ``df``: the restricted map back."""
    to_pseudonym = pseudonym_column(secret)
    users = df.select(user_col, *keys).where(F.col(user_col).isNotNull()).distinct()
    return users.select(to_pseudonym(F.col(user_col)).alias(PSEUDONYM), user_col, *keys)
