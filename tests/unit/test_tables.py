"""Atomic partition replacement: exact slices replaced, pending commits finished, bad counts refused."""

from __future__ import annotations

import json

import pytest

from shoprec.io.fs import HadoopFS
from shoprec.io.tables import COMMIT_JOURNAL, RowCountError, finish_pending_commit, write_partitions

SCHEMA = "value int, day string, batch string"


def rows(spark, path):
    return sorted(tuple(r) for r in spark.read.parquet(path).select("value", "day", "batch").collect())


def test_replaces_only_the_selected_batch(spark, tmp_path):
    table = str(tmp_path / "t")
    first = spark.createDataFrame([(1, "d1", "b1"), (2, "d2", "b1"), (3, "d1", "b2")], SCHEMA)
    write_partitions(first, table, ["day", "batch"], {"batch": ["b1", "b2"]}, "w1", {"run_id": "r1"})
    # b1 is rebuilt and no longer has rows on d2: that partition must go; b2 is untouched.
    result = write_partitions(spark.createDataFrame([(10, "d1", "b1")], SCHEMA), table, ["day", "batch"],
                              {"batch": ["b1"]}, "w2", {"run_id": "r2"})
    assert rows(spark, table) == [(3, "d1", "b2"), (10, "d1", "b1")]
    assert sorted(result.removed) == ["day=d1/batch=b1", "day=d2/batch=b1"]
    assert result.added == ["day=d1/batch=b1"]
    fs = HadoopFS(spark)
    assert json.loads(fs.read_text(f"{table}/day=d1/batch=b1/_lineage.json")) == {"run_id": "r2"}
    assert json.loads(fs.read_text(f"{table}/day=d1/batch=b2/_lineage.json")) == {"run_id": "r1"}
    assert fs.list_dir(table) == ["day=d1"]


def test_wrong_row_count_commits_nothing(spark, tmp_path):
    table = str(tmp_path / "t")
    write_partitions(spark.createDataFrame([(1, "d1", "b1")], SCHEMA), table, ["day", "batch"], {"batch": ["b1"]},
                     "w1", {"run_id": "r1"})
    with pytest.raises(RowCountError, match="staged 2 rows, expected 3"):
        write_partitions(spark.createDataFrame([(5, "d1", "b1"), (6, "d1", "b1")], SCHEMA), table, ["day", "batch"],
                         {"batch": ["b1"]}, "w2", {"run_id": "r2"}, expected_rows=lambda: 3)
    assert rows(spark, table) == [(1, "d1", "b1")]
    assert not HadoopFS(spark).exists(f"{table}/_staging/w2")


def test_a_commit_interrupted_midway_is_finished_by_the_next_writer(spark, tmp_path):
    table = str(tmp_path / "t")
    fs = HadoopFS(spark)
    write_partitions(spark.createDataFrame([(1, "d1", "b1"), (2, "d2", "b1")], SCHEMA), table, ["day", "batch"],
                     {"batch": ["b1"]}, "w1", {"run_id": "r1"})
    # Stage a replacement by hand and stop after the first move, as a driver killed mid-commit would.
    spark.createDataFrame([(7, "d1", "b1"), (8, "d2", "b1")], SCHEMA).write.partitionBy("day", "batch").parquet(
        f"{table}/_staging/w2")
    journal = {"write_id": "w2", "remove": ["day=d1/batch=b1", "day=d2/batch=b1"],
               "add": ["day=d1/batch=b1", "day=d2/batch=b1"], "lineage": {"run_id": "r2"}}
    fs.write_text(f"{table}/{COMMIT_JOURNAL}", json.dumps(journal))
    fs.rename(f"{table}/day=d1/batch=b1", f"{table}/_trash/w2/day=d1/batch=b1")
    fs.delete(f"{table}/day=d1/batch=b1")
    fs.rename(f"{table}/_staging/w2/day=d1/batch=b1", f"{table}/day=d1/batch=b1")

    assert finish_pending_commit(fs, table) is True
    assert rows(spark, table) == [(7, "d1", "b1"), (8, "d2", "b1")]
    assert not fs.exists(f"{table}/{COMMIT_JOURNAL}")
    assert fs.list_dir(table) == ["day=d1", "day=d2"]
    assert finish_pending_commit(fs, table) is False


def test_a_write_whose_driver_died_before_committing_leaves_the_table_as_it_was(spark, tmp_path):
    table = str(tmp_path / "t")
    fs = HadoopFS(spark)
    write_partitions(spark.createDataFrame([(1, "d1", "b1")], SCHEMA), table, ["day", "batch"], {"batch": ["b1"]},
                     "w1", {"run_id": "r1"})
    # A driver killed while Spark wrote its staging files: no journal, a half-written staging directory.
    spark.createDataFrame([(9, "d1", "b1")], SCHEMA).write.partitionBy("day", "batch").parquet(f"{table}/_staging/w2")
    assert rows(spark, table) == [(1, "d1", "b1")]
    # The rerun removes the abandoned write and commits its own.
    write_partitions(spark.createDataFrame([(3, "d1", "b1")], SCHEMA), table, ["day", "batch"], {"batch": ["b1"]},
                     "w3", {"run_id": "r3"})
    assert rows(spark, table) == [(3, "d1", "b1")]
    assert not fs.exists(f"{table}/_staging") and not fs.exists(f"{table}/_trash")
