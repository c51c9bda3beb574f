"""Popularity candidates: what everyone buys lately, overall and per category (for cold start)."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.evaluation.ranking import RANK

SCOPE = "scope"
SCORE = "score"
ALL = "all"


def popularity_score(weights: dict[str, float]) -> Column:
    """An item profile row's popularity: its decayed views, carts, purchases and ratings, weighted
    (a rating counts once here, whatever its stars)."""
    return (F.lit(float(weights.get("view", 0.0))) * F.col("views_decayed")
            + F.lit(float(weights.get("cart", 0.0))) * F.col("carts_decayed")
            + F.lit(float(weights.get("purchase", 0.0))) * F.col("purchases_decayed")
            + F.lit(float(weights.get("rating", 0.0))) * F.coalesce(F.col("ratings_decayed"), F.lit(0.0)))


def popular_items(item_profile: DataFrame, weights: dict[str, float], top_k: int) -> DataFrame:
    """The ``top_k`` items by time-decayed, weighted funnel counts, overall and per category.

    ``score = weights[view]·views_decayed + weights[cart]·carts_decayed + weights[purchase]·purchases_decayed
    + weights[rating]·ratings_decayed``
    (the decayed columns of :func:`~shoprec.etl.profiles.item_profile`); ties go to the smaller item id.

    Returns:
        ``scope string ("all" or "category"), category string (null for "all"), rank int,
        item_id string, score double``.
    """
    S.require_columns(item_profile, [S.ITEM_ID, S.CATEGORY, "views_decayed", "carts_decayed", "purchases_decayed",
                                     "ratings_decayed"],
                      "popular_items")
    scored = item_profile.select(S.ITEM_ID, S.CATEGORY, popularity_score(weights).alias(SCORE)).where(F.col(SCORE) > 0)
    per_category = Window.partitionBy(S.CATEGORY).orderBy(F.col(SCORE).desc(), F.col(S.ITEM_ID))
    # The overall top_k (a top-k per partition, then a merge), ranked by its position in one
    # sorted array: a window without a partition would do the same but moves rows to a single
    # task and warns about it on every run.
    local_top = scored.orderBy(F.col(SCORE).desc(), F.col(S.ITEM_ID)).limit(top_k)
    in_order = F.sort_array(F.collect_list(F.struct((-F.col(SCORE)).alias("_neg_score"), S.ITEM_ID)))
    top_all = (local_top.agg(in_order.alias("_top")).select(F.posexplode("_top").alias("_position", "_item"))
               .select(F.lit(ALL).alias(SCOPE), F.lit(None).cast("string").alias(S.CATEGORY),
                       (F.col("_position") + 1).alias(RANK), F.col("_item")[S.ITEM_ID].alias(S.ITEM_ID),
                       (-F.col("_item._neg_score")).alias(SCORE)))
    top_category = (scored.where(F.col(S.CATEGORY).isNotNull())
                    .withColumn(RANK, F.row_number().over(per_category)).where(F.col(RANK) <= top_k)
                    .select(F.lit(S.CATEGORY).alias(SCOPE), S.CATEGORY, RANK, S.ITEM_ID, SCORE))
    return top_all.unionByName(top_category)


def recommend_popular(popular: DataFrame, users: DataFrame, exclude: DataFrame | None, k: int) -> DataFrame:
    """The same popular list for every user, minus what each user is excluded from seeing.

    Args:
        popular: ``(rank, item_id, score)`` rows of one ranking (for example the ``"all"`` scope).
        users: ``(user_id)`` rows.
        exclude: ``(user_id, item_id)`` pairs not to recommend.

    Returns:
        ``user_id, rank int, item_id, score double``; fewer than ``k`` rows for a user who has
        seen almost everything in ``popular``.
    """
    candidates = users.select(S.USER_ID).distinct().crossJoin(
        F.broadcast(popular.select(F.col(RANK).alias("_popular_rank"), S.ITEM_ID, SCORE)))
    if exclude is not None:
        candidates = candidates.join(exclude.select(S.USER_ID, S.ITEM_ID).distinct(), [S.USER_ID, S.ITEM_ID], "left_anti")
    order = Window.partitionBy(S.USER_ID).orderBy("_popular_rank")
    return (candidates.withColumn(RANK, F.row_number().over(order)).where(F.col(RANK) <= k)
            .select(S.USER_ID, RANK, S.ITEM_ID, SCORE))
