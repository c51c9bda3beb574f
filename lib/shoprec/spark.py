"""The one SparkSession factory.

Under ``spark-submit`` the master, deploy mode and resources come from the submit command and
are never overridden here; ``spark.master`` from config is used only when a job is started as a
plain Python process (``shoprec run ...``), which is how the embedded local defaults work.
"""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

from shoprec.config import SparkConfig

# Settings every shoprec job relies on: UTC everywhere, and overwrite of single partitions only.
REQUIRED_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
    "spark.sql.parquet.compression.codec": "snappy",
    "spark.sql.adaptive.enabled": "true",
}


def launched_by_spark_submit() -> bool:
    """True when this Python process is the driver that spark-submit started."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def build_session(cfg: SparkConfig, app_name: str | None = None) -> SparkSession:
    """Get or create the SparkSession for a job.

    Args:
        cfg: the ``spark`` section of the config.
        app_name: the job name shown in the Spark UI; defaults to ``cfg.app_name``.
    """
    builder = SparkSession.builder.appName(app_name or cfg.app_name)
    if not launched_by_spark_submit():
        # Python workers of a local session run this same interpreter (and see this package).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        if cfg.master:
            builder = builder.master(cfg.master)
    builder = builder.config("spark.sql.shuffle.partitions", str(cfg.shuffle_partitions))
    for key, value in {**cfg.conf, **REQUIRED_CONF}.items():
        builder = builder.config(key, str(value))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
