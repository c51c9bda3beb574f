"""Shared fixtures: one local Spark session and one MLflow store for the whole test run."""

from __future__ import annotations

import hashlib
import importlib.util
import hmac
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = (PROJECT.parent / "shared" / "data").resolve()
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# clean_events pseudonymizes user ids with the secret in this variable (conf privacy.secret_env). One
# random secret per test run, inherited by every job the tests start (spark-submit, Airflow, cluster),
# so two runs of the same input give the same pseudonyms.
PSEUDONYM_SECRET_ENV = "SHOPREC_PSEUDONYM_SECRET"
os.environ.setdefault(PSEUDONYM_SECRET_ENV, secrets.token_hex(32))


def pytest_report_header(config) -> str:
    """Free space where the tests write: a full run needs about 14 GiB at its peak (the cluster
    tier's executors each unpack the shipped environment), and a disk that fills mid-run fails
    Spark tasks with errors far from the cause."""
    temp = config.option.basetemp or tempfile.gettempdir()
    while not os.path.exists(temp):
        temp = os.path.dirname(temp)
    return f"free disk under {temp}: {shutil.disk_usage(temp).free / 2 ** 30:.1f} GiB"


def expected_pseudonym(user_id: str) -> str:
    """The pseudonym of ``user_id`` under the test run's secret, by the definition: the first 32
    hex digits of HMAC-SHA256(secret, user id)."""
    secret = os.environ[PSEUDONYM_SECRET_ENV].encode()
    return hmac.new(secret, user_id.encode(), hashlib.sha256).hexdigest()[:32]


def load_benchmark(name: str):
    """The module ``benchmarks/<name>.py``, loaded from its file (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, PROJECT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shared_dataset(name: str) -> Path:
    """Path of a real dataset in ../shared/data; skip if absent, except in CI where absence fails."""
    path = SHARED_DATA / name
    if not path.exists():
        if IN_CI:
            pytest.fail(f"{path} is missing in CI: real-data tests must run there")
        pytest.skip(f"{path} is not present")
    return path


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """The test suite's one SparkSession: local[2], few shuffle partitions, no UI."""
    from shoprec.config import SparkConfig
    from shoprec.spark import build_session

    scratch = tmp_path_factory.mktemp("spark")
    session = build_session(SparkConfig(
        master="local[2]",
        app_name="shoprec-tests",
        shuffle_partitions=2,
        conf={
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.local.dir": str(scratch / "local"),
            "spark.sql.warehouse.dir": str(scratch / "warehouse"),
            "spark.driver.memory": "3g",
            "spark.default.parallelism": "2",
            # Spark keeps the code it generates for 100 plans; the suite runs many more, and
            # generating and JIT-compiling an evicted plan's code again cost about a tenth of the
            # time of the job tests (test_clean_events_job and test_model_jobs: 229-230 s with the
            # default, 201-213 s with this).
            "spark.sql.codegen.cache.maxEntries": "2000",
        },
    ))
    yield session
    session.stop()


@contextmanager
def session_settings(spark, settings: dict[str, str]):
    """The suite's session with ``settings`` while the block runs; its own values (or none) after."""
    suite_values = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield spark
    finally:
        for key, value in suite_values.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


# Spark's limits on a join side it ships whole to every task: -1 makes every side "too large".
NO_BROADCAST = {"spark.sql.autoBroadcastJoinThreshold": "-1", "spark.sql.adaptive.autoBroadcastJoinThreshold": "-1"}


@contextmanager
def job_shuffle_partitions(spark, cfg):
    """The suite's session with ``cfg``'s shuffle partitions while the block runs, so that a job's
    ``run`` called in it partitions its data as a spark-submit of the job would."""
    with session_settings(spark, {"spark.sql.shuffle.partitions": str(cfg.spark.shuffle_partitions)}):
        yield spark


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory) -> dict[str, str]:
    """A real MLflow SQLite store shared by the run: env overrides pointing config at it."""
    root = tmp_path_factory.mktemp("mlflow")
    return {
        "SHOPREC__MLFLOW__TRACKING_URI": f"sqlite:///{root}/mlflow.db",
        "SHOPREC__MLFLOW__ARTIFACT_LOCATION": str(root / "artifacts"),
    }


@pytest.fixture
def make_config(tmp_path, mlflow_store):
    """Build a Config from conf/local.yaml with the warehouse in tmp_path and the given overrides."""
    from shoprec.config import load_config

    def build(conf: str = "conf/local.yaml", **overrides: str):
        environ = {
            **mlflow_store,
            "SHOPREC__WAREHOUSE__ROOT": str(tmp_path / "warehouse"),
            **{f"SHOPREC__{key.upper()}": str(value) for key, value in overrides.items()},
        }
        return load_config(PROJECT / conf, environ=environ)

    return build


def small_pipeline_conf(root: Path, raw: Path) -> dict:
    """Config overlay (nested, as in YAML) that runs every job quickly on a few thousand events:
    the warehouse, MLflow store and models under ``root``, the raw log at ``raw``."""
    return {
        "spark": {"shuffle_partitions": 4},
        "warehouse": {"root": str(root / "warehouse")},
        "mlflow": {"tracking_uri": f"sqlite:///{root}/mlflow.db", "artifact_location": str(root / "artifacts")},
        "input": {"source": "synthetic", "path": str(raw)},
        "profiles": {"segments": 3, "content_features": 64},
        "als": {"ranks": [8], "reg_params": [0.1], "alphas": [2.0], "max_iter": 5, "blocks": 2, "max_excluded": 50},
        "rules": {"min_basket_count": 2},
        "evaluate": {"ks": [5, 10]},
        "ranker": {"als_rank": 8, "negatives_per_user": 3, "validation_percent": 20, "epochs": 2, "patience": 5,
                   "batch_size": 256, "models_root": str(root / "models")},
        "score": {"top_k": 10, "max_per_category": 2},
        "search": {"days": 2},
    }


def write_small_log(spark, raw: Path, days: list[str], seed: int = 9) -> None:
    """A clean synthetic log of ``days`` (consecutive dates) at ``raw``, one ``dt=`` directory a day."""
    import shutil

    from shoprec.config import GenerateConfig
    from shoprec.synthetic import generate_events, write_events

    write_events(generate_events(spark, GenerateConfig(
        events=15000, days=len(days), start_date=days[0], users=300, items=120, categories=6, brands=10,
        partitions=2, dirty_fraction=0.0, bot_users=0, seed=seed)), str(raw))
    for extra in raw.glob("dt=*"):
        if extra.name[3:] not in days:
            shutil.rmtree(extra)


# The jobs of the daily DAG, in its order.
PIPELINE_JOBS = ["clean_events", "build_profiles", "train_als", "mine_rules", "build_training_set", "train_ranker",
                 "score", "search_rerank", "evaluate"]
# Columns that name the run that wrote a row, not the data.
RUN_COLUMNS = {"ingest_run_id"}


def read_documented(spark, warehouse: Path, name: str):
    """A table of a pipeline run under ``warehouse``, read with its documented schema (so that a
    table with no rows, like the quarantine of a clean log, reads too). The restricted tables sit
    beside the warehouse, where privacy.restricted_root's default puts them."""
    from shoprec.catalog import BY_NAME, schema_ddl

    root = warehouse.parent / f"{warehouse.name}_restricted" if BY_NAME[name].restricted else warehouse
    return spark.read.schema(schema_ddl(BY_NAME[name])).parquet(str(root / name))


def comparable(df):
    """Rows as a set-comparable frame: run ids out, doubles rounded to 6 places."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    return df.select(*[
        (F.round(F.col(f.name), 6) if isinstance(f.dataType, T.DoubleType) else F.col(f.name)).alias(f.name)
        for f in df.schema.fields if f.name not in RUN_COLUMNS])


AIRFLOW_VENV = PROJECT / ".airflow-venv"
PIPELINE_DAYS = [f"2026-05-0{d}" for d in range(1, 7)]
PIPELINE_RUN_DATE = PIPELINE_DAYS[-1]

RUN_DAG = """
import datetime as dt, json, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.utils.session import create_session
from airflow.models.taskinstance import TaskInstance

bag = DagBag()
assert not bag.import_errors, bag.import_errors
run = bag.get_dag("shoprec_daily").test(
    logical_date=dt.datetime.fromisoformat(sys.argv[1]).replace(tzinfo=dt.timezone.utc))
with create_session() as session:
    states = {ti.task_id: str(ti.state) for ti in session.query(TaskInstance).filter(
        TaskInstance.dag_id == "shoprec_daily", TaskInstance.run_id == run.run_id)}
print("RESULT" + json.dumps({"run_state": str(run.state), "tasks": states}))
"""


@pytest.fixture(scope="session")
def pipeline_raw_log(spark, tmp_path_factory) -> Path:
    """The small synthetic log every whole-pipeline run reads (the same input for each of them)."""
    raw = tmp_path_factory.mktemp("pipeline_raw")
    write_small_log(spark, raw, PIPELINE_DAYS)
    return raw


def write_pipeline_dist(root: Path, raw: Path) -> Path:
    """``make package`` into root/dist, with conf/pipeline-test.yaml: the small settings, state under root."""
    dist = root / "dist"
    subprocess.run([sys.executable, str(PROJECT / "scripts" / "package.py"), "--dist", str(dist)], check=True)
    conf = {"extends": "local.yaml", **small_pipeline_conf(root, raw)}
    conf["spark"]["conf"] = {"spark.driver.memory": "2g"}
    (dist / "conf" / "pipeline-test.yaml").write_text(yaml.safe_dump(conf))
    return dist


@pytest.fixture(scope="session")
def daily_dag_run(spark, tmp_path_factory, pipeline_raw_log):
    """One real run of the shoprec_daily DAG (Airflow's dag.test) for PIPELINE_RUN_DATE through
    spark-submit on a local[2] Spark connection: the task states, the warehouse and the log."""
    if not (AIRFLOW_VENV / "bin" / "airflow").exists():
        if os.environ.get("CI"):
            pytest.fail(".airflow-venv is missing in CI: make test runs `make airflow-env` first")
        pytest.skip(".airflow-venv not set up (make airflow-env)")
    root = tmp_path_factory.mktemp("airflow_run")
    dist = write_pipeline_dist(root, pipeline_raw_log)
    job_bin = Path(sys.executable).parent
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SHOPREC__", "PYSPARK_GATEWAY"))},
        "AIRFLOW_HOME": str(root / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT / "airflow_dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "AIRFLOW_CONN_SPARK_SHOPREC": json.dumps({"conn_type": "spark", "host": "local[2]"}),
        "AIRFLOW_CONN_FS_DEFAULT": json.dumps({"conn_type": "fs", "extra": {"path": "/"}}),
        "AIRFLOW_VAR_SHOPREC_HOME": str(dist),
        "AIRFLOW_VAR_SHOPREC_CONF": "pipeline-test.yaml",
        "AIRFLOW_VAR_SHOPREC_INPUT_PATH": str(pipeline_raw_log),
        "AIRFLOW_VAR_SHOPREC_DRIVER_MEMORY": "2g",
        # The workers find spark-submit (pyspark's) and the job environment's Python on PATH.
        "PATH": f"{job_bin}:{os.environ['PATH']}",
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOG_LEVEL": "WARN",
    }
    airflow = str(AIRFLOW_VENV / "bin" / "airflow")
    migrated = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=600)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    done = subprocess.run([str(AIRFLOW_VENV / "bin" / "python"), "-c", RUN_DAG, PIPELINE_RUN_DATE], env=env, cwd=root,
                          capture_output=True, text=True, timeout=3600)
    (root / "dag_test.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stderr[-5000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT"))
    return {"result": json.loads(line[len("RESULT"):]), "root": root, "warehouse": root / "warehouse",
            "log": root / "dag_test.log", "conf": dist / "conf" / "pipeline-test.yaml"}
