"""MLflow as a service: scripts/mlflow_server.sh starts PostgreSQL and a tracking server on
loopback; a job logs to it over HTTP and the run is read back; a server that is down stops a job
before it writes a table, unless the job may run untracked."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.jobs import clean_events
from shoprec.tracking import TrackingError
from tests.conftest import PROJECT, write_small_log
from tests.support.services import free_port

pytestmark = pytest.mark.mlflow_server
DAYS = ["2026-04-01", "2026-04-02"]


@pytest.fixture(scope="module")
def server():
    # Outside pytest's private temp tree: PostgreSQL runs as its own user and must reach its data.
    home = Path(tempfile.mkdtemp(prefix="shoprec-mlflow-server-"))
    home.chmod(0o755)
    env = {**os.environ, "MLFLOW_SERVER_DIR": str(home), "MLFLOW_PORT": str(free_port()),
           "PG_PORT": str(free_port())}
    script = [str(PROJECT / "scripts" / "mlflow_server.sh")]
    started = subprocess.run([*script, "start"], env=env, capture_output=True, text=True, timeout=600)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield {"uri": f"http://127.0.0.1:{env['MLFLOW_PORT']}", "home": home, "pg_port": env["PG_PORT"]}
    finally:
        subprocess.run([*script, "stop"], env=env, capture_output=True, timeout=120)
        subprocess.run(["rm", "-rf", str(home)], check=False)


def command_lines() -> list[bytes]:
    """Every running process's command line."""
    lines = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            lines.append(Path(f"/proc/{pid}/cmdline").read_bytes())
        except OSError:  # the process ended meanwhile
            pass
    return lines


@pytest.fixture(scope="module")
def raw_log(spark, tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("mlflow_server_raw")
    write_small_log(spark, raw, DAYS, seed=5)
    return raw


def test_a_job_logs_to_the_server_and_the_run_reads_back(spark, make_config, server, raw_log):
    cfg = make_config(INPUT__PATH=raw_log, MLFLOW__TRACKING_URI=server["uri"], MLFLOW__ARTIFACT_LOCATION="",
                      MLFLOW__EXPERIMENT="shoprec-server-test")
    summary = clean_events.run(spark, cfg, DAYS[-1])

    client = MlflowClient(server["uri"])
    run = client.get_run(summary.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == f"clean_events-{DAYS[-1]}"
    assert client.get_experiment(run.info.experiment_id).name == "shoprec-server-test"
    assert run.data.params["mlflow.tracking_uri"] == server["uri"]
    assert run.data.metrics["rows_clean"] == summary.accounting["rows_clean"] > 0
    # Artifacts go through the server (proxied) into its artifact store.
    assert {a.path for a in client.list_artifacts(summary.run_id)} >= {"data_quality.json", "data_quality.md"}
    assert any(server["home"].joinpath("artifacts").rglob("data_quality.json"))
    lineage = spark.read.parquet(cfg.table_path("events_clean")).select(S.INGEST_RUN_ID).distinct()
    assert [r[0] for r in lineage.collect()] == [summary.run_id]
    # The runs live in PostgreSQL, not in a file beside the server.
    assert not list(server["home"].glob("*.db"))

    # The database password is in the pgpass file only: not in the run, its artifacts, the server's
    # logs, its artifact store, nor any process's command line.
    password = (server["home"] / "pgpass").read_text().strip().split(":")[4].encode()
    readable = [p for p in server["home"].rglob("*")
                if p.is_file() and p.name != "pgpass" and "pgdata" not in p.relative_to(server["home"]).parts]
    assert any(p.name == "mlflow.log" for p in readable)
    traces = [p.read_bytes() for p in readable]
    traces.append(repr(run.data.params).encode() + repr(run.data.tags).encode())
    traces += command_lines()
    assert not [blob[:200] for blob in traces if password in blob]


def test_server_down_stops_the_job_before_any_table(spark, make_config, raw_log):
    down = f"http://127.0.0.1:{free_port()}"
    cfg = make_config(INPUT__PATH=raw_log, MLFLOW__TRACKING_URI=down, MLFLOW__CONNECT_TIMEOUT_SECONDS="3")
    with pytest.raises(TrackingError, match=f"{down}.*no answer.*mlflow.required: false"):
        clean_events.run(spark, cfg, DAYS[-1])
    assert not Path(cfg.warehouse.root).exists()

    untracked = make_config(INPUT__PATH=raw_log, MLFLOW__TRACKING_URI=down, MLFLOW__CONNECT_TIMEOUT_SECONDS="3",
                            MLFLOW__REQUIRED="false")
    summary = clean_events.run(spark, untracked, DAYS[-1])
    assert summary.run_id.startswith("untracked-")
    written = spark.read.parquet(untracked.table_path("events_clean"))
    assert written.where(F.col(S.INGEST_RUN_ID) == summary.run_id).count() == summary.accounting["rows_clean"]
