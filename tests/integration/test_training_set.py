"""build_training_set: shards on disk, and no feature can see the label window (leakage test)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.config import GenerateConfig, load_config
from shoprec.evaluation.holdout import time_holdout
from mlflow.tracking import MlflowClient

from shoprec.jobs import build_training_set, clean_events, train_ranker
from shoprec.jobs.build_profiles import events_as_of
from shoprec.synthetic import generate_events, write_events

pytestmark = pytest.mark.integration
PROJECT = Path(__file__).resolve().parents[2]
DAYS = [f"2026-05-0{d}" for d in range(1, 7)]
RUN_DATE = DAYS[-1]


@pytest.fixture(scope="module")
def cfg(spark, tmp_path_factory, mlflow_store):
    root = tmp_path_factory.mktemp("training")
    raw = root / "raw"
    write_events(generate_events(spark, GenerateConfig(
        events=15000, days=6, start_date=DAYS[0], users=300, items=120, categories=6, brands=10,
        partitions=2, dirty_fraction=0.0, bot_users=0, seed=9)), str(raw))
    for extra in raw.glob("dt=*"):
        if extra.name[3:] not in DAYS:
            shutil.rmtree(extra)
    config = load_config(PROJECT / "conf" / "local.yaml", environ={
        **mlflow_store,
        "SHOPREC__WAREHOUSE__ROOT": str(root / "warehouse"), "SHOPREC__INPUT__PATH": str(raw),
        "SHOPREC__PROFILES__SEGMENTS": "3", "SHOPREC__PROFILES__CONTENT_FEATURES": "64",
        "SHOPREC__ALS__MAX_ITER": "5", "SHOPREC__ALS__BLOCKS": "2", "SHOPREC__ALS__MAX_EXCLUDED": "50",
        "SHOPREC__RANKER__ALS_RANK": "8", "SHOPREC__RANKER__NEGATIVES_PER_USER": "3",
        "SHOPREC__RANKER__VALIDATION_PERCENT": "20", "SHOPREC__RULES__MIN_BASKET_COUNT": "2",
        "SHOPREC__RANKER__EPOCHS": "2", "SHOPREC__RANKER__PATIENCE": "5", "SHOPREC__RANKER__BATCH_SIZE": "256",
        "SHOPREC__RANKER__MODELS_ROOT": str(root / "models"), "SHOPREC__RANKER__REGISTERED_MODEL": "shoprec-ranker-test",
    })
    clean_events.run(spark, config, RUN_DATE)
    return config


@pytest.fixture(scope="module")
def counts(spark, cfg):
    return build_training_set.run(spark, cfg, RUN_DATE)


def test_training_set_shards_and_spec(spark, cfg, counts):
    path = Path(cfg.table_path("training_set")) / f"run_date={RUN_DATE}"
    spec = json.loads((path / "_feature_spec.json").read_text())
    assert spec["cutoff"] == "2026-05-05" and spec["workers"] == cfg.ranker.workers
    assert sorted(p.name for p in (path / "split=train").iterdir() if p.is_dir()) == ["shard=0", "shard=1"]
    rows = spark.read.parquet(str(path))
    assert rows.count() == sum(v for k, v in counts.items() if k.endswith(("_positive", "_negative")))
    assert counts["train_positive"] > 0 and counts["train_negative"] > counts["train_positive"]
    first = rows.first()
    assert len(first.dense) == len(spec["dense"])
    # Shards hold whole users, and no user is in two shards or in both splits.
    placement = rows.groupBy("user_id").agg(F.countDistinct("split", "shard").alias("places"))
    assert placement.where(F.col("places") > 1).count() == 0


def test_no_feature_sees_the_label_window(spark, cfg):
    """Rewriting everything in the label window changes labels at most, never a feature."""
    events = events_as_of(spark, cfg, RUN_DATE)
    cutoff = dt.datetime(2026, 5, 5)
    # The window's events replaced by a heavy user buying every item twice.
    window_flood = spark.createDataFrame(
        [("leak", "u-heavy", str(item), "purchase", cutoff + dt.timedelta(hours=h), "s-leak", 1000.0, 9, "x", "y",
          None, None, "o", "synthetic", "f", "r", dt.date(2026, 5, 5), dt.date(2026, 5, 6))
         for item in range(1, 121) for h in (1, 2)], S.EVENTS_CLEAN)
    altered = events.where(F.col(S.EVENT_TIME) < F.lit(cutoff)).unionByName(window_flood)

    def features(evts):
        holdout = time_holdout(evts, RUN_DATE, cfg.ranker.label_days, cfg.ranker.relevant_event_types,
                               cfg.profiles.interaction_weights, cfg.profiles.interaction_half_life_days)
        inputs = build_training_set.features_before(spark, cfg, holdout.train_events, holdout.cutoff)
        users = spark.createDataFrame([(u,) for u in ("1", "2", "3", "5", "8", "13")], "user_id string")
        examples = build_training_set.examples_for(cfg, inputs, users, None)
        return {(r.user_id, r.item_id): r.asDict() for r in examples.collect()}

    original, leaked = features(events), features(altered)
    assert original and set(original) == set(leaked)
    for key, row in original.items():
        for name, value in row.items():
            other = leaked[key][name]
            if isinstance(value, float):
                assert other == pytest.approx(value, rel=1e-4, abs=1e-6), (key, name)
            else:
                assert other == value, (key, name)


@pytest.mark.slow
def test_train_ranker_with_horovod_on_spark(spark, cfg, counts):
    result = train_ranker.run(spark, cfg, RUN_DATE)
    assert result["ranks"] == cfg.ranker.workers
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    client = MlflowClient(cfg.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.mlflow.experiment)
    run = client.search_runs([experiment.experiment_id], f"tags.mlflow.runName = 'train_ranker-{RUN_DATE}'")[0]
    # Rank 0 logged every epoch to the job's run.
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1, 2]
    name, version = run.data.tags["shoprec.registered_model"].split("/")
    assert client.get_model_version(name, version).run_id == run.info.run_id
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"learning_curves.png", "training.json", "feature_spec.json"} <= artifacts
    # The registered version loads and scores the validation examples.
    import mlflow

    from shoprec.models.ranker.train import read_split

    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    model = mlflow.tensorflow.load_model(f"models:/{name}/{version}")
    features, labels = read_split(f"{cfg.table_path('training_set')}/run_date={RUN_DATE}", "validation")
    assert model(features, training=False).shape == labels.shape
    checkpoints = Path(cfg.ranker.models_root) / "ranker" / RUN_DATE / "checkpoints"
    assert list(checkpoints.glob("ckpt-2.index"))
