"""clean_events through spark-submit on the real REES46 clickstream sample, checked against counts
worked out here with Python's csv module, and against the figures in the dataset's PROVENANCE.md."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from shoprec import schemas as S
from tests.conftest import PROJECT, shared_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FIELDS = 9


def independent_counts(csv_file: Path) -> dict:
    with open(csv_file, newline="") as handle:
        rows = list(csv.reader(handle))
    header, data = rows[0], rows[1:]
    complete = [tuple(r) for r in data if len(r) == FIELDS]
    distinct = list(dict.fromkeys(complete))
    col = {name: i for i, name in enumerate(header)}
    return {
        "lines": len(data),
        "truncated": len(data) - len(complete),
        "exact_duplicates": len(complete) - len(distinct),
        "clean": len(distinct),
        "types": Counter(r[col["event_type"]] for r in distinct),
        "zero_price": sum(float(r[col["price"]]) == 0 for r in distinct),
        "empty_brand": sum(r[col["brand"]] == "" for r in distinct),
        "category_from_id": sum(r[col["category_code"]] == "" for r in distinct),
        "sessions": len({r[col["user_session"]] for r in distinct if r[col["user_session"]]}),
    }


def spark_submit(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "spark-submit"), "--master", "local[2]",
               "--conf", "spark.ui.enabled=false", "--conf", "spark.sql.shuffle.partitions=4",
               str(PROJECT / "jobs" / "clean_events.py"), *args]
    return subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=900)


def test_rees46_sample_via_spark_submit(spark, tmp_path, mlflow_store):
    data_dir = shared_dataset("rees46-ecommerce-oct2019-sample")
    expected = independent_counts(data_dir / "2019-Oct-sample.csv")
    # The dataset's own description: 17,435 data rows, the last truncated, 5 exact duplicates.
    assert (expected["lines"], expected["truncated"], expected["exact_duplicates"]) == (17435, 1, 5)

    conf = tmp_path / "rees46.yaml"
    conf.write_text(
        f"extends: {PROJECT / 'conf' / 'base.yaml'}\n"
        f"warehouse: {{root: {tmp_path / 'warehouse'}}}\n"
        f"input: {{source: rees46, path: {data_dir}}}\n"
    )
    env = {**os.environ, **mlflow_store, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    done = spark_submit(["--conf", str(conf), "--run-date", "2019-10-01"], env)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "clean_events 2019-10-01: batches 2019-10-01" in done.stdout

    events = spark.read.parquet(str(tmp_path / "warehouse" / "events_clean"))
    # The quarantine holds raw lines, so it lives outside the analysts' warehouse.
    quarantine = spark.read.parquet(str(tmp_path / "warehouse_restricted" / "events_quarantine"))
    assert events.count() == expected["clean"] == 17429
    assert [(r[S.REASON], r[S.SOURCE_FILE].endswith("2019-Oct-sample.csv")) for r in quarantine.collect()] == [
        (S.Reason.FIELD_COUNT, True)]
    assert {r[S.EVENT_TYPE]: r["count"] for r in events.groupBy(S.EVENT_TYPE).count().collect()} == expected["types"]
    assert events.where(F.col(S.PRICE) == 0).count() == expected["zero_price"]
    assert events.where(F.col(S.BRAND).isNull()).count() == expected["empty_brand"]
    assert events.where(F.col(S.CATEGORY).rlike(r"^\d+$")).count() == expected["category_from_id"]
    assert events.select(S.SESSION_ID).distinct().count() == expected["sessions"] == 5066
    assert [str(r[0]) for r in events.select(S.EVENT_DATE).distinct().collect()] == ["2019-10-01"]

    # A full rebuild with the CLI gives the same rows.
    before = sorted(tuple(r) for r in events.drop(S.INGEST_RUN_ID).collect())
    rebuilt = subprocess.run(
        [str(Path(sys.executable).parent / "shoprec"), "run", "clean_events", "--conf", str(conf),
         "--run-date", "2019-10-01", "--full-rebuild"],
        cwd=PROJECT, env={**env, "SHOPREC__SPARK__MASTER": "local[2]"}, capture_output=True, text=True, timeout=900)
    assert rebuilt.returncode == 0, rebuilt.stderr[-4000:]
    again = spark.read.parquet(str(tmp_path / "warehouse" / "events_clean"))
    assert sorted(tuple(r) for r in again.drop(S.INGEST_RUN_ID).collect()) == before
