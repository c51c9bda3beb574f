"""Pseudonymous user ids: what analysts see instead of the shop's user ids.

clean_events replaces every user id with ``HMAC-SHA256(secret, user_id)``, cut to 128 bits and
written as 32 hex characters, before any other step sees it (deduplication, bot rules, derived
session ids), so every table from ``events_clean`` on carries only pseudonyms. The pairs
(pseudonym, user id) go to ``user_id_map`` under the restricted root (``privacy.restricted_root``),
beside ``events_quarantine``, whose raw lines hold the ids too. Nothing under the warehouse root
can be turned back into a user id without the secret or the restricted tables.

The secret comes from the environment variable that ``privacy.secret_env`` names (default
``SHOPREC_PSEUDONYM_SECRET``), never from a config file. It travels to the executors inside the
pickled Python function of a pandas UDF: it is not a literal of any Spark plan, SQL text, Spark
conf or MLflow param, so neither the Spark UI nor the job's logs can show it. Threat model and
operations (rotation, erasure, serving): README "Privacy".
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import TYPE_CHECKING

import pandas as pd  # module level: pandas_udf resolves the UDF's type hints from these globals

if TYPE_CHECKING:  # Spark is imported by the functions that use it: the secret check runs before it starts
    from pyspark.sql import Column, DataFrame

# Sixteen bytes of the digest: collisions among n users have probability about n^2 / 2^129,
# about 1e-21 at a billion users, while the ids stay half the width of the full digest.
PSEUDONYM_HEX_CHARS = 32
# RFC 2104: a key shorter than the hash output weakens the HMAC; 32 bytes is SHA-256's.
MIN_SECRET_BYTES = 32
PSEUDONYM = "user_pseudonym"


class SecretError(ValueError):
    """The pseudonymisation secret is missing or too weak."""


def load_secret(secret_env: str, environ: dict[str, str] | None = None) -> bytes:
    """The secret in the environment variable ``secret_env``, as bytes.

    Raises:
        SecretError: the variable is unset, empty, or shorter than 32 bytes. The message names
            the variable and never shows its value.
    """
    value = (os.environ if environ is None else environ).get(secret_env, "")
    if not value:
        raise SecretError(
            f"privacy.pseudonymize is on, but the environment variable {secret_env} (privacy.secret_env) is not set: "
            f"set it to a random secret of at least {MIN_SECRET_BYTES} bytes on the machine that runs the Spark "
            "driver (for example `openssl rand -hex 32`), the same secret on every run; or set "
            "privacy.pseudonymize: false (README \"Privacy\")")
    secret = value.encode("utf-8")
    if len(secret) < MIN_SECRET_BYTES:
        raise SecretError(f"the secret in {secret_env} is {len(secret)} bytes; at least {MIN_SECRET_BYTES} are needed "
                          "(for example `openssl rand -hex 32`)")
    return secret


def pseudonym(secret: bytes, user_id: str) -> str:
    """The pseudonym of one user id: what a serving system computes to look up a user's rows."""
    return hmac.new(secret, user_id.encode("utf-8"), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX_CHARS]


def pseudonym_column(secret: bytes):
    """A function ``Column -> Column`` mapping user ids to their pseudonyms (null stays null).

    The secret lives in the closure of the UDF's Python function, so the plan shows only the
    UDF's name.
    """
    from pyspark.sql import functions as F

    @F.pandas_udf("string")
    def user_pseudonym(user_ids: pd.Series) -> pd.Series:
        # Events repeat their users: hash each distinct id of the batch once.
        codes = {u: pseudonym(secret, u) for u in user_ids.dropna().unique()}
        return user_ids.map(codes)

    return user_pseudonym


def pseudonymize(df: "DataFrame", user_col: str, secret: bytes) -> "DataFrame":
    """``df`` with ``user_col`` replaced by its pseudonym."""
    from pyspark.sql import functions as F

    to_pseudonym = pseudonym_column(secret)
    return df.withColumn(user_col, to_pseudonym(F.col(user_col)))


def id_map(df: "DataFrame", user_col: str, secret: bytes, *keys: "str | Column") -> "DataFrame":
    """The distinct ``(user_pseudonym, user_col, *keys)`` of ``df``: the restricted map back."""
    from pyspark.sql import functions as F

    to_pseudonym = pseudonym_column(secret)
    users = df.select(user_col, *keys).where(F.col(user_col).isNotNull()).distinct()
    return users.select(to_pseudonym(F.col(user_col)).alias(PSEUDONYM), user_col, *keys)
