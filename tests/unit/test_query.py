"""shoprec query: read-only SQL over the warehouse's Parquet tables with DuckDB."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shoprec import cli
from shoprec.query import QueryError, run_query


@pytest.fixture()
def warehouse(tmp_path):
    root = tmp_path / "warehouse"
    for date, users in (("2026-01-07", ["1", "2"]), ("2026-01-08", ["1", "3", "4"])):
        part = root / "recommendations" / f"run_date={date}"
        part.mkdir(parents=True)
        pq.write_table(pa.table({"user_id": users, "rank": [1] * len(users), "item_id": ["a"] * len(users)}),
                       part / "part-0.parquet")
        (part / "_lineage.json").write_text("{}")
    # A write in progress: never visible.
    staging = root / "recommendations" / "_staging" / "w1" / "run_date=2026-01-09"
    staging.mkdir(parents=True)
    pq.write_table(pa.table({"user_id": ["x"], "rank": [1], "item_id": ["z"]}), staging / "part-0.parquet")
    events = root / "events_clean" / "event_date=2026-01-08" / "ingest_batch=2026-01-08"
    events.mkdir(parents=True)
    pq.write_table(pa.table({"event_id": ["e1"], "user_id": ["1"]}), events / "part-0.parquet")
    (root / "empty_table").mkdir()
    return root


def test_tables_are_views_with_typed_partition_columns(warehouse):
    columns, rows = run_query(warehouse, "SELECT run_date, count(*) AS n FROM recommendations GROUP BY 1 ORDER BY 1")
    assert columns == ["run_date", "n"]
    assert [(str(d), n) for d, n in rows] == [("2026-01-07", 2), ("2026-01-08", 3)]  # staging rows left out
    _, tables = run_query(warehouse, "SHOW TABLES")
    assert sorted(t[0] for t in tables) == ["events_clean", "recommendations"]
    _, described = run_query(warehouse, "DESCRIBE events_clean")
    assert {r[0]: r[1] for r in described}["event_date"] == "DATE"


@pytest.mark.parametrize("sql, message", [
    ("COPY recommendations TO 'out.csv'", "read-only"),
    ("CREATE TABLE t AS SELECT 1", "read-only"),
    ("ATTACH 'other.db'", "read-only"),
    ("SET enable_external_access = true", "read-only"),
    ("SELECT 1; SELECT 2", "one statement"),
    ("SELEC 1", "not valid SQL"),
    ("SELECT * FROM read_csv('/etc/passwd')", "Permission"),
    ("SELECT * FROM no_such_table", "no_such_table"),
])
def test_anything_but_one_read_of_the_warehouse_is_refused(warehouse, sql, message):
    with pytest.raises(QueryError, match=message):
        run_query(warehouse, sql)


def test_cli_outputs_and_errors(warehouse, capsys):
    sql = "SELECT user_id FROM recommendations WHERE run_date = DATE '2026-01-08' ORDER BY user_id"
    assert cli.main(["query", sql, "--warehouse", str(warehouse), "--output", "json"]) == 0
    assert [json.loads(line)["user_id"] for line in capsys.readouterr().out.splitlines()] == ["1", "3", "4"]
    assert cli.main(["query", sql, "--warehouse", str(warehouse), "--output", "csv"]) == 0
    assert capsys.readouterr().out == "user_id\n1\n3\n4\n"
    assert cli.main(["query", sql, "--warehouse", str(warehouse), "--max-rows", "2"]) == 0
    out = capsys.readouterr().out
    assert "(3 rows (first 2 shown))" in out and "4" not in out.splitlines()[2:4]
    assert cli.main(["query", "DROP VIEW recommendations", "--warehouse", str(warehouse)]) == 2
    assert "read-only" in capsys.readouterr().err
    assert cli.main(["query", "SELECT 1", "--warehouse", str(warehouse / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
