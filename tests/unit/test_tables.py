"""Atomic partition replacement: exact slices replaced, pending commits finished, bad counts refused,
and routed writes (one pass, several tables), every count checked before any table is committed."""

from __future__ import annotations

import json

import pytest
from pyspark.sql import functions as F

from shoprec.io.fs import HadoopFS
from shoprec.io.tables import (COMMIT_JOURNAL, Destination, RowCountError, finish_pending_commit, write_partitions,
                                write_routed)
from tests.support.parquet_files import dictionary_encoded

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


ROUTED = "value int, day string, batch string, kind string"


def test_a_routed_write_splits_rows_between_tables_in_one_pass(spark, tmp_path):
    kept, dropped = str(tmp_path / "kept"), str(tmp_path / "dropped")
    write_partitions(spark.createDataFrame([(1, "d1", "b1"), (2, "d1", "b2")], SCHEMA), kept, ["day", "batch"],
                     {"batch": ["b1", "b2"]}, "w1", {"run_id": "r1"})
    write_partitions(spark.createDataFrame([(3, "d2", "b1")], SCHEMA), dropped, ["day", "batch"],
                     {"batch": ["b1"]}, "w1", {"run_id": "r1"})
    df = spark.createDataFrame([(10, "d1", "b1", "kept"), (11, "d3", "b1", "dropped"), (12, "d3", "b1", "kept")], ROUTED)
    results = write_routed(df, "kind", {"kept": Destination(kept, 2), "dropped": Destination(dropped, lambda: 1)},
                           ["day", "batch"], {"batch": ["b1"]}, "w2", {"run_id": "r2"})
    assert rows(spark, kept) == [(2, "d1", "b2"), (10, "d1", "b1"), (12, "d3", "b1")]
    assert rows(spark, dropped) == [(11, "d3", "b1")]
    assert sorted(results["kept"].added) == ["day=d1/batch=b1", "day=d3/batch=b1"]
    assert results["dropped"].removed == ["day=d2/batch=b1"]
    fs = HadoopFS(spark)
    assert json.loads(fs.read_text(f"{dropped}/day=d3/batch=b1/_lineage.json")) == {"run_id": "r2"}
    assert "kind" not in spark.read.parquet(kept).columns
    for table in (kept, dropped):
        assert not fs.exists(f"{table}/_staging") and not fs.exists(f"{table}/_trash")


def test_a_routed_write_with_no_rows_for_a_table_empties_its_slice(spark, tmp_path):
    kept, dropped = str(tmp_path / "kept"), str(tmp_path / "dropped")
    write_partitions(spark.createDataFrame([(3, "d2", "b1"), (4, "d2", "b2")], SCHEMA), dropped, ["day", "batch"],
                     {"batch": ["b1", "b2"]}, "w1", {"run_id": "r1"})
    write_routed(spark.createDataFrame([(10, "d1", "b1", "kept")], ROUTED), "kind",
                 {"kept": Destination(kept, 1), "dropped": Destination(dropped, 0)},
                 ["day", "batch"], {"batch": ["b1"]}, "w2", {"run_id": "r2"})
    assert rows(spark, kept) == [(10, "d1", "b1")]
    assert rows(spark, dropped) == [(4, "d2", "b2")]


def test_a_routed_write_with_a_wrong_count_commits_no_table(spark, tmp_path):
    kept, dropped = str(tmp_path / "kept"), str(tmp_path / "dropped")
    write_partitions(spark.createDataFrame([(1, "d1", "b1")], SCHEMA), kept, ["day", "batch"], {"batch": ["b1"]},
                     "w1", {"run_id": "r1"})
    df = spark.createDataFrame([(10, "d1", "b1", "kept"), (11, "d1", "b1", "dropped")], ROUTED)
    # The first table's count is right: it must still not be committed when the second's is wrong.
    with pytest.raises(RowCountError, match="staged 1 rows, expected 2"):
        write_routed(df, "kind", {"kept": Destination(kept, 1), "dropped": Destination(dropped, 2)},
                     ["day", "batch"], {"batch": ["b1"]}, "w2", {"run_id": "r2"})
    assert rows(spark, kept) == [(1, "d1", "b1")]
    fs = HadoopFS(spark)
    assert not fs.exists(f"{dropped}/day=d1") and not fs.exists(f"{kept}/_staging/w2")
    with pytest.raises(ValueError, match=r"rows routed to \['dropped'\], which have no destination"):
        write_routed(df, "kind", {"kept": Destination(kept)}, ["day", "batch"], {"batch": ["b1"]}, "w3", {})
    assert rows(spark, kept) == [(1, "d1", "b1")]


def test_a_routed_commit_cut_short_is_finished_before_the_next_write_clears_the_staging(spark, tmp_path):
    kept, dropped = str(tmp_path / "kept"), str(tmp_path / "dropped")
    fs = HadoopFS(spark)
    # A routed write w2 whose driver died while committing "dropped" (committed first): its journal
    # names the rows staged under "kept", which "kept" itself has no commit pending for.
    shared = f"{kept}/_staging/w2"
    spark.createDataFrame([(1, "d1", "b1", "kept"), (2, "d1", "b1", "dropped")], ROUTED).write \
        .partitionBy("day", "batch", "kind").parquet(shared)
    journal = {"write_id": "w2", "remove": [], "add": ["day=d1/batch=b1"], "lineage": {"run_id": "r2"},
               "staging": shared, "leaf": "kind=dropped"}
    fs.write_text(f"{dropped}/{COMMIT_JOURNAL}", json.dumps(journal))
    # The next routed write (another batch) lists "kept" first, whose leftovers it removes.
    write_routed(spark.createDataFrame([(5, "d2", "b2", "kept")], ROUTED), "kind",
                 {"kept": Destination(kept, 1), "dropped": Destination(dropped, 0)},
                 ["day", "batch"], {"batch": ["b2"]}, "w3", {"run_id": "r3"})
    assert rows(spark, dropped) == [(2, "d1", "b1")]
    assert rows(spark, kept) == [(5, "d2", "b2")]
    assert not fs.exists(f"{dropped}/{COMMIT_JOURNAL}") and not fs.exists(f"{kept}/_staging")


def test_plain_columns_are_written_without_a_dictionary_and_the_rest_keep_theirs(spark, tmp_path):
    # Few distinct values, many rows: Parquet keeps a dictionary for both columns unless told not to.
    df = spark.createDataFrame([(f"tag{i % 3}", f"code{i % 4}", "d1", "b1", "kept" if i % 2 else "dropped")
                                for i in range(400)], "tag string, code string, day string, batch string, kind string")
    table = tmp_path / "t"
    write_partitions(df.drop("kind"), str(table), ["day", "batch"], {"batch": ["b1"]}, "w1", {"run_id": "r1"},
                     plain_columns=["code"])
    assert dictionary_encoded(table) == {"tag": True, "code": False}
    kept, dropped = tmp_path / "kept", tmp_path / "dropped"
    write_routed(df, "kind", {"kept": Destination(str(kept), 200), "dropped": Destination(str(dropped), 200)},
                 ["day", "batch"], {"batch": ["b1"]}, "w1", {"run_id": "r1"}, plain_columns=["tag"])
    for routed in (kept, dropped):
        assert dictionary_encoded(routed) == {"tag": False, "code": True}
    # The rows are as written: only the encoding differs.
    assert sorted(tuple(r) for r in spark.read.parquet(str(kept)).select("tag", "code").collect()) == sorted(
        (r["tag"], r["code"]) for r in df.where(F.col("kind") == "kept").collect())
