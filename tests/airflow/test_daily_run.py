"""The daily DAG really runs: every task of one ``shoprec_daily`` run, through spark-submit on a
local Spark connection, on a small synthetic log; the day's output tables, and what evaluate
logged to MLflow, are then read back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import functions as F

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


def test_evaluate_compares_every_recommender(spark, daily_dag_run):
    """The DAG's evaluate: a row per recommender and metric, the search orders (the backtest's
    search ranker's among them), the stage clock, and backtest rankers labelled before the
    held-out window (2026-05-05 on)."""
    cfg = load_config(daily_dag_run["conf"],
                      environ={k: v for k, v in os.environ.items() if not k.startswith("SHOPREC__")})
    table = spark.read.parquet(str(daily_dag_run["warehouse"] / "eval_metrics")).where(f"run_date = '{RUN_DATE}'")
    models = {r.model for r in table.select("model").distinct().collect()}
    fused = {f"search_fused_{weight:g}" for weight in cfg.evaluate.search_ranker_weights}
    # search_learned: the backtest's label window had enough followed searches for a search ranker.
    assert models == {"popularity", "als", "rules", "content", "pipeline", "pipeline_uncapped", "search_text",
                      "search_learned", "search_ranker", *fused}
    searches = {(r.model, r.metric): r.value for r in table.where(F.col("model").startswith("search_")
                                                                  & (F.col("k") == 10)).collect()}
    for model in ("search_text", "search_learned", "search_ranker", *fused):
        assert {"precision", "recall", "ndcg", "map", "hit_rate"} <= {m for (name, m) in searches if name == model}
        assert 0.0 < searches[(model, "hit_rate")] <= 1.0  # searches in this log are followed by views of matches
    # search_ranker is the fused order at the configured weight.
    configured = f"search_fused_{cfg.search.ranker_weight:g}"
    assert configured in fused
    assert {m: v for (name, m), v in searches.items() if name == configured} == {
        m: v for (name, m), v in searches.items() if name == "search_ranker"}
    models -= {"search_text", "search_learned", "search_ranker", *fused}
    at_k = {(r.model, r.metric): r.value for r in table.where(F.col("k") == 10).collect()}
    for model in models:
        for metric in ("precision", "recall", "ndcg", "map", "hit_rate", "coverage", "diversity"):
            assert 0.0 <= at_k[(model, metric)] <= 1.0
        assert at_k[(model, "novelty")] >= 0.0
    # Popularity serves every held-out user; learned models beat chance on this log.
    assert at_k[("popularity", "hit_rate")] > 0
    assert at_k[("als", "ndcg")] > 0
    assert at_k[("pipeline", "hit_rate")] > 0

    client = MlflowClient(cfg.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.mlflow.experiment)
    # The first one: the rerun test may add a second.
    run = client.search_runs([experiment.experiment_id], f"tags.mlflow.runName = 'evaluate-{RUN_DATE}'",
                             order_by=["attributes.start_time ASC"])[0]
    metrics = run.data.metrics
    assert metrics["held_out_users"] > 0 and metrics["new_users_in_window"] >= 0
    assert metrics["held_out_searches"] > 0
    assert table.count() == sum(1 for name in metrics if "_at_" in name and not name.startswith("seconds_"))
    stages = {"holdout", "als_tuning", "baselines", "pipeline_training_set", "pipeline_ranker", "pipeline_features",
              "pipeline_recommend", "compare", "search", "report"}
    assert {f"seconds_{stage}" for stage in stages} <= set(metrics)
    assert all(metrics[f"seconds_{stage}"] > 0 for stage in stages)
    # The pipeline's ranker was trained on labels before the held-out window only.
    spec = json.loads((Path(cfg.ranker.models_root) / "backtest" / "2026-05-05" / "training_set"
                       / "_feature_spec.json").read_text())
    assert spec["cutoff"] == "2026-05-03" and spec["run_date"] == "2026-05-04"
    assert 0.0 <= metrics["pipeline_best_val_auc"] <= 1.0
    assert 0.0 <= metrics["pipeline_best_val_ndcg"] <= 1.0
    assert 1 <= metrics["pipeline_best_epoch"] <= metrics["pipeline_epochs"]
    assert 0.0 <= metrics["search_ranker_best_val_ndcg"] <= 1.0
    # Whether search_rerank would serve it: only if it beat the text order on its validation searches.
    assert 0.0 <= metrics["search_ranker_reference_val_ndcg"] <= 1.0
    assert metrics["search_ranker_served"] == int(
        metrics["search_ranker_best_val_ndcg"] > metrics["search_ranker_reference_val_ndcg"])
    search_spec = json.loads((Path(cfg.ranker.models_root) / "backtest" / "2026-05-05" / "search_training_set"
                              / "_feature_spec.json").read_text())
    assert search_spec["cutoff"] == "2026-05-03" and search_spec["group"] == "search_id"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metric_bars.png", "precision_recall_at_k.png", "comparison.md"} <= artifacts
    # The staged intermediate results are gone with the run.
    assert not list(Path(cfg.restricted_root).glob("_staging/evaluate-*"))


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
