"""build_profiles -> train_als, mine_rules end to end on an eight-day synthetic log (evaluate is
checked on the daily DAG's run: tests/airflow/test_daily_run.py)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import functions as F

from shoprec.config import GenerateConfig, load_config
from shoprec.io.tables import read_snapshot
from shoprec.jobs import build_profiles, clean_events, mine_rules, train_als
from shoprec.synthetic import generate_events, write_events

pytestmark = pytest.mark.integration
PROJECT = Path(__file__).resolve().parents[2]
START, DAY7, DAY8 = "2026-04-01", "2026-04-07", "2026-04-08"
DAYS = [f"2026-04-0{d}" for d in range(1, 9)]
GRID = 2


@pytest.fixture(scope="module")
def cfg(spark, tmp_path_factory, mlflow_store):
    """A cleaned eight-day log and a config sized for it (a two-point ALS grid, few iterations)."""
    root = tmp_path_factory.mktemp("models")
    raw = root / "raw"
    write_events(generate_events(spark, GenerateConfig(
        events=24000, days=8, start_date=START, users=400, items=150, categories=8, brands=12,
        partitions=2, dirty_fraction=0.01, bot_users=1, seed=5)), str(raw))
    for extra in raw.glob("dt=*"):
        if extra.name[3:] not in DAYS:
            shutil.rmtree(extra)
    environ = {
        **mlflow_store,
        "SHOPREC__WAREHOUSE__ROOT": str(root / "warehouse"),
        "SHOPREC__INPUT__PATH": str(raw),
        "SHOPREC__CLEAN__BOTS__MAX_EVENTS_PER_MINUTE": "20",
        "SHOPREC__PROFILES__SEGMENTS": "3",
        "SHOPREC__PROFILES__CONTENT_FEATURES": "64",
        "SHOPREC__ALS__RANKS": "[8]",
        "SHOPREC__ALS__REG_PARAMS": "[0.1]",
        "SHOPREC__ALS__ALPHAS": "[2.0, 10.0]",
        "SHOPREC__ALS__MAX_ITER": "5",
        "SHOPREC__ALS__BLOCKS": "2",
        "SHOPREC__ALS__TOP_K": "10",
        "SHOPREC__ALS__MAX_EXCLUDED": "60",
        "SHOPREC__ALS__REGISTERED_MODEL": "shoprec-als-test",
        "SHOPREC__RULES__MIN_SUPPORT": "0.01",
        "SHOPREC__RULES__MIN_CONFIDENCE": "0.05",
        "SHOPREC__RULES__BASKET": "user_day",
    }
    config = load_config(PROJECT / "conf" / "local.yaml", environ=environ)
    clean_events.run(spark, config, DAY8)
    return config


@pytest.fixture(scope="module")
def profiles(spark, cfg):
    """build_profiles for day 7, then day 8 rolled forward incrementally."""
    build_profiles.run(spark, cfg, DAY7)
    return build_profiles.run(spark, cfg, DAY8)


def snapshot(spark, cfg, table, date=DAY8):
    return read_snapshot(spark, cfg.table_path(table), date)


def run_of(cfg, job, date=DAY8):
    client = MlflowClient(cfg.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.mlflow.experiment)
    runs = client.search_runs([experiment.experiment_id], f"tags.mlflow.runName = '{job}-{date}'",
                              order_by=["attributes.start_time DESC"])
    return client, runs[0]


def test_profiles_tables(spark, cfg, profiles):
    users = snapshot(spark, cfg, "user_profile")
    events = spark.read.parquet(cfg.table_path("events_clean")).where(F.col("ingest_batch") <= DAY8)
    assert users.count() == events.select("user_id").distinct().count() == profiles["user_profile"]
    assert users.select("user_id").distinct().count() == users.count()
    assert {r.segment for r in users.select("segment").distinct().collect()} <= {0, 1, 2}
    bought = users.where(F.col("frequency") > 0).first()
    assert bought.monetary > 0 and bought.recency_days >= 0 and len(bought.favourite_categories) >= 1
    items = snapshot(spark, cfg, "item_profile")
    assert items.count() == events.where(F.col("item_id").isNotNull()).select("item_id").distinct().count()
    assert items.where(F.col("views_1d") > F.col("views_7d")).count() == 0
    popular = snapshot(spark, cfg, "popular_items").where(F.col("scope") == "all").orderBy("rank").collect()
    assert [r["rank"] for r in popular] == list(range(1, len(popular) + 1))
    assert all(a.score >= b.score for a, b in zip(popular, popular[1:]))
    similar = snapshot(spark, cfg, "content_similar_items")
    assert similar.where(F.col("item_id") == F.col("similar_item_id")).count() == 0
    assert similar.count() > 0


def test_incremental_interactions_match_a_full_rebuild(spark, cfg, profiles):
    _, run = run_of(cfg, "build_profiles")
    assert run.data.tags["shoprec.interactions_mode"] == f"incremental from {DAY7}"
    incremental = {(r.user_id, r.item_id): r.confidence for r in snapshot(spark, cfg, "interactions").collect()}
    build_profiles.run(spark, cfg, DAY8, full_rebuild=True)
    full = {(r.user_id, r.item_id): r.confidence for r in snapshot(spark, cfg, "interactions").collect()}
    assert set(incremental) == set(full)
    assert all(incremental[k] == pytest.approx(full[k], rel=1e-9) for k in full)


def assert_als_outputs(spark, cfg, counts: dict) -> None:
    """At most top_k recommendations per user, none of them bought before; cosine similar items."""
    recs = snapshot(spark, cfg, "als_recs")
    assert recs.count() == counts["als_recs"] > 0
    assert recs.groupBy("user_id").count().agg(F.max("count")).first()[0] <= cfg.als.top_k
    purchased = snapshot(spark, cfg, "interactions").where(F.col("n_purchase") > 0).select("user_id", "item_id")
    assert recs.join(purchased, ["user_id", "item_id"]).count() == 0
    similar = snapshot(spark, cfg, "similar_items")
    assert similar.count() > 0 and similar.where(F.col("item_id") == F.col("similar_item_id")).count() == 0
    assert similar.where((F.col("score") < -1.0001) | (F.col("score") > 1.0001)).count() == 0


def test_train_als_outputs_and_tracking(spark, cfg, profiles):
    counts = train_als.run(spark, cfg, DAY8)
    assert_als_outputs(spark, cfg, counts)
    # Every profiled user or item is either known to ALS or listed for the cold-start candidates.
    index = snapshot(spark, cfg, "als_index")
    cold = snapshot(spark, cfg, "cold_start")
    users = snapshot(spark, cfg, "user_profile").select(F.col("user_id").alias("id"))
    known = index.where(F.col("entity") == "user").select("id").union(cold.where(F.col("entity") == "user").select("id"))
    assert users.join(known, "id", "left_anti").count() == 0
    assert counts["cold_start_users"] == cold.where(F.col("entity") == "user").count()

    client, run = run_of(cfg, "train_als")
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert len(children) == GRID
    assert all("ndcg_at_10" in child.data.metrics for child in children)
    version = run.data.tags["shoprec.registered_model"]
    name, number = version.split("/")
    assert client.get_model_version(name, number).run_id == run.info.run_id
    lineage = Path(cfg.table_path("als_recs")) / f"run_date={DAY8}" / "_lineage.json"
    assert run.info.run_id in lineage.read_text()


def test_mine_rules_outputs(spark, cfg, profiles):
    counts = mine_rules.run(spark, cfg, DAY8)
    rules = snapshot(spark, cfg, "assoc_rules")
    assert rules.count() == counts["assoc_rules"] > 0
    assert rules.where(F.col("confidence") < cfg.rules.min_confidence).count() == 0
    together = snapshot(spark, cfg, "bought_together").orderBy("item_id", "rank").collect()
    assert together and all(r["rank"] <= cfg.rules.top_k for r in together)
    for a, b in zip(together, together[1:]):
        if a.item_id == b.item_id:
            assert a.lift >= b.lift


def test_train_als_with_the_cg_solver_writes_the_same_tables_and_registers_its_model(spark, cfg, profiles):
    cg = dataclasses.replace(cfg, als=dataclasses.replace(cfg.als, solver="cg"))
    assert_als_outputs(spark, cg, train_als.run(spark, cg, DAY8))
    client, run = run_of(cg, "train_als")
    assert run.data.params["als.solver"] == "cg"
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert len(children) == GRID and all(child.data.metrics["ndcg_at_10"] > 0 for child in children)
    name, number = run.data.tags["shoprec.registered_model"].split("/")
    assert client.get_model_version(name, number).run_id == run.info.run_id


def test_train_als_with_the_ivf_search_writes_the_same_tables_and_logs_its_recall(spark, cfg, profiles):
    # One grid point: the search, not the tuning, is under test.
    ivf = dataclasses.replace(cfg, als=dataclasses.replace(
        cfg.als, top_k_search="ivf", ivf_lists=8, ivf_probes=2, ranks=[8], reg_params=[0.1], alphas=[2.0]))
    assert_als_outputs(spark, ivf, train_als.run(spark, ivf, DAY8))
    _, run = run_of(ivf, "train_als")
    assert run.data.params["als.top_k_search"] == "ivf" and run.data.params["als.ivf_probes"] == "2"
    # Sampled users' lists against their exact ones: found in part, never more than all.
    assert 0.0 < run.data.metrics["ivf_recall_at_k"] <= 1.0
    recs = snapshot(spark, ivf, "als_recs")
    per_user = recs.groupBy("user_id").agg(F.count("*").alias("n"), F.max("rank").alias("last"))
    assert per_user.where(F.col("n") != F.col("last")).count() == 0
