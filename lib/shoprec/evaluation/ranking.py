"""Offline ranking metrics at K, computed on Spark.

Notation, per evaluated user ``u``: ``R_u`` is the list of recommended items in rank order (at
most K are looked at), ``T_u`` the set of held-out relevant items, ``hit(i) = 1`` when the item
at position ``i`` (1-based) is in ``T_u``. Every metric is the mean over the evaluated users.

* ``precision@K`` = |R_u[:K] ∩ T_u| / K  (always divided by K, also for shorter lists)
* ``recall@K`` = |R_u[:K] ∩ T_u| / |T_u|
* ``ndcg@K`` = DCG / IDCG, binary relevance, log2 discount:
  DCG = Σ_{i≤K} hit(i) / log2(i + 1), IDCG = Σ_{i ≤ min(|T_u|, K)} 1 / log2(i + 1)
* ``map@K`` = Σ_{i≤K} hit(i) · precision@i / min(|T_u|, K)
* ``hit_rate@K`` = 1 if |R_u[:K] ∩ T_u| > 0 else 0

The first four come from Spark's :class:`~pyspark.ml.evaluation.RankingEvaluator`
(``precisionAtK``, ``recallAtK``, ``ndcgAtK``, ``meanAveragePrecisionAtK``), on item ids
mapped to dense indices; hit rate is computed beside them.

Beyond accuracy, over the lists of all evaluated users:

* ``coverage@K`` = |∪_u R_u[:K]| / catalogue size
* ``diversity@K`` (intra-list, by category) = mean over users of the share of item pairs in
  R_u[:K] whose categories differ (items without a category count as their own category)
* ``novelty@K`` = mean over all recommended items of −log2 p(i), where p(i) is the share of
  training users who interacted with i (items no training user touched get p = 1 / #users)
"""

from __future__ import annotations

from pyspark.ml.evaluation import RankingEvaluator
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from shoprec import schemas as S

RANK = "rank"
ACCURACY_METRICS = {
    "precision": "precisionAtK",
    "recall": "recallAtK",
    "ndcg": "ndcgAtK",
    "map": "meanAveragePrecisionAtK",
}
_INDEX = "_item_index"


def top_k(recommendations: DataFrame, k: int, user_col: str = S.USER_ID, rank_col: str = RANK) -> DataFrame:
    """The first ``k`` recommendations of each user (``rank`` is 1-based; ties beyond K are cut)."""
    S.require_columns(recommendations, [user_col, rank_col], "top_k")
    return recommendations.where(F.col(rank_col) <= k)


def evaluation_users(recommendations: DataFrame, truth: DataFrame, user_col: str = S.USER_ID,
                     require_recommendations: bool = True) -> DataFrame:
    """The users to average over: those with held-out items, and (by default) with recommendations.

    Returns:
        One column, ``user_col``.
    """
    users = truth.select(user_col).distinct()
    if require_recommendations:
        users = users.join(recommendations.select(user_col).distinct(), user_col)
    return users


def ranking_metrics(
    recommendations: DataFrame,
    truth: DataFrame,
    k: int,
    user_col: str = S.USER_ID,
    item_col: str = S.ITEM_ID,
    rank_col: str = RANK,
    require_recommendations: bool = True,
) -> dict[str, float]:
    """Precision, recall, nDCG, MAP and hit rate at ``k`` (formulas in the module docstring).

    Args:
        recommendations: ``(user_col, item_col, rank_col)`` rows, rank 1 = best.
        truth: ``(user_col, item_col)`` held-out relevant items; duplicates are ignored.
        k: the cut-off.
        require_recommendations: average over users present in both inputs (the MovieLens
            protocol); False averages over every user in ``truth``, a user without
            recommendations scoring zero.

    Returns:
        ``{"precision@k": …, "recall@k": …, "ndcg@k": …, "map@k": …, "hit_rate@k": …, "users": n}``.
    """
    return ranking_metrics_at(recommendations, truth, [k], user_col, item_col, rank_col, require_recommendations)[k]


def ranking_metrics_at(
    recommendations: DataFrame,
    truth: DataFrame,
    ks: list[int],
    user_col: str = S.USER_ID,
    item_col: str = S.ITEM_ID,
    rank_col: str = RANK,
    require_recommendations: bool = True,
) -> dict[int, dict[str, float]]:
    """:func:`ranking_metrics` at every cut-off in ``ks``, from one pass over the inputs.

    Each user's ranked list is gathered once, up to the largest cut-off; every metric at K looks
    only at the first K of it, so the lists serve every cut-off.

    Returns:
        cut-off -> the dict :func:`ranking_metrics` returns for it.
    """
    S.require_columns(recommendations, [user_col, item_col, rank_col], "ranking_metrics: recommendations")
    S.require_columns(truth, [user_col, item_col], "ranking_metrics: truth")
    if not ks or min(ks) < 1:
        raise ValueError(f"ranking_metrics: cut-offs must be one or more positive integers, got {list(ks)!r}")
    ks = sorted(set(ks))
    spark = recommendations.sparkSession
    recs = top_k(recommendations, ks[-1], user_col, rank_col).select(user_col, item_col, rank_col)
    relevant = truth.select(user_col, item_col).distinct()
    users = evaluation_users(recs, relevant, user_col, require_recommendations)

    items = recs.select(item_col).union(relevant.select(item_col)).distinct()
    # Dense double indices for the evaluator, without funnelling every item through one partition.
    index = spark.createDataFrame(items.rdd.map(lambda row: row[0]).zipWithIndex(), [item_col, _INDEX])
    index = index.withColumn(_INDEX, F.col(_INDEX).cast("double"))

    predicted = (recs.join(index, item_col).groupBy(user_col)
                 .agg(F.sort_array(F.collect_list(F.struct(rank_col, _INDEX))).alias("_ranked"))
                 .select(user_col, F.col("_ranked." + _INDEX).alias("prediction")))
    labels = relevant.join(index, item_col).groupBy(user_col).agg(F.collect_set(_INDEX).alias("label"))
    per_user = (users.join(labels, user_col).join(predicted, user_col, "left")
                .select(user_col, F.coalesce("prediction", F.array().cast("array<double>")).alias("prediction"),
                        "label")
                .cache())
    try:
        n_users = per_user.count()
        results = {}
        for k in ks:
            if n_users == 0:
                results[k] = {**{f"{name}@{k}": 0.0 for name in [*ACCURACY_METRICS, "hit_rate"]}, "users": 0}
                continue
            metrics = {}
            for name, spark_name in ACCURACY_METRICS.items():
                evaluator = RankingEvaluator(predictionCol="prediction", labelCol="label", metricName=spark_name, k=k)
                metrics[f"{name}@{k}"] = float(evaluator.evaluate(per_user))
            hits = F.size(F.array_intersect(F.slice("prediction", 1, k), "label"))
            metrics[f"hit_rate@{k}"] = float(per_user.agg(F.avg((hits > 0).cast("double"))).first()[0])
            metrics["users"] = n_users
            results[k] = metrics
        return results
    finally:
        per_user.unpersist()


def beyond_accuracy_metrics(
    recommendations: DataFrame,
    k: int,
    catalogue: DataFrame,
    training: DataFrame,
    user_col: str = S.USER_ID,
    item_col: str = S.ITEM_ID,
    rank_col: str = RANK,
    category_col: str = S.CATEGORY,
) -> dict[str, float]:
    """Coverage, intra-list diversity and novelty at ``k`` (formulas in the module docstring).

    Args:
        recommendations: ``(user_col, item_col, rank_col)`` rows of the evaluated users.
        catalogue: ``(item_col, category_col)``, one row per item that could be recommended.
        training: ``(user_col, item_col)`` interactions the recommender learned from.

    Returns:
        ``{"coverage@k": …, "diversity@k": …, "novelty@k": …}``.
    """
    S.require_columns(recommendations, [user_col, item_col, rank_col], "beyond_accuracy_metrics: recommendations")
    S.require_columns(catalogue, [item_col, category_col], "beyond_accuracy_metrics: catalogue")
    S.require_columns(training, [user_col, item_col], "beyond_accuracy_metrics: training")
    recs = top_k(recommendations, k, user_col, rank_col).select(user_col, item_col).distinct()
    catalogue_size = catalogue.select(item_col).distinct().count()
    recommended = recs.select(item_col).distinct().count()
    coverage = recommended / catalogue_size if catalogue_size else 0.0

    categories = catalogue.groupBy(item_col).agg(F.first(category_col, ignorenulls=True).alias("_category"))
    # An item without a category differs from every other item.
    labelled = recs.join(categories, item_col, "left").withColumn(
        "_category", F.coalesce("_category", F.concat(F.lit("\u0000item:"), F.col(item_col).cast("string"))))
    per_category = labelled.groupBy(user_col, "_category").agg(F.count(F.lit(1)).alias("_n"))
    per_user = per_category.groupBy(user_col).agg(
        F.sum("_n").alias("_len"), F.sum(F.col("_n") * (F.col("_n") - 1) / 2).alias("_same_pairs"))
    diversity_row = per_user.where(F.col("_len") > 1).agg(
        F.avg(1 - F.col("_same_pairs") / (F.col("_len") * (F.col("_len") - 1) / 2))).first()
    diversity = float(diversity_row[0]) if diversity_row[0] is not None else 0.0

    n_training_users = training.select(user_col).distinct().count()
    popularity = training.groupBy(item_col).agg(F.countDistinct(user_col).alias("_users"))
    novelty_row = recs.join(popularity, item_col, "left").agg(
        F.avg(-F.log2(F.coalesce(F.col("_users"), F.lit(1)) / F.lit(max(n_training_users, 1))))).first()
    novelty = float(novelty_row[0]) if novelty_row[0] is not None else 0.0
    return {f"coverage@{k}": coverage, f"diversity@{k}": diversity, f"novelty@{k}": novelty}


def rank_by_score(scored: DataFrame, k: int, user_col: str = S.USER_ID, item_col: str = S.ITEM_ID,
                  score_col: str = "score", rank_col: str = RANK) -> DataFrame:
    """Each user's top ``k`` of ``scored`` as ``(user_col, rank_col, item_col, score_col)``; ties
    are broken by item id so the ranking is deterministic."""
    order = Window.partitionBy(user_col).orderBy(F.col(score_col).desc(), F.col(item_col))
    return (scored.withColumn(rank_col, F.row_number().over(order))
            .where(F.col(rank_col) <= k)
            .select(user_col, rank_col, item_col, score_col))
