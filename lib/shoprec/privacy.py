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

This module is what every job loads for its up-front secret check, so it needs neither Spark nor
pandas; the Spark side (the UDF, pseudonymising a DataFrame, the map back) is
``shoprec.pseudonyms``.
"""

from __future__ import annotations

import hashlib
import hmac
import os

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
