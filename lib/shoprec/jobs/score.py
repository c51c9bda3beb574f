"""score: every user's candidates ranked by the trained ranker -> ``recommendations``.

Run on a cluster (after build_profiles, train_als, mine_rules and train_ranker)::

    spark-submit --master yarn --deploy-mode client \\
        --py-files dist/shoprec.zip --files conf/base.yaml,conf/cluster.yaml \\
        jobs/score.py --conf cluster.yaml --run-date 2026-01-07

Candidates come from the run date's tables (``als_recs``, ``bought_together``, ``similar_items``,
``content_similar_items``, ``popular_items``) exactly as build_training_set makes them, features
from the run date's profiles, standardised with the statistics the model was trained with. The
newest ranker trained on or before the run date (``ranker.models_root/ranker/<date>/model``) is
loaded once per Python worker on the executors and scores the candidates with ``mapInArrow``.

Business rules (``score.*``): the items ``als.exclude`` names (by default, those the user bought)
are removed; at most ``score.max_per_category`` items per category; the top ``score.top_k`` are
kept; a user left with fewer is filled from the popular items. Each recommendation names its
source (the candidate source that ranked it best) and a reason ("bought with X", "similar to X",
...).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.config import Config
from shoprec.etl import profiles as P
from shoprec.evaluation.holdout import exclusions
from shoprec.io.tables import read_snapshot, write_snapshot
from shoprec.jobs.build_profiles import events_as_of, history_start
from shoprec.jobs.common import job_parser, run_main
from shoprec.models.popularity import ALL, SCOPE
from shoprec.models.ranker import features as X
from shoprec.tracking import job_run

JOB = "score"
RECOMMENDATIONS = "recommendations"

log = logging.getLogger(__name__)
_MODELS: dict = {}


def latest_model(cfg: Config, run_date: str, kind: str = "ranker") -> Path:
    """The newest saved ranker (``kind``: ``ranker`` or ``search_ranker``) trained for a date on
    or before ``run_date``."""
    root = Path(cfg.ranker.models_root) / kind
    dates = sorted(p.name for p in root.glob("*") if (p / "model").is_dir() and p.name <= run_date) if root.exists() else []
    if not dates:
        raise FileNotFoundError(f"no trained {kind} under {root} for {run_date} or earlier; run train_ranker first")
    return root / dates[-1]


def score_with_model(examples: DataFrame, model_dir: str, categorical: list[str]) -> DataFrame:
    """``examples`` (with the categorical columns and ``dense``) with ``dense`` replaced by
    ``score double``, computed on the executors; the model is loaded once per Python worker.

    The rows travel to Python and back as Arrow batches (``mapInArrow``): each batch's columns
    become the model's input arrays without a pandas row of Python objects per example, and the
    dense vectors, which nothing after the model reads, are not sent back.
    """
    if "dense" not in examples.columns:
        raise ValueError("score_with_model: examples have no 'dense' column (see features.standardise)")
    kept = [f for f in examples.schema.fields if f.name != "dense"]

    def predict(batches):
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc
        import tensorflow as tf

        model = _MODELS.get(model_dir)
        if model is None:
            model = _MODELS[model_dir] = tf.keras.models.load_model(model_dir, compile=False)
        for batch in batches:
            if batch.num_rows == 0:
                continue
            dense = batch.column("dense")
            lengths = pc.list_value_length(dense)
            if dense.null_count or pc.min(lengths).as_py() != pc.max(lengths).as_py():
                raise ValueError("score_with_model: every example needs a dense vector of the same length")
            inputs = {name: batch.column(name).to_numpy(zero_copy_only=False).astype("int32") for name in categorical}
            inputs["dense"] = dense.flatten().to_numpy(zero_copy_only=False).astype("float32").reshape(
                batch.num_rows, -1)
            logits = model(inputs, training=False).numpy().reshape(-1).astype("float64")
            # The logistic function in its overflow-free form.
            score = pa.array(0.5 * (1.0 + np.tanh(0.5 * logits)), pa.float64())
            yield pa.RecordBatch.from_arrays([batch.column(f.name) for f in kept] + [score],
                                             names=[f.name for f in kept] + ["score"])

    from pyspark.sql import types as T

    return examples.mapInArrow(predict, T.StructType([*kept, T.StructField("score", T.DoubleType())]))


def explain(scored: DataFrame) -> DataFrame:
    """Add ``source`` (the candidate source that ranked the item best) and a readable ``reason``."""
    best_rank = F.least(*[F.coalesce(F.col(f"{s}_rank"), F.lit(10 ** 9)) for s in X.SOURCES])
    source = F.lit("sampled")
    for s in reversed(X.SOURCES):
        source = F.when(F.col(f"{s}_rank") == best_rank, F.lit(s)).otherwise(source)
    reason = (F.when(F.col("_source") == "rules", F.concat(F.lit("bought with "), F.col("rules_seed")))
              .when(F.col("_source") == "similar", F.concat(F.lit("similar to "), F.col("similar_seed")))
              .when(F.col("_source") == "content", F.concat(F.lit("like "), F.col("content_seed")))
              .when(F.col("_source") == "als", F.lit("picked for you"))
              .otherwise(F.lit("popular now")))
    return scored.withColumn("_source", source).withColumn("reason", reason).withColumnRenamed("_source", "source")


def apply_business_rules(scored: DataFrame, purchased: DataFrame | None, popular: DataFrame, users: DataFrame,
                         top_k: int, max_per_category: int | None) -> DataFrame:
    """Remove purchased items, cap items per category, keep the top ``top_k``, fill from popularity.

    Args:
        scored: ``user_id, item_id, category, score, source, reason``.
        purchased: ``(user_id, item_id)`` pairs never to recommend.
        popular: ``(rank, item_id, category, score)``, the fill list.
        users: every user who must get recommendations.
        max_per_category: at most this many items of one category per user; None for no cap.

    Returns:
        ``user_id, rank int, item_id, score double, source, reason``.
    """
    def capped(rows: DataFrame, *order) -> DataFrame:
        """The first ``max_per_category`` rows of each user's category in ``order`` (all without a cap)."""
        if max_per_category is None:
            return rows
        per_category = Window.partitionBy(S.USER_ID, F.coalesce(F.col(S.CATEGORY), F.col(S.ITEM_ID))).orderBy(*order)
        return rows.withColumn("_n", F.row_number().over(per_category)).where(F.col("_n") <= max_per_category)

    if purchased is not None:
        scored = scored.join(purchased, [S.USER_ID, S.ITEM_ID], "left_anti")
    ranked_model = capped(scored, F.col("score").desc(), F.col(S.ITEM_ID)).select(
        S.USER_ID, S.ITEM_ID, S.CATEGORY, "score", "source", "reason", F.lit(0).alias("_tier"),
        F.lit(0).alias("_popular_rank"))
    fill = (users.select(S.USER_ID).distinct()
            .crossJoin(F.broadcast(popular.select(S.ITEM_ID, S.CATEGORY, F.col("rank").alias("_popular_rank"))))
            .select(S.USER_ID, S.ITEM_ID, S.CATEGORY, F.lit(None).cast("double").alias("score"),
                    F.lit("popular").alias("source"), F.lit("popular now").alias("reason"), F.lit(1).alias("_tier"),
                    "_popular_rank"))
    fill = fill.join(ranked_model.select(S.USER_ID, S.ITEM_ID), [S.USER_ID, S.ITEM_ID], "left_anti")
    if purchased is not None:
        fill = fill.join(purchased, [S.USER_ID, S.ITEM_ID], "left_anti")
    # The category cap holds for the fill too.
    both = capped(ranked_model.unionByName(fill), "_tier", F.col("score").desc_nulls_last(), "_popular_rank",
                  S.ITEM_ID)
    order = Window.partitionBy(S.USER_ID).orderBy("_tier", F.col("score").desc_nulls_last(), "_popular_rank", S.ITEM_ID)
    return (both.withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= top_k)
            .select(S.USER_ID, F.col("rank").cast("int").alias("rank"), S.ITEM_ID, "score", "source", "reason"))


def inputs_as_of(spark: SparkSession, cfg: Config, run_date: str) -> dict[str, DataFrame]:
    """The ranker's inputs from the run date's tables (see :func:`recommend_with_ranker`)."""
    def table(name: str) -> DataFrame:
        return read_snapshot(spark, cfg.table_path(name), run_date).drop("run_date")

    window = events_as_of(spark, cfg, run_date, history_start(run_date, cfg.profiles.history_days))
    by_category, by_brand = X.affinities(window, P.as_of_time(run_date))
    return {"interactions": table("interactions"), "user_profile": table("user_profile"),
            "item_profile": table("item_profile"), "category_affinity": by_category, "brand_affinity": by_brand,
            "als_recs": table("als_recs"), "bought_together": table("bought_together"),
            "similar_items": table("similar_items"), "content_similar": table("content_similar_items"),
            "popular": table("popular_items").where(F.col(SCOPE) == ALL)}


def load_spec(cfg: Config, model_root: Path, training_set: str = "training_set") -> dict:
    """The feature spec of the training set (table ``training_set``) a saved ranker was trained on."""
    return json.loads(Path(f"{cfg.table_path(training_set)}/run_date={model_root.name}/_feature_spec.json").read_text())


def rank_candidates(cfg: Config, inputs: dict[str, DataFrame], users: DataFrame, model_dir: str,
                    spec: dict) -> DataFrame:
    """Every candidate of ``users`` scored by a trained ranker, with the source that proposed it
    best and a readable reason (no business rule applied yet).

    Args:
        inputs: ``interactions``, ``user_profile`` (with segments), ``item_profile``, ``category_affinity``
            (:func:`~shoprec.models.ranker.features.category_affinity`), ``brand_affinity``
            (:func:`~shoprec.models.ranker.features.brand_affinity`), ``als_recs``,
            ``bought_together``, ``similar_items``, ``content_similar`` and ``popular`` (one
            ranking: ``rank, item_id, score``), all as of the same instant.
        users: ``user_id`` rows to recommend to.
        model_dir: the saved Keras model.
        spec: the feature spec of the model's training set (categorical columns, standardisation).

    Returns:
        ``user_id, item_id, category, score, source, reason`` and the candidates' other columns.
    """
    ranker = cfg.ranker
    users = users.select(S.USER_ID).distinct()
    cands = X.candidates_from(users, inputs, inputs["als_recs"], ranker.seeds_per_user, ranker.candidates)
    examples = X.standardise(X.assemble(cands, inputs["user_profile"], inputs["item_profile"],
                                        inputs["category_affinity"], inputs["brand_affinity"]),
                             {k: tuple(v) for k, v in spec["standardisation"].items()})
    ranks = cands.select(S.USER_ID, S.ITEM_ID, *[f"{s}_rank" for s in X.SOURCES])
    return explain(score_with_model(examples.join(ranks, [S.USER_ID, S.ITEM_ID]), model_dir,
                                    list(spec["categorical"])))


def ranked_recommendations(cfg: Config, inputs: dict[str, DataFrame], scored: DataFrame, users: DataFrame,
                           top_k: int, max_per_category: int | None) -> DataFrame:
    """:func:`rank_candidates`' rows through the business rules: the items ``als.exclude`` names
    (the user's purchases by default) are never recommended, as the ranker's training set left
    them out of its examples; at most ``max_per_category`` items of a category (None: no cap);
    filled from ``inputs["popular"]``.

    Returns:
        ``user_id, rank, item_id, score, source, reason`` (see :func:`apply_business_rules`).
    """
    items = inputs["item_profile"].select(S.ITEM_ID, F.col(S.CATEGORY).alias("_c"))
    fill = inputs["popular"].join(items, S.ITEM_ID, "left").select(
        "rank", S.ITEM_ID, F.col("_c").alias(S.CATEGORY), "score")
    return apply_business_rules(scored, exclusions(inputs["interactions"], cfg.als.exclude), fill, users, top_k,
                                max_per_category)


def recommend_with_ranker(cfg: Config, inputs: dict[str, DataFrame], users: DataFrame, model_dir: str,
                          spec: dict, top_k: int) -> DataFrame:
    """Rank ``users``' candidates with a trained ranker (:func:`rank_candidates`) and apply the
    business rules with ``score.max_per_category`` (:func:`ranked_recommendations`).

    Returns:
        ``user_id, rank, item_id, score, source, reason`` (see :func:`apply_business_rules`).
    """
    scored = rank_candidates(cfg, inputs, users, model_dir, spec)
    return ranked_recommendations(cfg, inputs, scored, users, top_k, cfg.score.max_per_category)


def run(spark: SparkSession, cfg: Config, run_date: str) -> dict:
    """Score every profiled user's candidates and write ``recommendations`` for ``run_date``."""
    model_root = latest_model(cfg, run_date)
    spec = load_spec(cfg, model_root)
    with job_run(cfg, JOB, run_date, extra_params={"run_date": run_date, "model": str(model_root)}) as tracking:
        inputs = inputs_as_of(spark, cfg, run_date)
        users = inputs["user_profile"]
        recs = recommend_with_ranker(cfg, inputs, users, str(model_root / "model"), spec, cfg.score.top_k)
        lineage = {"run_id": tracking.run_id, "job": JOB, "run_date": run_date, "model": str(model_root)}
        write_snapshot(recs, cfg.table_path(RECOMMENDATIONS), run_date, tracking.run_id, lineage)
        written = read_snapshot(spark, cfg.table_path(RECOMMENDATIONS), run_date)
        counts = {"rows": written.count(), "users": written.select(S.USER_ID).distinct().count(),
                  "profiled_users": users.count()}
        counts["users_short"] = written.groupBy(S.USER_ID).count().where(F.col("count") < cfg.score.top_k).count()
        by_source = {f"source_{r['source']}": r["count"] for r in written.groupBy("source").count().collect()}
        tracking.log_metrics({**counts, **by_source})
        log.info("score %s with %s: %s %s", run_date, model_root, counts, by_source)
        return {**counts, **by_source}


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``spark-submit jobs/score.py`` and ``shoprec run score``."""
    parser = job_parser(JOB, "Rank every user's candidates with the ranker; write recommendations.")

    def execute(spark: SparkSession, cfg: Config, args: argparse.Namespace) -> None:
        print(f"score {args.run_date}: {run(spark, cfg, args.run_date)}")

    return run_main(JOB, parser, execute, argv)
