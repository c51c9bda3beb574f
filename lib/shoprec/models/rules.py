"""Association rules ("bought together") with Spark MLlib's FP-Growth.

Definitions over ``N`` baskets: ``support(X) = |baskets ⊇ X| / N``;
``confidence(X → Y) = support(X ∪ Y) / support(X)``; ``lift(X → Y) = confidence(X → Y) / support(Y)``.
An itemset is frequent when its basket count is at least ``ceil(min_support · N)``.
"""

from __future__ import annotations

from pyspark.ml.fpm import FPGrowth
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.evaluation.ranking import RANK

BASKET_ID = "basket_id"
ITEMS = "items"
ANTECEDENT = "antecedent"
CONSEQUENT = "consequent"
BOUGHT_WITH = "bought_with_item_id"
BASKET_KINDS = ("order", "session", "user_day")


def purchase_baskets(events: DataFrame, kind: str = "session", min_items: int = 2) -> DataFrame:
    """Baskets of purchased items: one per order, per session, or per user and day.

    Args:
        events: clean events.
        kind: ``"order"`` (purchases sharing an ``order_id``; purchases without one fall back to
            their session), ``"session"`` (the purchases of one session) or ``"user_day"`` (of one
            user in one UTC day, for sources whose sessions split a checkout).
        min_items: baskets with fewer distinct items teach no co-occurrence and are left out.

    Returns:
        ``basket_id string, items array<string>`` (distinct item ids, sorted).
    """
    if kind not in BASKET_KINDS:
        raise ValueError(f"purchase_baskets: kind must be one of {', '.join(BASKET_KINDS)}, got {kind!r}")
    S.require_columns(events, [S.USER_ID, S.ITEM_ID, S.EVENT_TYPE, S.SESSION_ID, S.EVENT_TIME], "purchase_baskets")
    if kind == "order":
        S.require_columns(events, [S.ORDER_ID], "purchase_baskets")
        key = F.coalesce(F.concat(F.lit("order:"), F.col(S.ORDER_ID)), F.concat(F.lit("session:"), F.col(S.SESSION_ID)))
    elif kind == "session":
        key = F.col(S.SESSION_ID)
    else:
        key = F.concat_ws("/", F.col(S.USER_ID), F.to_date(S.EVENT_TIME).cast("string"))
    purchases = events.where((F.col(S.EVENT_TYPE) == "purchase") & F.col(S.ITEM_ID).isNotNull())
    baskets = purchases.groupBy(key.alias(BASKET_ID)).agg(F.array_sort(F.collect_set(S.ITEM_ID)).alias(ITEMS))
    return baskets.where(F.size(ITEMS) >= min_items)


def read_basket_lines(spark, path: str, delimiter: str = ",") -> DataFrame:
    """Baskets from a text file with one basket per line, items separated by ``delimiter``
    (the Groceries format). Blank items are dropped; repeats within a line count once.

    Returns:
        ``basket_id string`` (the line's position, from 0), ``items array<string>``.
    """
    lines = spark.read.text(path).rdd.map(lambda row: row[0]).zipWithIndex().toDF(["_line", "_n"])
    items = F.array_sort(F.array_distinct(F.filter(
        F.transform(F.split("_line", delimiter), lambda item: F.trim(item)), lambda item: item != "")))
    return lines.select(F.col("_n").cast("string").alias(BASKET_ID), items.alias(ITEMS))


def effective_min_support(n_baskets: int, min_support: float, min_basket_count: int) -> float:
    """The support threshold that also demands ``min_basket_count`` baskets.

    On a small log a fractional threshold alone can mean "in one basket", and then every subset
    of every large basket is frequent: millions of meaningless rules.
    """
    if n_baskets <= 0:
        return min_support
    return max(min_support, min_basket_count / n_baskets)


def mine_rules(baskets: DataFrame, min_support: float, min_confidence: float) -> tuple[DataFrame, DataFrame]:
    """Frequent itemsets and association rules of ``baskets``.

    Args:
        baskets: ``(basket_id, items array<string>)`` with distinct items per basket.

    Returns:
        ``(itemsets, rules)``: itemsets as ``items array<string>, freq long``; rules as
        ``antecedent array<string>, consequent array<string>`` (one item), ``support``,
        ``confidence``, ``lift`` (all double) for rules with confidence ≥ ``min_confidence``.
    """
    S.require_columns(baskets, [ITEMS], "mine_rules")
    model = FPGrowth(itemsCol=ITEMS, minSupport=min_support, minConfidence=min_confidence).fit(baskets.select(ITEMS))
    rules = model.associationRules.select(
        F.array_sort(ANTECEDENT).alias(ANTECEDENT), F.col(CONSEQUENT), "support", "confidence", "lift")
    return model.freqItemsets, rules


def bought_together(rules: DataFrame, k: int) -> DataFrame:
    """For each item, the ``k`` items most often bought with it: rules with that single item as
    antecedent, ordered by lift, then confidence, then item id.

    Returns:
        ``item_id string, rank int, bought_with_item_id string, lift double, confidence double, support double``.
    """
    single = rules.where(F.size(ANTECEDENT) == 1).select(
        F.col(ANTECEDENT)[0].alias(S.ITEM_ID), F.col(CONSEQUENT)[0].alias(BOUGHT_WITH), "lift", "confidence", "support")
    order = Window.partitionBy(S.ITEM_ID).orderBy(F.col("lift").desc(), F.col("confidence").desc(), F.col(BOUGHT_WITH))
    return (single.withColumn(RANK, F.row_number().over(order)).where(F.col(RANK) <= k)
            .select(S.ITEM_ID, RANK, BOUGHT_WITH, "lift", "confidence", "support"))


def recommend_from_rules(rules: DataFrame, history: DataFrame, exclude: DataFrame | None, k: int) -> DataFrame:
    """Rule-based recommendations: every rule whose antecedent the user's history contains fires;
    an item's score is the best lift among the rules that recommend it.

    Args:
        rules: as returned by :func:`mine_rules`.
        history: ``(user_id, item_id)`` items each user has (bought).
        exclude: ``(user_id, item_id)`` pairs not to recommend.

    Returns:
        ``user_id, rank int, item_id, score double``.
    """
    owned = history.select(S.USER_ID, S.ITEM_ID).distinct().groupBy(S.USER_ID).agg(F.collect_set(S.ITEM_ID).alias("_owned"))
    firing = owned.crossJoin(F.broadcast(rules.select(ANTECEDENT, CONSEQUENT, "lift", "confidence"))).where(
        F.size(F.array_except(ANTECEDENT, "_owned")) == 0)
    scored = firing.groupBy(S.USER_ID, F.col(CONSEQUENT)[0].alias(S.ITEM_ID)).agg(
        F.max("lift").alias("score"), F.max("confidence").alias("_confidence"))
    if exclude is not None:
        scored = scored.join(exclude.select(S.USER_ID, S.ITEM_ID).distinct(), [S.USER_ID, S.ITEM_ID], "left_anti")
    order = Window.partitionBy(S.USER_ID).orderBy(F.col("score").desc(), F.col("_confidence").desc(), F.col(S.ITEM_ID))
    return (scored.withColumn(RANK, F.row_number().over(order)).where(F.col(RANK) <= k)
            .select(S.USER_ID, RANK, S.ITEM_ID, "score"))
