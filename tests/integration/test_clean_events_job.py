"""clean_events end to end on synthetic logs: accounting, incremental runs, idempotency, lineage, MLflow."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.config import GenerateConfig
from shoprec.jobs import clean_events
from shoprec.synthetic import generate_events, write_events
from shoprec.tracking import TrackingError
from tests.conftest import NO_BROADCAST, session_settings
from tests.support.parquet_files import dictionary_encoded

pytestmark = pytest.mark.integration
DAYS = ["2026-03-01", "2026-03-02", "2026-03-03"]


@pytest.fixture(scope="module")
def raw_log(spark, tmp_path_factory) -> Path:
    """A three-day synthetic log with every kind of dirt, generated once for the module."""
    out = tmp_path_factory.mktemp("raw") / "synthetic"
    cfg = GenerateConfig(events=6000, days=3, start_date=DAYS[0], partitions=2, dirty_fraction=0.05,
                         users=300, items=200, seed=11)
    write_events(generate_events(spark, cfg), str(out))
    # Evening sessions that run past midnight of the last day land on a fourth day; keep three.
    for extra in out.glob("dt=*"):
        if extra.name[3:] not in DAYS:
            shutil.rmtree(extra)
    return out


def raw_lines(path: Path) -> int:
    return sum(1 for f in path.rglob("*.gz") for _ in gzip.open(f, "rt"))


@pytest.fixture
def make_config(make_config):
    """Bot limits scaled to a log of a few thousand events."""
    return lambda **overrides: make_config(CLEAN__BOTS__MAX_EVENTS_PER_MINUTE=20, **overrides)


def table(spark, cfg, name):
    return spark.read.parquet(cfg.table_path(name))


def test_accounting_lineage_and_mlflow(spark, make_config, raw_log):
    cfg = make_config(INPUT__PATH=raw_log)
    summary = clean_events.run(spark, cfg, DAYS[-1])
    acc = summary.accounting

    assert summary.batches == DAYS
    assert acc["rows_input"] == raw_lines(raw_log)
    assert acc["rows_input"] == acc["rows_clean"] + acc["rows_quarantined"] + acc["rows_duplicate"] + acc["rows_filtered_bot"]
    clean_rows, quarantine = table(spark, cfg, "events_clean"), table(spark, cfg, "events_quarantine")
    assert clean_rows.count() == acc["rows_clean"]
    assert quarantine.count() == acc["rows_quarantined"]
    assert acc["rows_duplicate"] > 0 and acc["rows_filtered_bot"] > 0
    assert set(summary.quarantine_reasons) == {S.Reason.UNPARSEABLE, S.Reason.MISSING_USER_ID,
                                               S.Reason.MISSING_ITEM_ID, S.Reason.NEGATIVE_PRICE,
                                               S.Reason.TIMESTAMP_IN_FUTURE, S.Reason.UNKNOWN_EVENT_TYPE}
    assert {r[S.REASON]: r["count"] for r in quarantine.groupBy(S.REASON).count().collect()} == summary.quarantine_reasons

    # The output honours the canonical schema, with no nulls where none are allowed.
    assert [(f.name, f.dataType) for f in clean_rows.schema] == [(f.name, f.dataType) for f in S.EVENTS_CLEAN]
    required = [f.name for f in S.EVENTS_CLEAN if not f.nullable]
    assert clean_rows.where(" OR ".join(f"{c} IS NULL" for c in required)).count() == 0
    assert clean_rows.where(F.col(S.EVENT_TYPE).isin(*S.EVENT_TYPES)).count() == acc["rows_clean"]
    assert clean_rows.groupBy(S.USER_ID, S.EVENT_ID).count().where("count > 1").count() == 0
    # The nearly unique columns are written without a Parquet dictionary; the rest keep theirs.
    encoded = dictionary_encoded(Path(cfg.table_path("events_clean")))
    assert [encoded[c] for c in S.EVENTS_NEARLY_UNIQUE] == [False] * len(S.EVENTS_NEARLY_UNIQUE)
    assert encoded[S.USER_ID] is True and encoded[S.EVENT_TYPE] is True

    # Lineage: every partition and every row names the MLflow run that wrote it.
    lineage_files = list(Path(cfg.table_path("events_clean")).rglob("_lineage.json"))
    assert lineage_files and {json.loads(f.read_text())["run_id"] for f in lineage_files} == {summary.run_id}
    assert [r[0] for r in clean_rows.select(S.INGEST_RUN_ID).distinct().collect()] == [summary.run_id]

    client = MlflowClient(cfg.mlflow.tracking_uri)
    run = client.get_run(summary.run_id)
    assert run.info.run_name == f"clean_events-{DAYS[-1]}"
    assert run.data.params["clean.session_gap_minutes"] == "30"
    assert run.data.metrics["rows_input"] == acc["rows_input"]
    assert run.data.metrics["rows_quarantined"] == acc["rows_quarantined"]
    assert run.data.metrics["quarantine_unparseable"] == summary.quarantine_reasons[S.Reason.UNPARSEABLE]
    artifacts = {a.path for a in client.list_artifacts(summary.run_id)}
    assert {"data_quality.json", "data_quality.md"} <= artifacts
    report = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=summary.run_id, artifact_path="data_quality.json", tracking_uri=cfg.mlflow.tracking_uri)).read_text())
    assert report["accounting"] == acc


def test_rerun_is_a_noop_and_backfill_rebuilds_identically(spark, make_config, raw_log):
    cfg = make_config(INPUT__PATH=raw_log)
    first = clean_events.run(spark, cfg, DAYS[-1])
    before = sorted(tuple(r) for r in table(spark, cfg, "events_clean").drop(S.INGEST_RUN_ID).collect())
    quarantine_before = table(spark, cfg, "events_quarantine").drop(S.INGEST_RUN_ID).collect()

    again = clean_events.run(spark, cfg, DAYS[-1])
    assert again.batches == [] and again.accounting == {}

    rebuilt = clean_events.run(spark, cfg, DAYS[-1], backfill=(DAYS[0], DAYS[-1]))
    assert rebuilt.batches == DAYS and rebuilt.accounting == first.accounting
    assert sorted(tuple(r) for r in table(spark, cfg, "events_clean").drop(S.INGEST_RUN_ID).collect()) == before
    assert sorted(map(tuple, table(spark, cfg, "events_quarantine").drop(S.INGEST_RUN_ID).collect())) == sorted(
        map(tuple, quarantine_before))
    assert table(spark, cfg, "events_clean").count() == first.accounting["rows_clean"]


def test_incremental_processes_only_the_new_day(spark, make_config, raw_log, tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    for day in DAYS[:2]:
        shutil.copytree(raw_log / f"dt={day}", landing / f"dt={day}")
    cfg = make_config(INPUT__PATH=landing)
    first = clean_events.run(spark, cfg, DAYS[1])
    assert first.batches == DAYS[:2]
    lineage = {p: p.read_text() for p in Path(cfg.table_path("events_clean")).rglob("_lineage.json")}

    shutil.copytree(raw_log / f"dt={DAYS[2]}", landing / f"dt={DAYS[2]}")
    second = clean_events.run(spark, cfg, DAYS[2])
    assert second.batches == [DAYS[2]]
    assert second.accounting["rows_input"] == raw_lines(landing / f"dt={DAYS[2]}")
    # Earlier batches' partitions were not rewritten.
    assert all(p.read_text() == text for p, text in lineage.items())
    batches = {str(r[0]) for r in table(spark, cfg, "events_clean").select(S.INGEST_BATCH).distinct().collect()}
    assert batches == set(DAYS)

    # The same day redelivered into the next day's folder: every valid event in it is a duplicate.
    redelivered = landing / "dt=2026-03-04"
    redelivered.mkdir()
    for f in (landing / f"dt={DAYS[2]}").glob("*.gz"):
        shutil.copy(f, redelivered / f.name)
    # As at scale, where the stored keys of a redelivered day are too many to ship to every task.
    with session_settings(spark, NO_BROADCAST):
        third = clean_events.run(spark, cfg, "2026-03-04")
    assert third.batches == ["2026-03-04"]
    assert third.accounting["rows_clean"] == 0
    assert third.duplicates_by_kind["earlier_batch"] > 0
    assert table(spark, cfg, "events_clean").count() == first.accounting["rows_clean"] + second.accounting["rows_clean"]


def test_full_rebuild_drops_batches_whose_files_are_gone(spark, make_config, raw_log, tmp_path):
    landing = tmp_path / "landing"
    shutil.copytree(raw_log, landing)
    cfg = make_config(INPUT__PATH=landing)
    clean_events.run(spark, cfg, DAYS[-1])
    shutil.rmtree(landing / f"dt={DAYS[0]}")
    rebuilt = clean_events.run(spark, cfg, DAYS[-1], full_rebuild=True)
    assert rebuilt.batches == DAYS[1:]
    remaining = {str(r[0]) for r in table(spark, cfg, "events_clean").select(S.INGEST_BATCH).distinct().collect()}
    assert remaining == set(DAYS[1:])
    assert table(spark, cfg, "events_clean").count() == rebuilt.accounting["rows_clean"]
    assert not (Path(cfg.warehouse.root) / "_ingest_log" / "synthetic" / f"batch={DAYS[0]}.json").exists()


def test_tracking_store_down_fails_before_writing(spark, make_config, raw_log, tmp_path):
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the store's directory should be")
    cfg = make_config(INPUT__PATH=raw_log, MLFLOW__TRACKING_URI=f"sqlite:///{blocked}/mlflow.db")
    with pytest.raises(TrackingError, match="mlflow.required: false"):
        clean_events.run(spark, cfg, DAYS[-1])
    assert not Path(cfg.warehouse.root).exists()

    untracked = make_config(INPUT__PATH=raw_log, MLFLOW__TRACKING_URI=f"sqlite:///{blocked}/mlflow.db",
                            MLFLOW__REQUIRED="false")
    summary = clean_events.run(spark, untracked, DAYS[-1])
    assert summary.run_id.startswith("untracked-")
    assert table(spark, untracked, "events_clean").count() == summary.accounting["rows_clean"]


def test_empty_files_are_processed_and_counted_as_nothing(spark, make_config, tmp_path):
    landing = tmp_path / "landing" / "dt=2026-03-05"
    landing.mkdir(parents=True)
    with gzip.open(landing / "part-0.txt.gz", "wt"):
        pass
    cfg = make_config(INPUT__PATH=tmp_path / "landing")
    summary = clean_events.run(spark, cfg, "2026-03-05")
    assert summary.batches == ["2026-03-05"]
    assert summary.accounting == {"rows_input": 0, "rows_clean": 0, "rows_quarantined": 0,
                                  "rows_duplicate": 0, "rows_filtered_bot": 0}
    assert clean_events.run(spark, cfg, "2026-03-05").batches == []


def write_log(folder: Path, events: list[tuple[str, str, str]]) -> None:
    """Events (id, user, time) as the generator's gzipped JSON lines, all views of one product."""
    folder.mkdir(parents=True)
    with gzip.open(folder / "part-0.txt.gz", "wt") as out:
        for event_id, user, time in events:
            out.write(json.dumps({"id": event_id, "ts": time, "type": "view", "user": user, "product": "5",
                                  "price": 9.5, "category": "books"}) + "\n")


def test_a_bots_day_is_judged_on_all_its_batches(spark, make_config, tmp_path, caplog):
    landing, day = tmp_path / "landing", "2026-03-01"

    def burst(user: str, first: int, count: int) -> list[tuple[str, str, str]]:
        # One event per second from 10:00:first on: all within a minute for up to 60 events.
        return [(f"{user}-{i}", user, f"{day}T10:00:{i:02d}Z") for i in range(first, first + count)]

    quiet = [(f"quiet-{i}", "3", f"{day}T1{i}:00:00Z") for i in range(3)]
    # The limit is 20 events a minute. Batch 1: user 1 stays under it, user 2 is over it.
    write_log(landing / f"dt={day}", burst("1", 0, 12) + burst("2", 0, 25) + quiet[:2])
    cfg = make_config(INPUT__PATH=landing)
    first = clean_events.run(spark, cfg, day)
    assert first.accounting["rows_filtered_bot"] == 25 and first.accounting["rows_clean"] == 14
    bot_rows = table(spark, cfg, "events_bot")
    assert bot_rows.count() == 25 and bot_rows.select(S.USER_ID).distinct().count() == 1
    # The bots' rows are complete events, sessionized among themselves.
    assert bot_rows.where(F.col(S.SESSION_ID).isNull()).count() == 0
    assert bot_rows.select(S.SESSION_ID).distinct().count() == 1

    # Batch 2 brings more of that same day: 3 late events of the bot, 10 more of user 1 in the
    # same minute (22 with the 12 stored: over the limit), one more of the quiet user, and one
    # redelivered bot event (a duplicate of a stored one, not a second bot row).
    write_log(landing / "dt=2026-03-02", burst("2", 25, 3) + burst("1", 12, 10) + quiet[2:] + burst("2", 0, 1))
    with caplog.at_level("WARNING", logger="shoprec.jobs.clean_events"):
        second = clean_events.run(spark, cfg, "2026-03-02")
    assert second.accounting == {"rows_input": 15, "rows_clean": 1, "rows_quarantined": 0, "rows_duplicate": 1,
                                 "rows_filtered_bot": 13}
    assert second.duplicates_by_kind["earlier_batch"] == 1
    # User 1's 12 rows stored clean by batch 1 fall on a day now judged a bot's: counted, named, kept.
    assert second.stored_clean_on_bot_days == 12
    assert "12 row(s) stored in events_clean by earlier batches (the first 2026-03-01)" in caplog.text
    run = MlflowClient(cfg.mlflow.tracking_uri).get_run(second.run_id)
    assert run.data.metrics["stored_clean_on_bot_days"] == 12
    report = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=second.run_id, artifact_path="data_quality.json", tracking_uri=cfg.mlflow.tracking_uri)).read_text())
    assert report["bots"] == {"rows": 13, "users": 2, "user_days": 2, "stored_clean_on_bot_days": 12}
    by_batch = {(str(r[S.INGEST_BATCH]), r["count"]) for r in table(spark, cfg, "events_bot").groupBy(S.INGEST_BATCH).count().collect()}
    assert by_batch == {(day, 25), ("2026-03-02", 13)}
    assert table(spark, cfg, "events_clean").count() == 14 + 1
    # The bot's late events continue its stored session; user 1's rows of the day, now a bot's,
    # form one in events_bot apart from the session its stored clean rows keep.
    bot_sessions = {r[0] for r in table(spark, cfg, "events_bot").select(S.SESSION_ID).distinct().collect()}
    clean_sessions = {r[0] for r in table(spark, cfg, "events_clean").select(S.SESSION_ID).distinct().collect()}
    assert len(bot_sessions) == 2 and not bot_sessions & clean_sessions

    # A backfill of both batches judges the day as one: user 1's whole day is a bot's.
    rebuilt = clean_events.run(spark, cfg, "2026-03-02", backfill=(day, "2026-03-02"))
    assert rebuilt.stored_clean_on_bot_days == 0
    assert rebuilt.accounting["rows_clean"] == 3 and rebuilt.accounting["rows_filtered_bot"] == 50
    assert table(spark, cfg, "events_clean").select(S.EVENT_ID).distinct().count() == 3
    assert table(spark, cfg, "events_bot").count() == 50


def test_a_late_event_continues_its_stored_session(spark, make_config, tmp_path):
    landing, day, next_day = tmp_path / "landing", "2026-03-01", "2026-03-02"
    write_log(landing / f"dt={day}", [("a", "4", f"{day}T10:00:00Z"), ("b", "4", f"{day}T10:10:00Z"),
                                       ("c", "4", f"{day}T23:50:00Z"), ("h", "5", f"{day}T23:00:00Z")])
    cfg = make_config(INPUT__PATH=landing)
    clean_events.run(spark, cfg, day)
    write_log(landing / f"dt={next_day}", [
        ("d", "4", f"{day}T10:20:00Z"),         # late: 10 minutes after b
        ("e", "4", f"{next_day}T00:05:00Z"),    # 15 minutes after c, past midnight
        ("f", "4", f"{day}T09:45:00Z"),         # 15 minutes before a: opens the session a stored one
        ("g", "4", f"{day}T12:00:00Z"),         # 100 minutes after d: a new session
        ("i", "5", f"{next_day}T00:20:00Z"),    # 80 minutes after h: a new session
    ])
    second = clean_events.run(spark, cfg, next_day)
    assert second.accounting["rows_clean"] == 5

    def sessions() -> dict[str, str]:
        return {r[S.EVENT_ID]: r[S.SESSION_ID]
                for r in table(spark, cfg, "events_clean").select(S.EVENT_ID, S.SESSION_ID).collect()}

    got = sessions()
    assert got["a"] == got["b"] == got["d"] and got["c"] == got["e"]
    # The stored rows keep their ids, so f, which a full rebuild puts in a's session, has its own.
    assert len({got["a"], got["c"], got["f"], got["g"], got["h"], got["i"]}) == 6
    clean_events.run(spark, cfg, next_day, full_rebuild=True)
    rebuilt = sessions()
    assert rebuilt["f"] == rebuilt["a"] == rebuilt["b"] == rebuilt["d"] and rebuilt["c"] == rebuilt["e"]
    assert rebuilt["c"] == got["c"] and rebuilt["g"] == got["g"]
