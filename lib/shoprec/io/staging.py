"""Intermediate results of one job kept as Parquet on the storage the tables live on."""

from __future__ import annotations

import hashlib
import re
from typing import Sequence

from pyspark.sql import DataFrame, SparkSession

from shoprec.config import Config
from shoprec.io.fs import HadoopFS
from shoprec.io.tables import parquet_writer

STAGING_DIR = "_staging"


def staging_root(cfg: Config, purpose: str, key: str | None = None) -> str:
    """Where a job stages its intermediate results: under the restricted root (they can hold user
    ids), one directory per ``purpose`` and, when two runs of it may overlap, per ``key`` (a date
    as it is; anything else, such as a path, hashed into a plain directory name)."""
    if key is None:
        return f"{cfg.restricted_root}/{STAGING_DIR}/{purpose}"
    if not re.fullmatch(r"[\w.-]+", key):
        key = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{cfg.restricted_root}/{STAGING_DIR}/{purpose}-{key}"


class Staging:
    """A job's scratch directory: each DataFrame it keeps is written once as Parquet and read back.

    Reading it back cuts the lineage (a deep plan is not planned or computed again) and, unlike
    Spark's local checkpoint, whose blocks live on the executor that computed them, survives the
    loss of any executor: the files are on the shared storage, so a replacement executor reads
    them and the job goes on. Used as a context manager: the directory is emptied on entry (what a
    killed driver left there) and removed on exit, whether the job succeeded or not.
    """

    def __init__(self, spark: SparkSession, root: str):
        self.spark, self.root = spark, root.rstrip("/")
        self._fs = HadoopFS(spark)

    def __enter__(self) -> Staging:
        self._fs.delete(self.root)
        return self

    def __exit__(self, *exc_info) -> bool:
        self._fs.delete(self.root)
        return False

    def keep(self, df: DataFrame, name: str, plain_columns: Sequence[str] = ()) -> DataFrame:
        """``df`` computed now, written under ``name`` and read back with the same schema; the
        ``plain_columns`` are written without a Parquet dictionary (``tables.parquet_writer``)."""
        path = f"{self.root}/{name}"
        parquet_writer(df, plain_columns).parquet(path)
        # The schema given, not inferred: an empty result reads back with its columns.
        return self.spark.read.schema(df.schema).parquet(path)
