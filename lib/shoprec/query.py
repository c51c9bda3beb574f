"""``shoprec query``: read-only SQL over the output tables with DuckDB, no Spark needed.

Every table directory under ``warehouse.root`` becomes a view of the same name over its Parquet
files, with the partition columns (``run_date``, ``event_date``, ...) as typed columns. Staging
and hidden directories (names starting with ``_`` or ``.``) are never read, so a write in progress
is invisible. The session may read only the warehouse directory, runs one ``SELECT`` (or
``EXPLAIN``, ``DESCRIBE``, ``SHOW TABLES``) per call, and cannot change its own settings.

    shoprec query "SELECT run_date, count(*) FROM recommendations GROUP BY 1" --conf conf/local.yaml
    shoprec query --restricted "SELECT reason, count(*) FROM events_quarantine GROUP BY 1"
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from shoprec.config import ConfigError, load_config

READ_ONLY_STATEMENTS = ("SELECT", "EXPLAIN")


class QueryError(ValueError):
    """SQL the query command refuses, or a warehouse it cannot read."""


def _hidden(name: str) -> bool:
    return name.startswith(("_", "."))


def table_files(root: Path) -> dict[str, list[str]]:
    """Each table directory under ``root`` and its Parquet files, outside hidden directories."""
    tables = {}
    for table in sorted(p for p in root.iterdir() if p.is_dir() and not _hidden(p.name)):
        files = sorted(str(f) for f in table.rglob("*.parquet")
                       if not any(_hidden(part) for part in f.relative_to(table).parts))
        if files:
            tables[table.name] = files
    return tables


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def connect(root: str | Path):
    """An in-memory DuckDB session with one view per table under ``root``, confined to ``root``."""
    import duckdb

    if "://" in str(root) and not str(root).startswith("file://"):
        raise QueryError(f"warehouse.root {root} is not on this machine: shoprec query reads a local (or mounted) "
                         "warehouse; copy the tables you need, or query them with Spark SQL on the cluster")
    root = Path(str(root).removeprefix("file://")).resolve()
    if not root.is_dir():
        raise QueryError(f"warehouse.root {root} does not exist: run the jobs first (make demo)")
    connection = duckdb.connect(":memory:")
    for table, files in table_files(root).items():
        listing = ", ".join(_literal(f) for f in files)
        connection.execute(f'CREATE VIEW "{table}" AS SELECT * FROM read_parquet([{listing}], '
                           "hive_partitioning = true, union_by_name = true)")
    connection.execute(f"SET allowed_directories = [{_literal(str(root) + '/')}]")
    connection.execute("SET enable_external_access = false")
    connection.execute("SET lock_configuration = true")
    return connection


def run_query(root: str | Path, sql: str) -> tuple[list[str], list[tuple]]:
    """Run one read-only statement over the tables under ``root``; its column names and rows.

    Raises:
        QueryError: not exactly one statement, a statement that is not a query, or SQL DuckDB
            rejects (the message says why).
    """
    import duckdb

    connection = connect(root)
    try:
        try:
            statements = connection.extract_statements(sql)
        except duckdb.Error as err:
            raise QueryError(f"not valid SQL: {err}") from err
        if len(statements) != 1:
            raise QueryError(f"one statement per query, got {len(statements)}")
        kind = statements[0].type.name
        if kind not in READ_ONLY_STATEMENTS:
            raise QueryError(f"read-only: {kind} statements are not allowed (SELECT, EXPLAIN, DESCRIBE, SHOW only)")
        try:
            result = connection.sql(sql)
            return list(result.columns), result.fetchall()
        except duckdb.Error as err:
            raise QueryError(str(err).splitlines()[0]) from err
    finally:
        connection.close()


def render(columns: list[str], rows: list[tuple], output: str, max_rows: int) -> str:
    """The result as an aligned text table, CSV or JSON lines."""
    if output == "csv":
        import io

        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        return buffer.getvalue()
    if output == "json":
        return "".join(json.dumps(dict(zip(columns, row)), default=str) + "\n" for row in rows)
    shown = [[("NULL" if v is None else str(v)) for v in row] for row in rows[:max_rows]]
    widths = [max([len(c), *(len(r[i]) for r in shown)]) for i, c in enumerate(columns)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(v.ljust(w) for v, w in zip(r, widths)) for r in shown]
    more = f" (first {max_rows} shown)" if len(rows) > max_rows else ""
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''}{more})")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``shoprec query SQL [--conf FILE] [--output table|csv|json]``."""
    parser = argparse.ArgumentParser(prog="shoprec query", description=__doc__.split("\n\n")[0])
    parser.add_argument("sql", help='one SELECT, e.g. "SELECT * FROM recommendations LIMIT 10"; "SHOW TABLES" lists them')
    parser.add_argument("--conf", default="conf/local.yaml", help="config whose warehouse.root holds the tables")
    parser.add_argument("--warehouse", help="a warehouse directory (instead of --conf)")
    parser.add_argument("--restricted", action="store_true",
                        help="query the restricted tables (user_id_map, events_quarantine) under the config's "
                             "privacy.restricted_root instead; needs read access there")
    parser.add_argument("--output", choices=("table", "csv", "json"), default="table")
    parser.add_argument("--max-rows", type=int, default=100, help="rows printed in table output")
    args = parser.parse_args(argv)
    try:
        if args.warehouse:
            root = args.warehouse
        else:
            cfg = load_config(args.conf)
            root = cfg.restricted_root if args.restricted else cfg.warehouse.root
        columns, rows = run_query(root, args.sql)
    except (QueryError, ConfigError) as err:
        print(f"shoprec query: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(render(columns, rows, args.output, args.max_rows))
    return 0
