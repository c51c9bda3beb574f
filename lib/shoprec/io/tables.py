"""Partitioned Parquet tables written atomically, partition by partition.

A write goes to ``<table>/_staging/<write_id>/`` first. Only when Spark has finished writing it
does the commit step swap partition directories into place: the old directories of the slice
being replaced move to ``<table>/_trash/<write_id>/``, the new ones move in, and each new
partition gets a ``_lineage.json`` naming the run that wrote it. Readers never see a partition
that is half written. The list of moves is saved first as ``<table>/_commit.json``; if the
driver dies during the swap, the next write to the table finishes the pending commit before
doing anything else, so a rerun repairs the table; a driver that dies before the commit leaves only
its staging directory, which the next write removes. One job writes a table at a time.

A routed write (:func:`write_routed`) fills several tables from one pass over the rows: they are
staged once under the first table, and each table's journal names where its rows wait, so a
table's pending commit may need another table's staging directory; a routed write therefore
finishes the pending commits of all its tables before it clears any staging. Tables written
together that way are always written together.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Sequence

from pyspark.sql import DataFrame, DataFrameWriter, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from shoprec.io.fs import HadoopFS, is_hidden

COMMIT_JOURNAL = "_commit.json"


def parquet_writer(df: DataFrame, plain_columns: Sequence[str] = ()) -> DataFrameWriter:
    """``df.write`` in overwrite mode, the ``plain_columns`` written without a Parquet dictionary.

    Parquet's writer builds a dictionary for every column of every file and keeps it only where
    it pays. For a column nearly unique within a file (an event id, a timestamp, a session id
    among a few rows each), building it is wasted work: in the many small files of a write
    partitioned by day it is most of the cost of those columns, and the files come out no larger
    without it (reports/README.md).
    """
    writer = df.write.mode("overwrite")
    for column in plain_columns:
        # parquet-mr's per-column form of parquet.enable.dictionary; Spark hands write options to it.
        writer = writer.option(f"parquet.enable.dictionary#{column}", "false")
    return writer


class RowCountError(RuntimeError):
    """A staged write does not hold the rows it should; it was not committed."""


@dataclass(frozen=True)
class WriteResult:
    """What a table write replaced: partition directories (relative to the table) removed and added."""

    table_path: str
    removed: list[str]
    added: list[str]


def write_partitions(
    df: DataFrame,
    table_path: str,
    partition_by: list[str],
    replace: dict[str, list[str]],
    write_id: str,
    lineage: dict[str, str],
    expected_rows: int | Callable[[], int] | None = None,
    plain_columns: Sequence[str] = (),
) -> WriteResult:
    """Write ``df`` as Parquet, replacing exactly the slice of the table that ``replace`` selects.

    Args:
        df: the rows to write; must contain the ``partition_by`` columns.
        table_path: the table's root directory (any Hadoop-supported URI).
        partition_by: partition columns, outermost first.
        replace: ``{partition column: values}`` selecting the existing partitions to replace, for
            example ``{"ingest_batch": ["2026-01-03"]}``; every existing partition directory with
            one of those values is removed, whether or not the new rows touch it again.
        write_id: a unique id for this write (the MLflow run id or a uuid).
        lineage: written as ``_lineage.json`` into each new partition directory.
        expected_rows: the number of rows the write must hold (or a function giving it once the
            write has run); a different count raises before anything is committed.
        plain_columns: columns written without a Parquet dictionary (see :func:`parquet_writer`).

    Returns:
        The partition directories removed and added.

    Raises:
        RowCountError: the staged rows differ from ``expected_rows``; the table is untouched.
    """
    fs = HadoopFS(df.sparkSession)
    _clear_for_write(fs, table_path)
    staging = f"{table_path}/_staging/{write_id}"
    parquet_writer(df, plain_columns).partitionBy(*partition_by).parquet(staging)

    added = fs.leaf_dirs(staging, len(partition_by))
    _check_rows(fs, table_path, expected_rows, lambda: df.sparkSession.read.parquet(staging).count() if added else 0,
                staging)
    return _commit(fs, table_path, {"write_id": write_id, "remove": _replaced(fs, table_path, partition_by, replace),
                                    "add": added, "lineage": lineage})


@dataclass(frozen=True)
class Destination:
    """One table of a routed write (:func:`write_routed`) and the rows it must receive."""

    table_path: str
    expected_rows: int | Callable[[], int] | None = None


def write_routed(
    df: DataFrame,
    route_column: str,
    destinations: dict[str, Destination],
    partition_by: list[str],
    replace: dict[str, list[str]],
    write_id: str,
    lineage: dict[str, str],
    plain_columns: Sequence[str] = (),
) -> dict[str, WriteResult]:
    """Write several tables in one pass over ``df``: each row goes to the table its ``route_column`` names.

    The tables share ``partition_by``, ``replace`` and the write id. The rows are staged once,
    under the first table's staging directory, with the route as the innermost partition column;
    every table's row count is checked before any table is committed, and each table's commit
    then moves its partitions straight from there (one rename each, as for
    :func:`write_partitions`), the first table last. The tables must be on one file system.
    ``route_column`` is not written.

    Args:
        df: the rows; ``route_column`` holds a key of ``destinations`` on every row.
        destinations: ``{route value: Destination}``; a table whose route has no rows still has
            its ``replace`` slice replaced (by nothing).
        partition_by, replace, write_id, lineage, plain_columns: as for :func:`write_partitions`.

    Raises:
        RowCountError: a table's staged rows differ from its expected count; no table is touched.
        ValueError: rows carry a route with no destination; no table is touched.
    """
    fs = HadoopFS(df.sparkSession)
    # Every pending commit first: one may still need rows staged under another of the tables.
    for destination in destinations.values():
        finish_pending_commit(fs, destination.table_path)
    for destination in destinations.values():
        _remove_leftovers(fs, destination.table_path)
    first = next(iter(destinations.values())).table_path
    shared = f"{first}/_staging/{write_id}"
    # The route innermost: each table's staged partition is the table's partition, one level down.
    parquet_writer(df, plain_columns).partitionBy(*partition_by, route_column).parquet(shared)
    staged: dict[str, list[str]] = {}
    for rel in fs.leaf_dirs(shared, len(partition_by) + 1) if fs.exists(shared) else []:
        partition, leaf = rel.rsplit("/", 1)
        staged.setdefault(leaf.split("=", 1)[1], []).append(partition)
    if set(staged) - set(destinations):
        fs.delete(shared)
        raise ValueError(f"rows routed to {sorted(set(staged) - set(destinations))}, which have no destination "
                         f"table (known: {sorted(destinations)}); nothing committed")
    counted = {}
    if staged and any(d.expected_rows is not None for d in destinations.values()):
        counted = {r[0]: r[1] for r in df.sparkSession.read.parquet(shared).groupBy(route_column).count().collect()}
    journals = {}
    for route, destination in destinations.items():
        _check_rows(fs, destination.table_path, destination.expected_rows, lambda: counted.get(route, 0), shared)
        journals[route] = {
            "write_id": write_id, "remove": _replaced(fs, destination.table_path, partition_by, replace),
            "add": sorted(staged.get(route, [])), "lineage": lineage,
            "staging": shared, "leaf": f"{route_column}={route}",
        }
    # The first table last: its staging directory holds the others' rows until they are in place.
    order = list(journals)[1:] + list(journals)[:1]
    results = {route: _commit(fs, destinations[route].table_path, journals[route]) for route in order}
    fs.delete(shared)
    if not fs.list_dir(f"{first}/_staging"):
        fs.delete(f"{first}/_staging")
    return {route: results[route] for route in destinations}


def _clear_for_write(fs: HadoopFS, table_path: str) -> None:
    """Finish a commit a dead driver left pending, then remove what dead writes left staged."""
    finish_pending_commit(fs, table_path)
    _remove_leftovers(fs, table_path)


def _remove_leftovers(fs: HadoopFS, table_path: str) -> None:
    """Remove a table's staging and trash; only once no commit of it is pending."""
    # With no commit pending, what is left in staging or trash belongs to writes whose driver died
    # before committing (one writer per table at a time).
    for leftover in ("_staging", "_trash"):
        fs.delete(f"{table_path}/{leftover}")


def _check_rows(fs: HadoopFS, table_path: str, expected_rows: int | Callable[[], int] | None,
                staged_rows: Callable[[], int], staging: str) -> None:
    """Raise RowCountError, removing ``staging``, when the staged rows are not the ones expected
    (``expected_rows`` None: no check)."""
    if expected_rows is None:
        return
    expected = expected_rows() if callable(expected_rows) else expected_rows
    staged = staged_rows()
    if staged != expected:
        fs.delete(staging)
        raise RowCountError(f"{table_path}: staged {staged} rows, expected {expected}; nothing committed")


def _replaced(fs: HadoopFS, table_path: str, partition_by: list[str], replace: dict[str, list[str]]) -> list[str]:
    """The table's partition directories (relative) that ``replace`` selects."""
    return [rel for rel in fs.leaf_dirs(table_path, len(partition_by)) if _selected(rel, replace)]


def _commit(fs: HadoopFS, table_path: str, journal: dict) -> WriteResult:
    fs.write_text(f"{table_path}/{COMMIT_JOURNAL}", json.dumps(journal, indent=1))
    _apply_commit(fs, table_path, journal)
    return WriteResult(table_path, journal["remove"], journal["add"])


def read_table(spark: SparkSession, table_path: str, schema: StructType) -> DataFrame:
    """A table's rows; an empty DataFrame of ``schema`` when nothing has been written yet."""
    fs = HadoopFS(spark)
    if not fs.exists(table_path) or not any(not is_hidden(name) for name in fs.list_dir(table_path)):
        return spark.createDataFrame([], schema)
    return spark.read.schema(schema).parquet(table_path)


def _prune_empty_parents(fs: HadoopFS, table_path: str, rel: str) -> None:
    """Remove partition directories left empty by moving ``rel`` away (``day=X`` with no batches left)."""
    parts = rel.split("/")[:-1]
    while parts:
        parent = f"{table_path}/{'/'.join(parts)}"
        if fs.exists(parent) and not fs.list_dir(parent):
            fs.delete(parent)
        parts.pop()


def _selected(rel: str, replace: dict[str, list[str]]) -> bool:
    values = dict(part.split("=", 1) for part in rel.split("/"))
    return all(values.get(column) in set(wanted) for column, wanted in replace.items())


def finish_pending_commit(fs: HadoopFS, table_path: str) -> bool:
    """Complete a commit that a dead driver left half done; True if there was one."""
    journal_path = f"{table_path}/{COMMIT_JOURNAL}"
    if not fs.exists(journal_path):
        return False
    _apply_commit(fs, table_path, json.loads(fs.read_text(journal_path)))
    return True


def _apply_commit(fs: HadoopFS, table_path: str, journal: dict) -> None:
    """Idempotently move old partitions out and new ones in, as the journal lists."""
    write_id = journal["write_id"]
    # A routed write's journal names the staging it shares with other tables (under the first
    # table's), and the innermost directory that holds this table's rows of each partition.
    staging = journal.get("staging") or f"{table_path}/_staging/{write_id}"
    leaf = journal.get("leaf")

    def staged(rel: str) -> str:
        return f"{staging}/{rel}/{leaf}" if leaf else f"{staging}/{rel}"

    trash = f"{table_path}/_trash/{write_id}"
    added = set(journal["add"])
    for rel in journal["remove"]:
        live = f"{table_path}/{rel}"
        # A directory still in staging means this partition has not been swapped yet.
        if fs.exists(live) and (rel not in added or fs.exists(staged(rel))):
            fs.rename(live, f"{trash}/{rel}")
    for rel in journal["add"]:
        new = staged(rel)
        if fs.exists(new):
            fs.delete(f"{table_path}/{rel}")
            fs.rename(new, f"{table_path}/{rel}")
        fs.write_text(f"{table_path}/{rel}/_lineage.json", json.dumps(journal["lineage"], indent=1, sort_keys=True))
    for rel in journal["remove"]:
        _prune_empty_parents(fs, table_path, rel)
    fs.delete(f"{table_path}/{COMMIT_JOURNAL}")
    fs.delete(trash)
    if not leaf:  # a shared staging is removed by the routed write, once every table is committed
        fs.delete(staging)
    if not fs.list_dir(f"{table_path}/_staging"):
        fs.delete(f"{table_path}/_staging")
    if not fs.list_dir(f"{table_path}/_trash"):
        fs.delete(f"{table_path}/_trash")


RUN_DATE = "run_date"


def snapshot_dates(spark: SparkSession, table_path: str, column: str = RUN_DATE) -> list[str]:
    """The dates of a snapshot table's committed partitions (``<column>=YYYY-MM-DD``), ascending."""
    fs = HadoopFS(spark)
    prefix = f"{column}="
    return sorted(name[len(prefix):] for name in fs.list_dir(table_path) if name.startswith(prefix))


def read_snapshot(spark: SparkSession, table_path: str, date: str, column: str = RUN_DATE) -> DataFrame:
    """One partition of a snapshot table, with its date column.

    Raises:
        FileNotFoundError: the table has no partition for ``date``.
    """
    if date not in snapshot_dates(spark, table_path, column):
        raise FileNotFoundError(f"{table_path} has no partition {column}={date}; run the job that writes it first")
    return spark.read.parquet(f"{table_path}/{column}={date}").withColumn(column, F.lit(date).cast("date"))


def latest_snapshot_date(spark: SparkSession, table_path: str, on_or_before: str, column: str = RUN_DATE) -> str:
    """The newest partition date not after ``on_or_before``.

    Raises:
        FileNotFoundError: there is none, naming the table.
    """
    dates = [d for d in snapshot_dates(spark, table_path, column) if d <= on_or_before]
    if not dates:
        raise FileNotFoundError(f"{table_path} has no partition on or before {on_or_before}; run the job that writes it first")
    return dates[-1]


def write_snapshot(df: DataFrame, table_path: str, date: str, write_id: str, lineage: dict[str, str],
                   column: str = RUN_DATE) -> WriteResult:
    """Write ``df`` as the ``date`` partition of a snapshot table, replacing that partition only."""
    dated = df.withColumn(column, F.lit(date).cast("date"))
    result = write_partitions(dated, table_path, [column], {column: [date]}, write_id, lineage)
    if not result.added:
        # An empty result is still a result: leave a schema-only partition, so readers find the date.
        partition = f"{table_path}/{column}={date}"
        df.limit(0).coalesce(1).write.mode("overwrite").parquet(partition)
        HadoopFS(df.sparkSession).write_text(f"{partition}/_lineage.json", json.dumps(lineage, indent=1, sort_keys=True))
        result = WriteResult(table_path, result.removed, [f"{column}={date}"])
    return result
