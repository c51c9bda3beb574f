"""build_training_set: shards on disk, and no feature can see the label window (leakage test)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import Window
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.config import GenerateConfig, load_config
from shoprec.evaluation.holdout import time_holdout
from mlflow.tracking import MlflowClient

from shoprec.io.tables import read_snapshot
from shoprec.jobs import build_profiles, build_training_set, clean_events, mine_rules, score, train_als, train_ranker
from shoprec.jobs.build_profiles import events_as_of
from shoprec.models.ranker import features as X
from shoprec.spark import CacheScope
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
        "SHOPREC__RANKER__VALIDATION_PERCENT": "20", "SHOPREC__SEARCH__VALIDATION_PERCENT": "40",
        "SHOPREC__RULES__MIN_BASKET_COUNT": "2",
        "SHOPREC__RANKER__EPOCHS": "2", "SHOPREC__RANKER__PATIENCE": "5", "SHOPREC__RANKER__BATCH_SIZE": "256",
        "SHOPREC__RANKER__MODELS_ROOT": str(root / "models"), "SHOPREC__RANKER__REGISTERED_MODEL": "shoprec-ranker-test",
        "SHOPREC__ALS__RANKS": "[8]", "SHOPREC__ALS__REG_PARAMS": "[0.1]", "SHOPREC__ALS__ALPHAS": "[2.0]",
        "SHOPREC__ALS__REGISTERED_MODEL": "shoprec-als-score-test",
        "SHOPREC__SCORE__TOP_K": "10", "SHOPREC__SCORE__MAX_PER_CATEGORY": "2", "SHOPREC__SEARCH__DAYS": "2",
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
    assert rows.count() == sum(v for k, v in counts.items()
                               if k.endswith(("_positive", "_negative")) and not k.startswith("search_"))
    assert counts["train_positive"] > 0 and counts["train_negative"] > counts["train_positive"]
    first = rows.first()
    assert len(first.dense) == len(spec["dense"])
    # Shards hold whole users, and no user is in two shards or in both splits.
    placement = rows.groupBy("user_id").agg(F.countDistinct("split", "shard").alias("places"))
    assert placement.where(F.col("places") > 1).count() == 0


def test_search_training_set_labels_the_matches_the_searchers_acted_on(spark, cfg, counts):
    """Each search of the label window followed by an item event in its session is one list of
    its text matches; a match is labelled 1 exactly when the searcher viewed, carted or bought it
    after the search and before the session's next search (worked out here row by row)."""
    path = Path(cfg.table_path("search_training_set")) / f"run_date={RUN_DATE}"
    spec = json.loads((path / "_feature_spec.json").read_text())
    assert spec["group"] == "search_id" and spec["cutoff"] == "2026-05-05"
    assert spec["dense"][-2:] == ["text_score", "text_rank"] and set(spec["standardisation"]) == set(spec["dense"])
    rows = spark.read.parquet(str(path)).collect()
    assert len(rows) == sum(v for k, v in counts.items() if k.startswith("search_") and k.endswith(("_positive",
                                                                                                      "_negative")))
    assert counts["search_train_positive"] > 0 and counts["search_searches"] >= cfg.search.min_searches
    assert all(len(r.dense) == len(spec["dense"]) for r in rows)

    events = sorted(events_as_of(spark, cfg, RUN_DATE).where(F.col("event_date") >= F.lit("2026-05-05").cast("date"))
                    .select("event_id", "user_id", "session_id", "event_type", "item_id", "event_time").collect(),
                    key=lambda e: (e.event_time, e.event_id))
    acted, open_search = set(), {}
    for e in events:
        session = (e.user_id, e.session_id)
        if e.event_type == "search":
            open_search[session] = e.event_id
        elif e.event_type in ("view", "cart", "purchase") and session in open_search and e.item_id:
            acted.add((open_search[session], e.item_id))
    followed = {search for search, _ in acted}
    assert {r.search_id for r in rows} <= followed
    assert all(r.label == (1.0 if (r.search_id, r.item_id) in acted else 0.0) for r in rows)
    # A user's searches stay together: one split and shard each.
    places = {}
    for r in rows:
        places.setdefault(r.user_id, set()).add((r.split, r.shard))
    assert all(len(p) == 1 for p in places.values())
    # The searchers held out are search.validation_percent of them (40 here), not the ranker's 20%:
    # some searchers the ranker would train on validate the search ranker.
    searchers = spark.createDataFrame([(user,) for user in places], "user_id string")
    split_at = {percent: {r.user_id: r.split for r in X.assign_shards(searchers, cfg.ranker.workers, percent,
                                                                      cfg.ranker.seed).collect()}
                for percent in (cfg.search.validation_percent, cfg.ranker.validation_percent)}
    assert cfg.search.validation_percent == 40
    assert {user: next(iter(p))[0] for user, p in places.items()} == split_at[40]
    assert any(split_at[40][user] == "validation" and split_at[20][user] == "train" for user in places)


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
        with CacheScope() as scope:
            inputs = build_training_set.features_before(spark, cfg, holdout.train_events, holdout.cutoff, scope)
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


@pytest.fixture(scope="module")
def trained(spark, cfg, counts):
    return train_ranker.run(spark, cfg, RUN_DATE)


@pytest.mark.slow
def test_train_ranker_with_horovod_on_spark(spark, cfg, trained):
    result = trained
    assert result["ranks"] == cfg.ranker.workers
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    client = MlflowClient(cfg.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.mlflow.experiment)
    run = client.search_runs([experiment.experiment_id], f"tags.mlflow.runName = 'train_ranker-{RUN_DATE}'")[0]
    # Rank 0 logged every epoch to the job's run.
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1, 2]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_ndcg")] == [1, 2]
    # The kept epoch is the one with the best validation AUC (ranker.early_stopping's default).
    best = max(result["history"], key=lambda h: (h["val_auc"], -h["epoch"]))
    assert run.data.metrics["best_epoch"] == best["epoch"] == result["best_epoch"]
    assert run.data.metrics["best_val_ndcg"] == pytest.approx(best["val_ndcg"])
    name, version = run.data.tags["shoprec.registered_model"].split("/")
    assert client.get_model_version(name, version).run_id == run.info.run_id
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"learning_curves.png", "training.json", "feature_spec.json"} <= artifacts
    # The registered version loads and scores the validation examples.
    import mlflow

    from shoprec.models.ranker.features import dense_features
    from shoprec.models.ranker.train import read_split

    def search_features():
        return dense_features(search=True)

    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    model = mlflow.tensorflow.load_model(f"models:/{name}/{version}")
    features, labels, _ = read_split(f"{cfg.table_path('training_set')}/run_date={RUN_DATE}", "validation")
    scores = model(features, training=False).numpy()
    assert scores.shape == labels.shape
    # Its signature names every input, so a pyfunc loader scores the same arrays the same way.
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    assert pyfunc.metadata.signature.inputs.input_names() == sorted(features)
    np.testing.assert_allclose(np.asarray(pyfunc.predict(features)).reshape(-1), scores, rtol=1e-5)
    checkpoints = Path(cfg.ranker.models_root) / "ranker" / RUN_DATE / "checkpoints"
    assert list(checkpoints.glob("ckpt-2.index"))

    # The search ranker, trained in the same Horovod run on the search examples, into the same MLflow run.
    search = result["search"]
    assert search["ranks"] == cfg.ranker.workers and [h["epoch"] for h in search["history"]] == [1, 2]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "search_val_ndcg")] == [1, 2]
    assert run.data.metrics["search_best_val_ndcg"] == pytest.approx(
        next(h["val_ndcg"] for h in search["history"] if h["epoch"] == search["best_epoch"]))
    assert {"search_learning_curves.png", "search_training.json", "search_feature_spec.json"} <= artifacts
    name, version = run.data.tags["shoprec.registered_search_model"].split("/")
    assert name == cfg.search.registered_model and client.get_model_version(name, version).run_id == run.info.run_id
    features, labels, groups = read_split(f"{cfg.table_path('search_training_set')}/run_date={RUN_DATE}", "validation")
    scores = mlflow.tensorflow.load_model(f"models:/{name}/{version}")(features, training=False).numpy()
    assert scores.shape == labels.shape and features["dense"].shape[1] == len(search_features())
    assert search["model_path"] == str(Path(cfg.ranker.models_root) / "search_ranker" / RUN_DATE / "model")

    # Its validation nDCG@10 was compared with the text order's on the same searches: here each
    # validation search's matches by ascending text rank, scored in plain Python.
    verdict = json.loads((Path(cfg.ranker.models_root) / "search_ranker" / RUN_DATE / "validation.json").read_text())
    spec = json.loads((Path(cfg.table_path("search_training_set")) / f"run_date={RUN_DATE}" / "_feature_spec.json")
                      .read_text())
    assert spec["reference_order"] == "text_rank"
    text_rank = features["dense"][:, spec["dense"].index("text_rank")]
    per_search: dict[int, list] = {}
    for group, label, rank in zip(groups, labels, text_rank):
        per_search.setdefault(int(group), []).append((float(rank), float(label)))
    text_ndcgs = []
    for matches in per_search.values():
        gains = [label for _, label in sorted(matches, key=lambda m: m[0])]
        if sum(gains):
            ideal = sum(1 / math.log2(i + 2) for i in range(min(int(sum(gains)), 10)))
            text_ndcgs.append(sum(g / math.log2(i + 2) for i, g in enumerate(gains[:10])) / ideal)
    assert text_ndcgs and verdict["reference_val_ndcg"] == pytest.approx(sum(text_ndcgs) / len(text_ndcgs), rel=1e-6)
    assert verdict["best_val_ndcg"] == pytest.approx(search["best_val_ndcg"])
    assert verdict["served"] == (search["best_val_ndcg"] > verdict["reference_val_ndcg"]) == search["served"]
    assert run.data.metrics["search_reference_val_ndcg"] == pytest.approx(verdict["reference_val_ndcg"])
    assert run.data.metrics["search_served"] == int(verdict["served"])


@pytest.mark.slow
def test_score_applies_the_business_rules(spark, cfg, trained):
    for job in (build_profiles, train_als, mine_rules):
        job.run(spark, cfg, RUN_DATE)
    counts = score.run(spark, cfg, RUN_DATE)
    recs = read_snapshot(spark, cfg.table_path("recommendations"), RUN_DATE)
    users = read_snapshot(spark, cfg.table_path("user_profile"), RUN_DATE)
    assert counts["users"] == recs.select("user_id").distinct().count() == users.count()
    per_user = recs.groupBy("user_id").agg(F.count("*").alias("n"), F.max("rank").alias("last"),
                                          F.countDistinct("item_id").alias("items"))
    assert per_user.where((F.col("n") != F.col("last")) | (F.col("n") != F.col("items")) | (F.col("n") > 10)).count() == 0
    purchased = read_snapshot(spark, cfg.table_path("interactions"), RUN_DATE).where(F.col("n_purchase") > 0)
    assert recs.join(purchased.select("user_id", "item_id"), ["user_id", "item_id"]).count() == 0
    items = read_snapshot(spark, cfg.table_path("item_profile"), RUN_DATE).select("item_id", "category")
    per_category = recs.join(items, "item_id").groupBy("user_id", "category").count()
    assert per_category.where(F.col("count") > 2).count() == 0
    rows = recs.collect()
    assert {r.source for r in rows} <= {"als", "rules", "similar", "content", "popular"}
    for r in rows:
        assert 0.0 <= (r.score if r.score is not None else 0.0) <= 1.0
        if r.source == "rules":
            assert r.reason.startswith("bought with ")
        if r.source == "similar":
            assert r.reason.startswith("similar to ")
    # Ranked by the model's score within each user's scored items.
    ordered = recs.where(F.col("score").isNotNull()).withColumn(
        "_previous", F.lag("score").over(Window.partitionBy("user_id").orderBy("rank")))
    assert ordered.where(F.col("_previous") < F.col("score")).count() == 0


@pytest.mark.slow
def test_a_failing_worker_fails_train_ranker_with_a_clear_message(spark, cfg, counts):
    import time

    # A copy of the training set whose second shard is unreadable: that worker dies at start-up
    # while the first waits for it in the first allreduce.
    broken_date = "2026-05-07"
    source = Path(cfg.table_path("training_set")) / f"run_date={RUN_DATE}"
    broken = Path(cfg.table_path("training_set")) / f"run_date={broken_date}"
    shutil.copytree(source, broken)
    for part in (broken / "split=train" / "shard=1").glob("*.parquet"):
        part.write_bytes(b"not parquet")
    started = time.monotonic()
    try:
        with pytest.raises(train_ranker.TrainingFailed, match="rerun with --resume"):
            train_ranker.run(spark, cfg, broken_date)
        assert time.monotonic() - started < cfg.ranker.start_timeout_seconds + 300
    finally:
        shutil.rmtree(broken)
        shutil.rmtree(Path(cfg.ranker.models_root) / "ranker" / broken_date, ignore_errors=True)


@pytest.mark.slow
def test_search_rerank_orders_text_matches_with_the_search_ranker_or_the_ranker(spark, cfg, trained, tmp_path):
    from shoprec.jobs import search_rerank
    from shoprec.models import search as Q

    # Needs the run date's profiles and candidate tables (built by the score test when run alone too).
    if not Path(cfg.table_path("als_recs")).exists():
        for job in (build_profiles, train_als, mine_rules):
            job.run(spark, cfg, RUN_DATE)
    def ranks_follow_the_scores(results):
        ordered = results.withColumn("_previous", F.lag("score").over(Window.partitionBy("user_id", "query")
                                                                      .orderBy("rank")))
        return ordered.where(F.col("_previous") < F.col("score")).count() == 0

    def search_model_of_the_last_run():
        client = MlflowClient(cfg.mlflow.tracking_uri)
        experiment = client.get_experiment_by_name(cfg.mlflow.experiment)
        return client.search_runs([experiment.experiment_id], f"tags.mlflow.runName = 'search_rerank-{RUN_DATE}'",
                                  order_by=["attributes.start_time DESC"])[0].data.params["args.search_model"]

    # Without a search ranker: the ranker's order alone (search.ranker_weight 1.0), so that the
    # ranks can be checked against the scores; fused_order's unit test covers the weights between.
    ranker_order = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, ranker_weight=1.0, learned=False))
    search_rerank.run(spark, ranker_order, RUN_DATE)
    assert search_model_of_the_last_run() == "none: search.learned is off; the fused order"
    assert ranks_follow_the_scores(read_snapshot(spark, cfg.table_path("search_results"), RUN_DATE))

    # With the search ranker train_ranker trained for the date: its order where it beat the text
    # order on its validation searches, else the text order.
    search_root = Path(cfg.ranker.models_root) / "search_ranker" / RUN_DATE
    served = json.loads((search_root / "validation.json").read_text())["served"]
    counts = search_rerank.run(spark, cfg, RUN_DATE)
    if served:
        assert search_model_of_the_last_run() == str(search_root)
    else:
        assert search_model_of_the_last_run().startswith(f"none: {search_root} scored below the text order")
    results = read_snapshot(spark, cfg.table_path("search_results"), RUN_DATE)
    first_day = (dt.date.fromisoformat(RUN_DATE) - dt.timedelta(days=cfg.search.days - 1)).isoformat()
    recent = events_as_of(spark, cfg, RUN_DATE).where(
        (F.col("event_type") == "search") & (F.col("event_date") >= F.lit(first_day).cast("date")))
    assert counts["searches"] == recent.select("user_id", F.lower(F.trim("query"))).distinct().count() > 0
    assert counts["searches_with_results"] == results.select("user_id", "query").distinct().count() > 0
    rows = results.collect()
    # Every result carries every word of its query (synthetic queries name a brand and/or category).
    items = {r.item_id: r for r in read_snapshot(spark, cfg.table_path("item_profile"), RUN_DATE).collect()}
    for r in rows:
        item_words = set(" ".join([items[r.item_id].category or "", items[r.item_id].brand or ""]).replace(".", " ")
                         .replace("_", " ").lower().split())
        assert set(r.query.lower().split()) <= item_words, (r.query, item_words)
        assert r.text_score == pytest.approx(1.0) and 0.0 <= r.score <= 1.0 and 1 <= r.rank <= cfg.search.top_k
    # Within a search, ranks follow the search ranker's score (the text order, served otherwise, is
    # fused_order at weight 0: its unit test).
    if served:
        assert ranks_follow_the_scores(results)

    # A given table of searches; a query nothing matches is counted, not lost.
    user = rows[0].user_id
    searches = tmp_path / "searches"
    spark.createDataFrame([(user, rows[0].query), (user, "zzqx nothing"), (None, "shoes")],
                          "user_id string, query string").write.parquet(str(searches))
    counts = search_rerank.run(spark, cfg, RUN_DATE, str(searches))
    assert (counts["searches"], counts["searches_with_results"], counts["searches_without_match"]) == (2, 1, 1)
    again = read_snapshot(spark, cfg.table_path("search_results"), RUN_DATE)
    assert {r.query for r in again.collect()} == {rows[0].query}
    assert Q.SEARCH_ID not in again.columns
