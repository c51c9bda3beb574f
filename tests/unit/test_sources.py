"""Raw readers: Parquet rows and gzipped lines reach the transforms with their raw text and file."""

from __future__ import annotations

import gzip

from shoprec import schemas as S
from shoprec.config import CleanConfig, SourceConfig
from shoprec.etl import clean
from shoprec.io.sources import read_raw_records
from pyspark.sql import functions as F

PARQUET_SOURCE = SourceConfig(
    format="parquet",
    columns={"user_id": "customer", "item_id": "sku", "event_type": "action", "event_time": "at", "price": "amount"},
    event_types={"pv": "view", "buy": "purchase"},
    id_cast={"user_id": "long"},
)


def test_parquet_rows_are_read_as_json_records(spark, tmp_path):
    path = str(tmp_path / "events.parquet")
    spark.createDataFrame(
        [(11, "A-1", "pv", "2026-01-02T10:00:00Z", 9.5), (None, "A-2", "buy", "2026-01-02T11:00:00Z", 3.0)],
        "customer long, sku string, action string, at string, amount double",
    ).coalesce(1).write.parquet(path)
    raw = read_raw_records(spark, PARQUET_SOURCE, [path])
    assert {r[S.SOURCE_FILE].startswith("file:") for r in raw.collect()} == {True}
    rows = (clean.to_canonical(clean.parse_records(raw.withColumn(S.INGEST_BATCH, F.lit("2026-01-02")), PARQUET_SOURCE),
                               PARQUET_SOURCE, "pq", CleanConfig())
            .select(S.USER_ID, S.ITEM_ID, S.EVENT_TYPE, S.PRICE, S.REASON, S.RAW_RECORD).orderBy(S.ITEM_ID).collect())
    assert [tuple(r)[:5] for r in rows] == [("11", "A-1", "view", 9.5, None),
                                            (None, "A-2", "purchase", 3.0, S.Reason.MISSING_USER_ID)]
    assert rows[1][S.RAW_RECORD] == '{"sku":"A-2","action":"buy","at":"2026-01-02T11:00:00Z","amount":"3.0"}'


def test_gzipped_lines_keep_their_raw_text(spark, tmp_path):
    path = tmp_path / "part-0.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write('{"a": 1}\n{"a": "\u00e9t\u00e9"}\n{broken\n')
    raw = read_raw_records(spark, PARQUET_SOURCE.__class__(format="json", columns={}), [str(path)])
    assert [r[S.RAW_RECORD] for r in raw.collect()] == ['{"a": 1}', '{"a": "\u00e9t\u00e9"}', "{broken"]
