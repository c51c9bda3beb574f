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

The first four are the definitions of Spark's :class:`~pyspark.ml.evaluation.RankingEvaluator`
(``precisionAtK``, ``recallAtK``, ``ndcgAtK``, ``meanAveragePrecisionAtK``; a recommended item
counts at every position it appears in). They are computed here with SQL array functions, every
metric at every cut-off in one aggregation over the users' lists, where the evaluator would make
one pass per metric and cut-off; a test checks both give the same values.

Beyond accuracy, over the lists of all evaluated users:

* ``coverage@K`` = |∪_u R_u[:K]| / catalogue size
* ``diversity@K`` (intra-list, by category) = mean over users of the share of item pairs in
  R_u[:K] whose categories differ (items without a category count as their own category)
* ``novelty@K`` = mean over all recommended items of −log2 p(i), where p(i) is the share of
  training users who interacted with i (items no training user touched get p = 1 / #users)
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.spark import CacheScope

RANK = "rank"
# Each accuracy metric and the RankingEvaluator metric whose definition it follows.
ACCURACY_METRICS = {
    "precision": "precisionAtK",
    "recall": "recallAtK",
    "ndcg": "ndcgAtK",
    "map": "meanAveragePrecisionAtK",
}


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
    recs = top_k(recommendations, ks[-1], user_col, rank_col).select(user_col, item_col, rank_col)
    relevant = truth.select(user_col, item_col).distinct()
    users = evaluation_users(recs, relevant, user_col, require_recommendations)

    predicted = (recs.groupBy(user_col)
                 .agg(F.sort_array(F.collect_list(F.struct(rank_col, item_col))).alias("_ranked"))
                 .select(user_col, F.col("_ranked." + item_col).alias("_prediction")))
    labels = relevant.groupBy(user_col).agg(F.collect_list(item_col).alias("_label"))
    per_user = (users.join(labels, user_col).join(predicted, user_col, "left")
                # _hit: 1 where the item at that position is relevant, 0 where not; empty for a user
                # without recommendations.
                .select("_label", F.coalesce(F.transform("_prediction", lambda item: F.array_contains("_label", item)
                                                         .cast("int")), F.array().cast("array<int>")).alias("_hit")))
    aggregates = [F.count(F.lit(1)).alias("users")]
    for k in ks:
        aggregates += [expression.alias(f"{name}@{k}") for name, expression in _per_user_metrics(k).items()]
    totals = per_user.agg(*aggregates).first()
    # With no user to average over, avg is null: every metric is 0.
    return {k: {**{f"{name}@{k}": float(totals[f"{name}@{k}"] or 0.0) for name in [*ACCURACY_METRICS, "hit_rate"]},
                "users": totals["users"]}
            for k in ks}


def _per_user_metrics(k: int) -> dict[str, Column]:
    """Mean over users of each metric at ``k``, from ``_hit`` (0/1 by position) and ``_label``."""
    hits = F.slice("_hit", 1, k)
    n_relevant = F.size("_label")
    n_hits = F.aggregate(hits, F.lit(0), lambda total, hit: total + hit)
    # Positions are 0-based in the lambdas: the discount of position i is 1 / log2(i + 2).
    dcg = F.aggregate(F.transform(hits, lambda hit, i: hit / F.log2(i + 2)), F.lit(0.0), lambda a, b: a + b)
    ideal = F.aggregate(F.transform(F.array_repeat(F.lit(1), F.least(n_relevant, F.lit(k))),
                                    lambda one, i: one / F.log2(i + 2)), F.lit(0.0), lambda a, b: a + b)
    # The sum, over the hits, of precision at the hit's position (hits so far / positions so far),
    # in one walk along the list.
    precision_sum = F.aggregate(
        hits, F.struct(F.lit(0).alias("hits"), F.lit(0.0).alias("sum"), F.lit(0).alias("seen")),
        lambda acc, hit: F.struct((acc["hits"] + hit).alias("hits"),
                                  (acc["sum"] + hit * (acc["hits"] + hit) / (acc["seen"] + 1)).alias("sum"),
                                  (acc["seen"] + 1).alias("seen")),
        lambda acc: acc["sum"])
    return {
        "precision": F.avg(n_hits / F.lit(float(k))),
        "recall": F.avg(n_hits / n_relevant),
        "ndcg": F.avg(dcg / ideal),
        "map": F.avg(precision_sum / F.least(n_relevant, F.lit(k))),
        "hit_rate": F.avg((n_hits > 0).cast("double")),
    }


@dataclass(frozen=True)
class BeyondAccuracyReference:
    """What every model's lists are measured against for coverage, diversity and novelty: the
    same for all models of one evaluation, so :func:`beyond_accuracy_reference` counts it once."""

    catalogue_size: int
    training_users: int
    categories: DataFrame
    """``(item_col, _category)``: each catalogue item's category (null when it has none)."""
    popularity: DataFrame
    """``(item_col, _users)``: how many training users interacted with each item."""


def beyond_accuracy_reference(
    catalogue: DataFrame,
    training: DataFrame,
    scope: CacheScope,
    user_col: str = S.USER_ID,
    item_col: str = S.ITEM_ID,
    category_col: str = S.CATEGORY,
) -> BeyondAccuracyReference:
    """The catalogue's size and categories and the training items' popularity, counted once.

    Args:
        catalogue: ``(item_col, category_col)``, one row per item that could be recommended.
        training: ``(user_col, item_col)`` interactions the recommenders learned from.
        scope: caches the reference's two tables until the caller is done with them.
    """
    S.require_columns(catalogue, [item_col, category_col], "beyond_accuracy_metrics: catalogue")
    S.require_columns(training, [user_col, item_col], "beyond_accuracy_metrics: training")
    categories = scope.cache(catalogue.groupBy(item_col)
                             .agg(F.first(category_col, ignorenulls=True).alias("_category")))
    popularity = scope.cache(training.groupBy(item_col).agg(F.countDistinct(user_col).alias("_users")))
    return BeyondAccuracyReference(
        catalogue_size=categories.count(),
        training_users=training.select(user_col).distinct().count(),
        categories=categories,
        popularity=popularity,
    )


def beyond_accuracy_metrics(
    recommendations: DataFrame,
    k: int,
    catalogue: DataFrame | None = None,
    training: DataFrame | None = None,
    user_col: str = S.USER_ID,
    item_col: str = S.ITEM_ID,
    rank_col: str = RANK,
    category_col: str = S.CATEGORY,
    reference: BeyondAccuracyReference | None = None,
) -> dict[str, float]:
    """Coverage, intra-list diversity and novelty at ``k`` (formulas in the module docstring).

    Args:
        recommendations: ``(user_col, item_col, rank_col)`` rows of the evaluated users.
        catalogue: ``(item_col, category_col)``, one row per item that could be recommended.
        training: ``(user_col, item_col)`` interactions the recommender learned from.
        reference: :func:`beyond_accuracy_reference` of ``catalogue`` and ``training``, when
            several models are measured against the same ones; then those two are not needed.

    Returns:
        ``{"coverage@k": …, "diversity@k": …, "novelty@k": …}``.
    """
    S.require_columns(recommendations, [user_col, item_col, rank_col], "beyond_accuracy_metrics: recommendations")
    if reference is not None:
        return _beyond_accuracy(recommendations, k, reference, user_col, item_col, rank_col)
    if catalogue is None or training is None:
        raise ValueError("beyond_accuracy_metrics: pass either catalogue and training, or their reference")
    with CacheScope() as scope:
        reference = beyond_accuracy_reference(catalogue, training, scope, user_col, item_col, category_col)
        return _beyond_accuracy(recommendations, k, reference, user_col, item_col, rank_col)


def _beyond_accuracy(recommendations: DataFrame, k: int, reference: BeyondAccuracyReference, user_col: str,
                     item_col: str, rank_col: str) -> dict[str, float]:
    """:func:`beyond_accuracy_metrics` against a reference counted already."""
    recs = top_k(recommendations, k, user_col, rank_col).select(user_col, item_col).distinct()
    recommended = recs.select(item_col).distinct().count()
    coverage = recommended / reference.catalogue_size if reference.catalogue_size else 0.0

    # An item without a category (or not in the catalogue) differs from every other item.
    labelled = recs.join(reference.categories, item_col, "left").withColumn(
        "_category", F.coalesce("_category", F.concat(F.lit("\u0000item:"), F.col(item_col).cast("string"))))
    per_category = labelled.groupBy(user_col, "_category").agg(F.count(F.lit(1)).alias("_n"))
    per_user = per_category.groupBy(user_col).agg(
        F.sum("_n").alias("_len"), F.sum(F.col("_n") * (F.col("_n") - 1) / 2).alias("_same_pairs"))
    diversity_row = per_user.where(F.col("_len") > 1).agg(
        F.avg(1 - F.col("_same_pairs") / (F.col("_len") * (F.col("_len") - 1) / 2))).first()
    diversity = float(diversity_row[0]) if diversity_row[0] is not None else 0.0

    novelty_row = recs.join(reference.popularity, item_col, "left").agg(
        F.avg(-F.log2(F.coalesce(F.col("_users"), F.lit(1)) / F.lit(max(reference.training_users, 1))))).first()
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
