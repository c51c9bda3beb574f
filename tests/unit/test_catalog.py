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
