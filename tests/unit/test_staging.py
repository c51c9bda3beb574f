"""Staged intermediate results: written once, read back from files, gone when the job ends."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from shoprec.config import load_config
from shoprec.io.staging import Staging, staging_root
from tests.conftest import PROJECT
from tests.support.parquet_files import dictionary_encoded


def test_a_kept_frame_reads_back_from_its_files_with_the_same_rows_and_schema(spark, tmp_path):
    df = spark.createDataFrame([("u1", 1, [0.5, 1.5]), ("u2", 2, None)], "user_id string, n int, dense array<float>")
    with Staging(spark, str(tmp_path / "stage")) as staging:
        kept = staging.keep(df.withColumn("doubled", F.col("n") * 2), "doubled")
        assert sorted(map(tuple, kept.collect())) == [("u1", 1, [0.5, 1.5], 2), ("u2", 2, None, 4)]
        assert [(f.name, f.dataType.simpleString()) for f in kept.schema.fields] == [
            ("user_id", "string"), ("n", "int"), ("dense", "array<float>"), ("doubled", "int")]
        # Its plan is a scan of the staged files: the lineage before it is cut.
        plan = kept._jdf.queryExecution().optimizedPlan().toString()
        assert "Relation" in plan and "parquet" in plan.lower() and "Project" not in plan
        assert (tmp_path / "stage" / "doubled").is_dir()
        empty = staging.keep(df.where(F.col("n") > 5), "empty")
        assert empty.count() == 0 and empty.columns == ["user_id", "n", "dense"]
    assert not (tmp_path / "stage").exists()


def test_staging_is_removed_when_the_job_fails_and_a_dead_run_s_leftovers_on_entry(spark, tmp_path):
    leftover = tmp_path / "stage" / "parsed"
    leftover.mkdir(parents=True)
    (leftover / "part-0.parquet").write_bytes(b"from a driver that died")
    with pytest.raises(RuntimeError, match="boom"):
        with Staging(spark, str(tmp_path / "stage")) as staging:
            assert not leftover.exists()
            staging.keep(spark.range(3), "ids")
            raise RuntimeError("boom")
    assert not (tmp_path / "stage").exists()


def test_staging_lives_under_the_restricted_root_one_directory_per_run(tmp_path):
    cfg = load_config(PROJECT / "conf/local.yaml", environ={"SHOPREC__WAREHOUSE__ROOT": str(tmp_path / "wh")})
    assert staging_root(cfg, "clean_events") == f"{tmp_path}/wh_restricted/_staging/clean_events"
    assert staging_root(cfg, "evaluate", "2026-01-14") == f"{tmp_path}/wh_restricted/_staging/evaluate-2026-01-14"
    by_path = {staging_root(cfg, "training_examples", path) for path in ("s3a://b/ts/run_date=1", "/ts/run_date=2")}
    assert len(by_path) == 2
    assert all(root.startswith(f"{tmp_path}/wh_restricted/_staging/training_examples-") and "=" not in root
               for root in by_path)


def test_a_kept_frame_s_plain_columns_are_written_without_a_dictionary(spark, tmp_path):
    df = spark.createDataFrame([(f"u{i % 5}", f"e{i % 7}") for i in range(300)], "user_id string, event_id string")
    with Staging(spark, str(tmp_path / "stage")) as staging:
        kept = staging.keep(df, "parsed", plain_columns=["event_id"])
        assert dictionary_encoded(tmp_path / "stage" / "parsed") == {"user_id": True, "event_id": False}
        assert sorted(map(tuple, kept.collect())) == sorted(map(tuple, df.collect()))
