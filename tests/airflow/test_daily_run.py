"""The daily DAG really runs: every task of one ``shoprec_daily`` run, through spark-submit on a
local Spark connection, on a small synthetic log; the day's output tables are then read back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shoprec.catalog import TABLES, schema_differences
from shoprec.config import load_config
from tests.conftest import PIPELINE_RUN_DATE as RUN_DATE

pytestmark = pytest.mark.airflow


def test_every_task_of_the_daily_dag_run_succeeds(daily_dag_run):
    result = daily_dag_run["result"]
    assert result["tasks"] == {task: "success" for task in (
        "raw_input_landed", "clean_events", "build_profiles", "train_als", "mine_rules", "build_training_set",
        "train_ranker", "score", "search_rerank", "evaluate")}, daily_dag_run["log"].read_text()[-5000:]
    assert result["run_state"] == "success"


def test_the_daily_dag_run_writes_the_days_tables(spark, daily_dag_run):
    warehouse = daily_dag_run["warehouse"]
    recommendations = spark.read.parquet(str(warehouse / "recommendations")).where(f"run_date = '{RUN_DATE}'")
    assert recommendations.select("user_id").distinct().count() > 100
    assert recommendations.groupBy("user_id").count().agg({"count": "max"}).first()[0] == 10
    for table in ("events_clean", "interactions", "als_recs", "assoc_rules", "training_set", "search_results"):
        assert spark.read.parquet(str(warehouse / table)).count() > 0, table
    models = {r.model for r in spark.read.parquet(str(warehouse / "eval_metrics")).select("model").distinct().collect()}
    assert {"popularity", "als", "pipeline"} <= models


def test_spark_submit_gets_the_driver_settings(daily_dag_run):
    """Driver memory and stack are on the spark-submit command line, matching the config: no job warns."""
    log = daily_dag_run["log"].read_text()
    assert "spark.driver.memory=2g" in log and "spark.driver.extraJavaOptions=-Xss16m" in log
    assert "pass it to spark-submit" not in log


def test_the_tables_are_as_documented_and_in_the_catalog(spark, daily_dag_run):
    """Every table the run wrote has the columns and types of docs/tables.md, and each job
    registered its tables in the Hive metastore that spark-sql then reads."""
    cfg = load_config(daily_dag_run["conf"])
    assert schema_differences(spark, cfg) == {}
    spark_sql = Path(sys.executable).parent / "spark-sql"
    shown = subprocess.run(
        [str(spark_sql), "--master", "local[1]", "--conf", "spark.sql.catalogImplementation=hive",
         "--conf", "spark.hadoop.javax.jdo.option.ConnectionURL=jdbc:derby:;databaseName=var/metastore_db",
         "--conf", "spark.ui.enabled=false", "-S", "-e",
         f"SHOW TABLES IN shoprec; SELECT count(DISTINCT user_id) FROM shoprec.recommendations "
         f"WHERE run_date = DATE'{RUN_DATE}';"],
        cwd=daily_dag_run["root"], capture_output=True, text=True, timeout=600,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_GATEWAY")},
             "PATH": f"{spark_sql.parent}:{os.environ['PATH']}"})
    assert shown.returncode == 0, shown.stderr[-3000:]
    lines = [line.strip() for line in shown.stdout.splitlines() if line.strip()]
    assert set(lines[:-1]) == {t.name for t in TABLES if not t.restricted}
    users = spark.read.parquet(str(daily_dag_run["warehouse"] / "recommendations")).where(
        f"run_date = '{RUN_DATE}'").select("user_id").distinct().count()
    assert lines[-1] == str(users)
