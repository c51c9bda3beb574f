"""Readers for raw shop logs: every record as its raw text, with the file it came from."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.config import SourceConfig


def read_raw_records(spark: SparkSession, source: SourceConfig, paths: list[str]) -> DataFrame:
    """Read raw records from ``paths`` without interpreting them.

    CSV and JSON-lines files (plain or gzip/bzip2-compressed, by file extension) are read line by
    line, so a malformed line is kept whole for the quarantine. Parquet rows are rendered as JSON.

    Returns:
        ``raw_record`` (string) and ``source_file`` (string, the file's URI).
    """
    if not paths:
        raise ValueError("read_raw_records: no input files")
    if source.format == "parquet":
        rows = spark.read.parquet(*paths)
        record = F.to_json(F.struct(*[F.col(f"`{c}`").cast("string").alias(c) for c in rows.columns]))
        return rows.select(record.alias(S.RAW_RECORD), F.col("_metadata.file_path").alias(S.SOURCE_FILE))
    lines = spark.read.option("lineSep", "\n").text(paths)
    return lines.select(F.col("value").alias(S.RAW_RECORD), F.col("_metadata.file_path").alias(S.SOURCE_FILE))
