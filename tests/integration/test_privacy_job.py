"""Pseudonymous user ids through clean_events: the analysts' tables carry only pseudonyms, the map
back and the raw lines stay under the restricted root, and the secret shows up nowhere a run
leaves traces (job log, tables, MLflow store, the Spark event log that the UI replays)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from shoprec.config import GenerateConfig, load_config
from shoprec.jobs import clean_events
from shoprec.query import run_query
from shoprec.synthetic import generate_events, write_events
from tests.conftest import PROJECT, PSEUDONYM_SECRET_ENV, expected_pseudonym

pytestmark = pytest.mark.integration
DAYS = ["2026-04-01", "2026-04-02"]
SHOPREC = Path(sys.executable).parent / "shoprec"


@pytest.fixture(scope="module")
def dirty_log(spark, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("privacy_raw") / "synthetic"
    write_events(generate_events(spark, GenerateConfig(
        events=4000, days=2, start_date=DAYS[0], partitions=2, dirty_fraction=0.05, users=200, items=100,
        seed=5)), str(out))
    for extra in out.glob("dt=*"):
        if extra.name[3:] not in DAYS:
            shutil.rmtree(extra)
    return out


def raw_user_ids(raw: Path) -> set[str]:
    """Every user id in the raw log, read with the json module."""
    users = set()
    for path in raw.rglob("*.gz"):
        for line in gzip.open(path, "rt", errors="replace"):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("user") is not None:
                users.add(str(record["user"]))
    return users


def files_under(*roots: Path):
    for root in roots:
        yield from (p for p in root.rglob("*") if p.is_file())


def test_analysts_tables_carry_pseudonyms_and_the_secret_leaves_no_trace(spark, tmp_path, dirty_log):
    secret = os.environ[PSEUDONYM_SECRET_ENV]
    conf = tmp_path / "privacy.yaml"
    conf.write_text(yaml.safe_dump({
        "extends": str(PROJECT / "conf" / "local.yaml"),
        "spark": {"master": "local[2]", "shuffle_partitions": 4, "conf": {
            # The event log is what the Spark UI (history server) shows: environment tab, SQL plans.
            "spark.eventLog.enabled": "true", "spark.eventLog.dir": str(tmp_path / "spark-events"),
            "spark.eventLog.compress": "false",  # plain JSON, so the grep below reads what the UI would
            "spark.hadoop.javax.jdo.option.ConnectionURL":
                f"jdbc:derby:;databaseName={tmp_path}/metastore_db;create=true",
            "spark.sql.warehouse.dir": str(tmp_path / "spark-warehouse")}},
        "warehouse": {"root": str(tmp_path / "warehouse")},
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "artifact_location": str(tmp_path / "artifacts")},
        "input": {"source": "synthetic", "path": str(dirty_log)},
        "clean": {"bots": {"max_events_per_minute": 20}},
    }))
    (tmp_path / "spark-events").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOPREC__", "PYSPARK_GATEWAY"))}
    done = subprocess.run([str(SHOPREC), "run", "clean_events", "--conf", str(conf), "--run-date", DAYS[-1]],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    cfg = load_config(conf)

    # The analysts' events, the bots' included: pseudonyms of the raw log's users, never a raw id.
    raw_users = raw_user_ids(dirty_log)
    stored_users = set()
    for table in ("events_clean", "events_bot"):
        users = {r.user_id for r in spark.read.parquet(cfg.table_path(table)).select("user_id").distinct().collect()}
        assert users and users <= {expected_pseudonym(u) for u in raw_users}, table
        assert not users & raw_users, table
        stored_users |= users
    # The restricted map leads back, for every user of the events.
    pairs = {(r.user_pseudonym, r.user_id) for r in spark.read.parquet(cfg.table_path("user_id_map")).collect()}
    assert all(pseudonym == expected_pseudonym(user) for pseudonym, user in pairs)
    assert stored_users <= {pseudonym for pseudonym, _ in pairs}

    # Tables with real ids are outside the warehouse root: the analysts' query tool cannot see them.
    assert Path(cfg.table_path("events_quarantine")).parent == tmp_path / "warehouse_restricted"
    _, tables = run_query(cfg.warehouse.root, "SHOW TABLES")
    assert {t for (t,) in tables} == {"events_clean", "events_bot"}
    _, restricted = run_query(cfg.restricted_root, "SELECT count(*) FROM events_quarantine")
    assert restricted[0][0] > 0

    # The data-quality report in MLflow shows reasons and files, not raw lines.
    client = MlflowClient(cfg.mlflow.tracking_uri)
    run = client.search_runs([client.get_experiment_by_name(cfg.mlflow.experiment).experiment_id])[0]
    report = json.loads(Path(client.download_artifacts(run.info.run_id, "data_quality.json", str(tmp_path))).read_text())
    assert report["quarantine_samples"] and all(set(s) == {"reason", "source_file"} for s in report["quarantine_samples"])

    # The secret: in no log line, table file, MLflow record or artifact, nor the Spark event log.
    assert list((tmp_path / "spark-events").iterdir()), "no Spark event log was written"
    event_log = b"".join(p.read_bytes() for p in files_under(tmp_path / "spark-events"))
    assert b"SparkListenerEnvironmentUpdate" in event_log and b"user_pseudonym" in event_log
    assert secret not in done.stdout + done.stderr
    leaked = [str(p) for p in files_under(tmp_path) if secret.encode() in p.read_bytes()]
    assert leaked == []
    assert all(secret not in str(value) for value in (*run.data.params.values(), *run.data.tags.values()))


def test_without_the_secret_clean_events_stops_before_spark_starts(tmp_path, dirty_log):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOPREC__", "PYSPARK_GATEWAY"))}
    env.pop(PSEUDONYM_SECRET_ENV)
    env["SHOPREC__INPUT__PATH"] = str(dirty_log)
    env["SHOPREC__WAREHOUSE__ROOT"] = str(tmp_path / "warehouse")
    done = subprocess.run([str(SHOPREC), "run", "clean_events", "--run-date", DAYS[-1]],
                          cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert f"config error: privacy.pseudonymize is on, but the environment variable {PSEUDONYM_SECRET_ENV}" in done.stderr
    assert "SparkContext" not in done.stderr and not (tmp_path / "warehouse").exists()


def test_pseudonymization_can_be_turned_off(spark, make_config, dirty_log):
    cfg = make_config(INPUT__PATH=dirty_log, PRIVACY__PSEUDONYMIZE="false", CLEAN__BOTS__MAX_EVENTS_PER_MINUTE=20)
    clean_events.run(spark, cfg, DAYS[-1])
    stored = {r.user_id for r in spark.read.parquet(cfg.table_path("events_clean")).select("user_id").distinct().collect()}
    assert stored and stored <= raw_user_ids(dirty_log)
    assert not Path(cfg.table_path("user_id_map")).exists()


def test_the_pseudonym_lookup_gives_the_same_events_broadcast_or_shuffled(spark, make_config, dirty_log):
    def clean_rows(broadcast_rows: int) -> list[tuple]:
        cfg = make_config(INPUT__PATH=dirty_log, CLEAN__PSEUDONYM_MAP_BROADCAST_ROWS=broadcast_rows)
        # A full rebuild each time: the second run must redo the batches the first one logged.
        summary = clean_events.run(spark, cfg, DAYS[-1], full_rebuild=True)
        assert summary.accounting["rows_clean"] > 0
        table = spark.read.parquet(cfg.table_path("events_clean")).drop("ingest_run_id")
        return sorted(tuple(row) for row in table.collect())

    broadcast = clean_rows(500_000)
    # 200 users over two batches: over a limit of one row the job leaves the join to Spark, which
    # would still broadcast a map this small unless its own size threshold is off.
    threshold = spark.conf.get("spark.sql.autoBroadcastJoinThreshold")
    spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "-1")
    try:
        shuffled = clean_rows(1)
    finally:
        spark.conf.set("spark.sql.autoBroadcastJoinThreshold", threshold)
    assert shuffled == broadcast
