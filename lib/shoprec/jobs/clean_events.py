"""clean_events: raw shop logs -> ``events_clean``, ``events_bot``, ``events_quarantine`` and ``user_id_map``
(partitioned Parquet).

Run on a cluster::

    spark-submit --master yarn --deploy-mode client \\
        --py-files dist/shoprec.zip --files conf/base.yaml,conf/cluster.yaml \\
        jobs/clean_events.py --conf cluster.yaml --run-date 2026-01-07

or locally: ``shoprec run clean_events --conf conf/local.yaml --run-date 2026-01-07``.

Which raw files a run reads:

* by default, the files not yet in the processed-files log (and files whose size or modification
  time changed). Files are grouped into *ingest batches* by their landing date, read from the path
  (``dt=YYYY-MM-DD``) or, for a source without one, the run date. A batch that gains files is
  rebuilt whole from all its files;
* ``--backfill-from A --backfill-to B``: every file whose landing date is in ``[A, B]``, processed
  or not; those batches are rebuilt;
* ``--full-rebuild``: every file; every batch is rebuilt and batches whose files are gone removed.

User ids are pseudonymized first of all (lib/shoprec/privacy.py): ``events_clean`` holds
HMAC-SHA256 pseudonyms; ``user_id_map`` (the way back) and ``events_quarantine`` (raw lines) are
written under the restricted root, outside the analysts' warehouse.

The raw input is parsed once: the parsed rows are staged as Parquet under the restricted root
(``_staging/clean_events/parsed``, removed at the end) and the three tables are written from them.

The valid events of users' bot days go to ``events_bot`` (same schema), in the same write as
``events_clean``. A run compares its events with what earlier batches stored on the same days:
an event already stored is a duplicate, and a day's stored events count towards its bot limits.

Rebuilding a batch replaces exactly that batch's partitions in every table, so running the same
command twice gives the same tables. Row accounting is checked before anything is committed:
input records = clean + quarantined + duplicates + bot-filtered.
"""

from __future__ import annotations

import argparse
import calendar
import datetime as dt
import fnmatch
import logging
import re
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, Observation, SparkSession, Window
from pyspark.sql import functions as F

from shoprec import privacy, pseudonyms
from shoprec import schemas as S
from shoprec.config import Config, SourceConfig
from shoprec.etl import clean
from shoprec.io.fs import FileStatus, HadoopFS
from shoprec.io.ingest_log import IngestLog
from shoprec.io.sources import read_raw_records
from shoprec.io.staging import Staging, staging_root
from shoprec.io.tables import Destination, read_table, write_partitions, write_routed
from shoprec.jobs.common import iso_date, job_parser, run_main
from shoprec.spark import file_tasks_per_core
from shoprec.tracking import JobRun, StageClock, job_run, write_report

JOB = "clean_events"
CLEAN_TABLE = "events_clean"
# The valid events of users' bot days, in the clean schema: kept so that later batches judge a
# day on all its events, and so that what the bot rules filter can be looked at.
BOT_TABLE = "events_bot"
QUARANTINE_TABLE = "events_quarantine"
USER_ID_MAP_TABLE = "user_id_map"
CLEAN_PARTITIONS = [S.EVENT_DATE, S.INGEST_BATCH]
QUARANTINE_PARTITIONS = [S.INGEST_BATCH]
# Per batch, like the quarantine: a rerun or rebuild of a batch replaces exactly its users.
USER_ID_MAP_PARTITIONS = [S.INGEST_BATCH]
SAMPLES_PER_REASON = 3
# The one parse of a run's raw input, staged under the job's staging root (shoprec.io.staging),
# which is under the restricted root: it holds raw ids and lines.
PARSED_STAGING = "parsed"
# Tasks per core the job's scans are split into at least (shoprec.spark.file_tasks_per_core).
SCAN_TASKS_PER_CORE = 4
# The events write routes each row to events_clean or events_bot by this (unwritten) column.
_ROUTE = "shoprec_table"
# On the stored rows of earlier batches: the row is in events_bot; the batch that stored it.
_STORED_AS_BOT = "_stored_as_bot"
_STORED_BATCH = "_stored_batch"

log = logging.getLogger(__name__)


class AccountingError(RuntimeError):
    """Rows went missing or appeared between input and output; nothing was committed."""


class UnreadableInputError(RuntimeError):
    """A raw file cannot be read at all (a corrupt or truncated archive); nothing was committed."""


_FAILED_READ = re.compile(r"FAILED_READ_FILE[.A-Z_]*\] Encountered error while reading file (\S+?)\.?\s")


def unreadable_file(err: Exception) -> str | None:
    """The raw file a Spark read failure names, or None when the failure is something else."""
    found = _FAILED_READ.search(str(err))
    return found.group(1) if found else None


@dataclass
class CleanSummary:
    """What one clean_events execution did."""

    run_id: str
    batches: list[str]
    files: int
    accounting: dict[str, int] = field(default_factory=dict)
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    duplicates_by_kind: dict[str, int] = field(default_factory=dict)
    # Rows earlier batches stored in events_clean on user-days this run judged bots (see _write_clean).
    stored_clean_on_bot_days: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)


def landing_date(path: str, pattern: str) -> str | None:
    """The landing date a file's path carries (``dt=YYYY-MM-DD`` by default), if any."""
    match = re.search(pattern, path)
    return match.group(1) if match else None


def plan_batches(
    files: list[FileStatus],
    logged: dict[str, list[FileStatus]],
    run_date: str,
    pattern: str,
    full_rebuild: bool = False,
    backfill: tuple[str, str] | None = None,
) -> dict[str, list[FileStatus]]:
    """Decide which ingest batches to (re)build, and from which files.

    Args:
        files: every raw file currently under the input path.
        logged: the processed-files log, ``{batch: files}``.
        run_date: the run's logical date; the batch of files whose path carries no landing date.
        pattern: regex with one group capturing a file's landing date from its path.
        full_rebuild: rebuild every batch from every file.
        backfill: ``(first, last)`` landing dates to rebuild, processed or not.

    Returns:
        ``{batch: files}`` for each batch to build; empty when there is nothing new.
    """
    logged_batch = {} if full_rebuild else {f.path: batch for batch, fs in logged.items() for f in fs}

    def batch_of(f: FileStatus) -> str:
        return landing_date(f.path, pattern) or logged_batch.get(f.path) or run_date

    if full_rebuild:
        chosen = files
    elif backfill is not None:
        first, last = backfill
        chosen = [f for f in files if first <= batch_of(f) <= last]
    else:
        known = {f.path: f for batch_files in logged.values() for f in batch_files}
        touched = {batch_of(f) for f in files if known.get(f.path) != f}
        # A batch that gains or changes a file is rebuilt whole.
        chosen = [f for f in files if batch_of(f) in touched]
    plan: dict[str, list[FileStatus]] = {}
    for f in sorted(chosen, key=lambda f: f.path):
        plan.setdefault(batch_of(f), []).append(f)
    return plan


def read_batches(spark: SparkSession, source: SourceConfig, plan: dict[str, list[FileStatus]]) -> DataFrame:
    """Raw records of every planned batch in one scan, each row tagged with its ``ingest_batch``
    and its ``source_file`` (the file's path as listed)."""
    fs = HadoopFS(spark)
    files = spark.createDataFrame(
        [(fs.uri(f.path), f.path, batch) for batch, batch_files in sorted(plan.items()) for f in batch_files],
        f"_file_uri string, _listed_path string, {S.INGEST_BATCH} string")
    raw = read_raw_records(spark, source, [f.path for batch_files in plan.values() for f in batch_files])
    tagged = raw.join(F.broadcast(files), raw[S.SOURCE_FILE] == files["_file_uri"], "left")
    # A row whose file is not in the plan would mean a path-encoding mismatch: fail, never guess.
    batch = F.when(F.col(S.INGEST_BATCH).isNull(),
                   F.raise_error(F.concat(F.lit("no ingest batch for file "), F.col(S.SOURCE_FILE))))
    return tagged.select(
        S.RAW_RECORD,
        F.col("_listed_path").alias(S.SOURCE_FILE),
        batch.otherwise(F.col(S.INGEST_BATCH)).alias(S.INGEST_BATCH),
    )


def _observed(df: DataFrame, name: str, **counts) -> tuple[DataFrame, Observation]:
    observation = Observation(name)
    metrics = [F.sum(F.when(condition, 1).otherwise(0)).cast("long").alias(key) for key, condition in counts.items()]
    return df.observe(observation, *metrics), observation


def run(spark: SparkSession, cfg: Config, run_date: str, full_rebuild: bool = False,
        backfill: tuple[str, str] | None = None) -> CleanSummary:
    """Clean the raw files the run is due to read; write, account, log. See the module docstring."""
    source_name, source = cfg.input.source, cfg.source
    secret = privacy.load_secret(cfg.privacy.secret_env) if cfg.privacy.pseudonymize else None
    fs = HadoopFS(spark)
    ingest_log = IngestLog(fs, cfg.warehouse.root, source_name)
    files = [f for f in fs.list_files(cfg.input.path) if fnmatch.fnmatch(f.path.rsplit("/", 1)[-1], source.file_pattern)]
    if not files:
        raise FileNotFoundError(f"input.path {cfg.input.path} holds no files matching {source.file_pattern!r}")
    logged = ingest_log.batches()
    plan = plan_batches(files, logged, run_date, source.landing_date_pattern, full_rebuild, backfill)
    replaced = sorted(set(plan) | (set(logged) if full_rebuild else set()))
    args = {"run_date": run_date, "full_rebuild": full_rebuild, "backfill": backfill}

    with job_run(cfg, JOB, run_date, extra_params=args) as tracking:
        tracking.set_tags({"shoprec.batches": ",".join(sorted(plan)) or "-", "shoprec.source": source_name})
        summary = CleanSummary(tracking.run_id, sorted(plan), sum(len(v) for v in plan.values()))
        if not plan:
            log.info("clean_events %s: no new input files under %s; nothing to do", run_date, cfg.input.path)
            tracking.log_metrics({"rows_input": 0, "files_processed": 0})
            return summary
        log.info("clean_events %s: %d file(s) into batch(es) %s", run_date, summary.files, ", ".join(sorted(plan)))
        try:
            # The parse costs several times a plain read per row, over files often gzipped (one task each).
            with file_tasks_per_core(spark, SCAN_TASKS_PER_CORE):
                _clean_and_write(_Run(spark, cfg, tracking, summary, run_date, replaced), plan, secret)
        except Exception as err:
            path = unreadable_file(err)
            if path is None:
                raise
            # Reading past the damage would lose rows without a trace: the file must be fixed or removed.
            raise UnreadableInputError(
                f"cannot read raw file {path} (a corrupt or truncated archive?): repair, replace or remove it "
                "and run again; nothing was committed") from err
        for batch, batch_files in plan.items():
            ingest_log.record(batch, batch_files, tracking.run_id)
        for stale in set(replaced) - set(plan):
            fs.delete(f"{ingest_log.path}/batch={stale}.json")
        return summary


@dataclass
class _Run:
    """What the writes of one execution share: where tables go, what they replace, lineage, clocks."""

    spark: SparkSession
    cfg: Config
    tracking: JobRun
    summary: CleanSummary
    run_date: str
    replaced: list[str]
    clock: StageClock = field(default_factory=StageClock)

    def write(self, df: DataFrame, table: str, partition_by: list[str], expected_rows=None) -> None:
        """Write ``df`` over the rebuilt batches of ``table``, then time the stage."""
        lineage = {"run_id": self.tracking.run_id, "job": JOB, "run_date": self.run_date,
                   "source": self.cfg.input.source}
        write_partitions(df, self.cfg.table_path(table), partition_by, {S.INGEST_BATCH: self.replaced},
                         self.tracking.run_id, lineage, expected_rows=expected_rows)
        self.clock.lap(f"write_{table.removeprefix('events_')}")

    def write_routed(self, df: DataFrame, tables: dict[str, Destination], partition_by: list[str]) -> None:
        """Write the rows of ``df`` to the tables their ``_ROUTE`` names, in one pass; time it as
        the first table's write."""
        lineage = {"run_id": self.tracking.run_id, "job": JOB, "run_date": self.run_date,
                   "source": self.cfg.input.source}
        write_routed(df, _ROUTE, tables, partition_by, {S.INGEST_BATCH: self.replaced}, self.tracking.run_id,
                     lineage, plain_columns=S.EVENTS_NEARLY_UNIQUE)
        self.clock.lap(f"write_{next(iter(tables)).removeprefix('events_')}")


def _clean_and_write(run: _Run, plan: dict[str, list[FileStatus]], secret: bytes | None) -> None:
    """One parse of the raw input, staged as Parquet under the restricted root and counted on its
    way, then three writes from it: the quarantine; with a ``secret``, the restricted user_id_map
    of the batch's users; the events, pseudonymized, deduplicated, bot-filtered and sessionized.
    Each write is checked against the counts before it is committed."""
    source, is_valid = run.cfg.source, F.col(S.REASON).isNull()
    validated = clean.to_canonical(clean.parse_records(read_batches(run.spark, source, plan), source), source,
                                   run.cfg.input.source, run.cfg.clean)
    # Only what the outputs need is staged: the clean table's columns, and for rejected rows their
    # reason and raw line, as valid text so every reader can open it (for a line that was not
    # UTF-8 its exact bytes stay in the detail, base64).
    needed = [f.name for f in S.EVENTS_CLEAN.fields if f.name != S.INGEST_RUN_ID] + [clean.CONTENT_HASH]
    counted, inflow = _observed(
        validated.select(*needed, S.REASON, S.DETAIL,
                         F.when(~is_valid, F.make_valid_utf8(S.RAW_RECORD)).alias(S.RAW_RECORD)),
        "validated", rows=F.lit(True), valid=is_valid, **{reason: F.col(S.REASON) == reason for reason in S.Reason.ALL})
    dates = Observation("dates")
    counted = counted.observe(dates, F.min(F.when(is_valid, F.col(S.EVENT_DATE))).alias("first"),
                              F.max(F.when(is_valid, F.col(S.EVENT_DATE))).alias("last"))
    # One clean_events runs at a time: what is staged there belongs to a run whose driver died.
    with Staging(run.spark, staging_root(run.cfg, JOB)) as staging:
        parsed = staging.keep(counted, PARSED_STAGING, plain_columns=[*S.EVENTS_NEARLY_UNIQUE, clean.CONTENT_HASH])
        run.clock.lap("parse")
        counts = {k: int(v or 0) for k, v in inflow.get.items()}
        run.summary.quarantine_reasons = {r: counts[r] for r in S.Reason.ALL if counts[r]}
        rows_input, rows_valid = counts["rows"], counts["valid"]
        run.write(conform(parsed.where(~is_valid), S.EVENTS_QUARANTINE, run.tracking.run_id), QUARANTINE_TABLE,
                  QUARANTINE_PARTITIONS, expected_rows=rows_input - rows_valid)
        valid = parsed.where(is_valid).select(*needed)
        if secret is not None:
            valid = _pseudonymized(run, valid, secret)
        _write_clean(run, valid, rows_input, rows_valid, dates.get["first"], dates.get["last"])
    report = quality_report(run.spark, run.cfg, run.replaced, run.summary)
    write_report(run.tracking, report, "data_quality")
    run.clock.lap("quality_report")
    run.tracking.log_metrics(run.clock.seconds)
    run.summary.stage_seconds = dict(run.clock.seconds)
    log.info("clean_events %s: stage seconds %s", run.run_date, run.clock.seconds)
    log.info("clean_events %s: %s", run.run_date, run.summary.accounting)


def _pseudonymized(run: _Run, valid: DataFrame, secret: bytes) -> DataFrame:
    """Write the batch's users to user_id_map; ``valid`` with the pseudonyms that map stored."""
    # Before the events, so that no pseudonym is ever stored without its way back.
    id_map, id_map_obs = _observed(pseudonyms.id_map(valid, S.USER_ID, secret, S.INGEST_BATCH), "user_id_map",
                                   rows=F.lit(True))
    run.write(id_map, USER_ID_MAP_TABLE, USER_ID_MAP_PARTITIONS)
    stored = run.spark.read.schema(f"{privacy.PSEUDONYM} string, {S.USER_ID} string, {S.INGEST_BATCH} string") \
        .parquet(run.cfg.table_path(USER_ID_MAP_TABLE)).where(F.col(S.INGEST_BATCH).isin(*run.summary.batches))
    map_rows = int(id_map_obs.get["rows"] or 0)   # (user, batch) rows, counted on the write
    # First of all steps: duplicate keys, bot rules and derived session ids see only pseudonyms.
    return pseudonyms.pseudonymize(valid, S.USER_ID, stored, S.INGEST_BATCH,
                                   broadcast=map_rows <= run.cfg.clean.pseudonym_map_broadcast_rows)


def _write_clean(run: _Run, valid: DataFrame, rows_input: int, rows_valid: int, first_date, last_date) -> None:
    """Deduplicate, filter bots, sessionize and write ``events_clean`` (and the bots' rows to
    ``events_bot``); account for every row.

    The rows earlier batches stored on the run's days (both tables) take part: a new event one of
    them already holds is an ``earlier_batch`` duplicate, they count towards a day's bot limits,
    so a bot's day whose events arrive in several batches is judged on all of them, and a new
    event within a session gap after a stored one of its table continues that session (stored
    rows up to a gap before the run's days are read for that). Rows
    already stored clean are not rewritten when their day turns out a bot's: they are counted
    (``stored_clean_on_bot_days``) and a backfill of their batches re-judges them.
    """
    summary = run.summary
    earlier = _earlier_rows(run.spark, run.cfg, run.replaced, first_date, last_date)
    valid, second_inflow = _observed(valid, "valid", rows=F.lit(True), unmapped=F.col(S.USER_ID).isNull())
    new_row = ~F.col(clean.STORED)
    deduped, dup_obs = _observed(
        clean.mark_duplicates(valid, earlier), "duplicates",
        exact=F.col(clean.DUPLICATE) == clean.DUPLICATE_EXACT,
        event_id=F.col(clean.DUPLICATE) == clean.DUPLICATE_EVENT_ID,
        earlier_batch=F.col(clean.DUPLICATE) == clean.DUPLICATE_EARLIER_BATCH)
    flagged, bot_obs = _observed(
        clean.flag_bots(deduped.where(F.col(clean.DUPLICATE).isNull()), run.cfg.clean.bots), "bots",
        bot=F.col(clean.BOT) & new_row)
    stored_obs, sessions_of = None, flagged.where(new_row)
    if earlier is not None:
        # Stored rows just outside the run's days are there for sessions only: their days' bot
        # limits were judged on all their rows, which the run does not read.
        outside = F.col(clean.STORED) & ~F.col(S.EVENT_DATE).between(F.lit(first_date), F.lit(last_date))
        flagged = flagged.withColumn(clean.BOT, F.when(outside, F.col(_STORED_AS_BOT)).otherwise(F.col(clean.BOT)))
        stored_obs = Observation("stored_on_bot_days")
        on_bot_day = F.col(clean.BOT) & F.col(clean.STORED) & ~F.col(_STORED_AS_BOT)
        flagged = flagged.observe(stored_obs, F.sum(on_bot_day.cast("long")).alias("rows"),
                                  F.min(F.when(on_bot_day, F.col(_STORED_BATCH))).alias("first_batch"))
        # A new event continues a stored session of its own table only: stored clean rows of a
        # day now judged a bot's stay clean, and their sessions with them. And only a stored row
        # before it can matter: one on its day, or within a gap of the midnight before it (the
        # rest, say a redelivered day's, would only slow the session windows down).
        last_minutes = F.col(S.EVENT_TIME) >= F.to_timestamp(F.date_add(S.EVENT_DATE, 1)) - F.expr(
            f"INTERVAL {run.cfg.clean.session_gap_minutes} MINUTES")
        sessions_of = flagged.where(new_row | ((F.col(_STORED_AS_BOT) == F.col(clean.BOT))
                                               & (F.col(clean.NEW_ON_DAY) | last_minutes)))
    events = clean.sessionize(sessions_of, run.cfg.clean.session_gap_minutes, apart=clean.BOT,
                              stored=None if earlier is None else clean.STORED).where(new_row)
    routed = conform(events.withColumn(_ROUTE, F.when(F.col(clean.BOT), F.lit(BOT_TABLE)).otherwise(F.lit(CLEAN_TABLE))),
                     S.EVENTS_CLEAN, run.tracking.run_id, keep=[_ROUTE])

    rows_expected: dict[str, int] = {}

    def expected(table: str) -> int:
        # Asked once per table once the write has run: the checks and the counts are made once.
        if not rows_expected:
            seen_again = int(second_inflow.get["rows"] or 0)
            if second_inflow.get["unmapped"]:
                raise AccountingError(f"{second_inflow.get['unmapped']} valid rows found no pseudonym in "
                                      f"{USER_ID_MAP_TABLE}; nothing committed to {CLEAN_TABLE}")
            if seen_again != rows_valid:
                raise AccountingError(f"{rows_valid} valid rows were parsed but {seen_again} reached the clean "
                                      f"write (was the staged parse changed meanwhile?); nothing committed to "
                                      f"{CLEAN_TABLE}")
            summary.duplicates_by_kind = {k: int(v or 0) for k, v in dup_obs.get.items()}
            bots = int(bot_obs.get["bot"] or 0)
            rows_expected.update({BOT_TABLE: bots,
                                  CLEAN_TABLE: rows_valid - sum(summary.duplicates_by_kind.values()) - bots})
        return rows_expected[table]

    run.write_routed(routed, {
        CLEAN_TABLE: Destination(run.cfg.table_path(CLEAN_TABLE), lambda: expected(CLEAN_TABLE)),
        BOT_TABLE: Destination(run.cfg.table_path(BOT_TABLE), lambda: expected(BOT_TABLE)),
    }, CLEAN_PARTITIONS)
    rows_duplicate = sum(summary.duplicates_by_kind.values())
    rows_filtered = int(bot_obs.get["bot"] or 0)
    summary.accounting = {
        "rows_input": rows_input, "rows_clean": rows_valid - rows_duplicate - rows_filtered,
        "rows_quarantined": rows_input - rows_valid, "rows_duplicate": rows_duplicate,
        "rows_filtered_bot": rows_filtered,
    }
    counts = summary.accounting
    if rows_input != (counts["rows_clean"] + counts["rows_quarantined"] + counts["rows_duplicate"]
                      + counts["rows_filtered_bot"]):
        raise AccountingError(f"row accounting does not add up: {summary.accounting}")
    if stored_obs is not None:
        summary.stored_clean_on_bot_days = int(stored_obs.get["rows"] or 0)
    if summary.stored_clean_on_bot_days:
        first_batch = stored_obs.get["first_batch"]
        log.warning("clean_events %s: %d row(s) stored in %s by earlier batches (the first %s) fall on user-days "
                    "this run judged bots and stay there; backfill those batches to re-judge them",
                    run.run_date, summary.stored_clean_on_bot_days, CLEAN_TABLE, first_batch)
    run.tracking.log_metrics({
        **summary.accounting, "files_processed": summary.files, "batches": len(summary.batches),
        "stored_clean_on_bot_days": summary.stored_clean_on_bot_days,
        **{f"quarantine_{reason}": rows for reason, rows in summary.quarantine_reasons.items()},
        **{f"duplicate_{kind}": rows for kind, rows in summary.duplicates_by_kind.items()},
    })


def conform(df: DataFrame, schema, run_id: str, keep: list[str] = ()) -> DataFrame:
    """``df`` with exactly the table's columns, in order and of its types, stamped with the run id
    (and the ``keep`` columns after them)."""
    return df.select(*[
        (F.lit(run_id) if f.name == S.INGEST_RUN_ID else F.col(f.name)).cast(f.dataType).alias(f.name)
        for f in schema.fields
    ], *keep)


def _earlier_rows(spark: SparkSession, cfg: Config, replaced: list[str], first_date, last_date) -> DataFrame | None:
    """The events batches this run does not rebuild stored on the days it touches, and within a
    session gap before them (clean and bots' rows alike; ``_stored_as_bot`` tells which); None
    when there are none."""
    if first_date is None:
        return None
    # A session can reach into the run's first day from the evening before. (Epoch seconds, not
    # a zone-less time: the bound is UTC whatever the driver's zone.)
    since = calendar.timegm((dt.datetime.combine(first_date, dt.time())
                             - dt.timedelta(minutes=cfg.clean.session_gap_minutes)).timetuple())
    near = (F.col(S.EVENT_DATE).between(F.lit(first_date - dt.timedelta(days=1)), F.lit(last_date))
            & (F.col(S.EVENT_TIME) >= F.timestamp_seconds(F.lit(since))))
    stored = []
    for table in (CLEAN_TABLE, BOT_TABLE):
        rows = read_table(spark, cfg.table_path(table), S.EVENTS_CLEAN).where(
            near & ~F.col(S.INGEST_BATCH).isin(*replaced))
        stored.append(rows.select(S.USER_ID, S.EVENT_ID, S.EVENT_DATE, S.EVENT_TIME, S.SESSION_ID,
                                  F.col(S.INGEST_BATCH).cast("string").alias(_STORED_BATCH),
                                  F.lit(table == BOT_TABLE).alias(_STORED_AS_BOT)))
    rows = stored[0].unionByName(stored[1])
    # The filters prune partitions, so this looks at a file or two at most: a first run, a full
    # rebuild or a day nobody stored before skips the comparison with stored rows altogether.
    return None if rows.isEmpty() else rows


def quality_report(spark: SparkSession, cfg: Config, batches: list[str], summary: CleanSummary) -> dict:
    """The data-quality report of the batches just written (logged to MLflow as JSON and Markdown)."""
    clean_rows = read_table(spark, cfg.table_path(CLEAN_TABLE), S.EVENTS_CLEAN).where(F.col(S.INGEST_BATCH).isin(*batches))
    profile = clean_rows.agg(
        F.count(F.lit(1)).alias("rows"),
        F.countDistinct(S.USER_ID).alias("users"),
        F.countDistinct(S.ITEM_ID).alias("items"),
        F.countDistinct(S.SESSION_ID).alias("sessions"),
        F.min(S.EVENT_TIME).cast("string").alias("first_event_time"),
        F.max(S.EVENT_TIME).cast("string").alias("last_event_time"),
        F.sum(F.col(S.CATEGORY).isNull().cast("int")).alias("missing_category"),
        F.sum(F.col(S.BRAND).isNull().cast("int")).alias("missing_brand"),
        F.sum((F.col(S.PRICE).isNull() & (F.col(S.EVENT_TYPE) != "search")).cast("int")).alias("missing_price"),
        F.sum((F.col(S.PRICE) == 0).cast("int")).alias("zero_price"),
    ).first().asDict()
    by_type: dict[str, int] = {}
    by_date: dict[str, int] = {}
    # One small aggregate (days x event types) serves both breakdowns.
    for r in clean_rows.groupBy(S.EVENT_DATE, S.EVENT_TYPE).count().orderBy(S.EVENT_DATE).collect():
        by_type[r[S.EVENT_TYPE]] = by_type.get(r[S.EVENT_TYPE], 0) + r["count"]
        by_date[str(r[S.EVENT_DATE])] = by_date.get(str(r[S.EVENT_DATE]), 0) + r["count"]
    bots = read_table(spark, cfg.table_path(BOT_TABLE), S.EVENTS_CLEAN).where(F.col(S.INGEST_BATCH).isin(*batches)).agg(
        F.count(F.lit(1)).alias("rows"), F.countDistinct(S.USER_ID).alias("users"),
        F.countDistinct(S.USER_ID, S.EVENT_DATE).alias("user_days"),
    ).first().asDict()
    # Rows earlier batches stored clean on the days now judged bots' (left as they are).
    bots["stored_clean_on_bot_days"] = summary.stored_clean_on_bot_days
    quarantine = read_table(spark, cfg.table_path(QUARANTINE_TABLE), S.EVENTS_QUARANTINE)
    ranked = quarantine.where(F.col(S.INGEST_BATCH).isin(*batches)).withColumn(
        "_n", F.row_number().over(Window.partitionBy(S.REASON).orderBy(S.SOURCE_FILE, S.RAW_RECORD)))
    # The report is read by everyone with access to MLflow: with pseudonymous ids on, the raw
    # lines (and details, which may quote them) stay in the restricted quarantine table.
    shown = [S.REASON, S.SOURCE_FILE] if cfg.privacy.pseudonymize else [S.REASON, S.DETAIL, S.RAW_RECORD]
    samples = [
        {k: (r[k] or "")[:300] if k == S.RAW_RECORD else r[k] for k in shown}
        for r in ranked.where(F.col("_n") <= SAMPLES_PER_REASON).orderBy(S.REASON, "_n").collect()
    ]
    return {
        "source": cfg.input.source,
        "batches": ", ".join(batches),
        "accounting": summary.accounting,
        "quarantine_by_reason": summary.quarantine_reasons,
        "duplicates_by_kind": summary.duplicates_by_kind,
        "clean_profile": profile,
        "clean_by_event_type": by_type,
        "clean_by_event_date": by_date,
        "bots": bots,
        "quarantine_samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``spark-submit jobs/clean_events.py`` and ``shoprec run clean_events``."""
    parser = job_parser(JOB, "Clean raw shop logs into events_clean (pseudonymous user ids), events_quarantine and user_id_map.")
    parser.add_argument("--full-rebuild", action="store_true", help="rebuild every batch from every input file")
    parser.add_argument("--backfill-from", type=iso_date, help="first landing date to rebuild")
    parser.add_argument("--backfill-to", type=iso_date, help="last landing date to rebuild (default: --backfill-from)")

    def execute(spark: SparkSession, cfg: Config, args: argparse.Namespace) -> None:
        backfill = None
        if args.backfill_from:
            backfill = (args.backfill_from, args.backfill_to or args.backfill_from)
        elif args.backfill_to:
            parser.error("--backfill-to needs --backfill-from")
        summary = run(spark, cfg, args.run_date, full_rebuild=args.full_rebuild, backfill=backfill)
        print(f"clean_events {args.run_date}: batches {', '.join(summary.batches) or 'none'}; {summary.accounting}")

    return run_main(JOB, parser, execute, argv, needs_input=True, needs_secret=True)
