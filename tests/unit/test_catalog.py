"""The table catalog: consistent entries, and docs/tables.md generated from it."""

from __future__ import annotations

from shoprec.catalog import TABLES, render_markdown
from tests.conftest import PROJECT


def test_every_table_documents_its_partition_columns_last_and_each_column_once():
    assert len({t.name for t in TABLES}) == len(TABLES)
    for table in TABLES:
        names = [c.name for c in table.columns]
        assert len(set(names)) == len(names), table.name
        # Spark reads partition columns after the file columns, in partitioning order.
        assert tuple(names[-len(table.partitioned_by):]) == table.partitioned_by, table.name
        assert all(c.meaning and c.type for c in table.columns), table.name


def test_docs_tables_md_is_generated_from_the_catalog():
    committed = (PROJECT / "docs" / "tables.md").read_text()
    assert committed == render_markdown(), "docs/tables.md is stale: run `make docs`"
    for table in TABLES:
        assert f"## {table.name}\n" in committed


def test_register_tables_makes_queryable_tables_with_comments_and_new_partitions(spark, make_config):
    from pathlib import Path

    from shoprec.catalog import register_tables
    from shoprec.io.tables import write_snapshot

    cfg = make_config(CATALOG__DATABASE="shoprec_unit", CATALOG__RESTRICTED_DATABASE="shoprec_unit_restricted")
    schema = "user_id string, rank int, item_id string, score double, source string, reason string"
    rows = [("u1", 1, "i1", 0.9, "als", "because"), ("u1", 2, "i2", 0.5, "popular", "popular")]
    write_snapshot(spark.createDataFrame(rows, schema), cfg.table_path("recommendations"), "2026-01-01", "w1", {})
    # clean_events wrote a quarantine table with no rows yet: it registers all the same, in the
    # restricted database (it holds raw lines).
    Path(cfg.table_path("events_quarantine")).mkdir(parents=True)

    assert register_tables(spark, cfg, "score") == ["shoprec_unit.recommendations"]
    assert register_tables(spark, cfg, "clean_events") == ["shoprec_unit_restricted.events_quarantine"]
    assert spark.sql("SELECT count(*) FROM shoprec_unit_restricted.events_quarantine").first()[0] == 0
    assert not spark.catalog.tableExists("shoprec_unit.events_quarantine")
    described = {r.col_name: r.comment for r in spark.sql("DESCRIBE shoprec_unit.recommendations").collect()}
    assert described["reason"].startswith("why it is recommended")

    write_snapshot(spark.createDataFrame(rows[:1], schema), cfg.table_path("recommendations"), "2026-01-02", "w2", {})
    register_tables(spark, cfg, "score")
    by_date = spark.sql("SELECT run_date, count(*) AS n FROM shoprec_unit.recommendations GROUP BY run_date "
                        "ORDER BY run_date").collect()
    assert [(str(r.run_date), r.n) for r in by_date] == [("2026-01-01", 2), ("2026-01-02", 1)]
    assert register_tables(spark, make_config(CATALOG__REGISTER="false"), "score") == []
