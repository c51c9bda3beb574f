"""Candidates from every source and the features the ranker scores them with (pure transforms).

The same functions serve training (on tables built from events before a cut-off) and scoring
(on the run date's tables), so the model sees features computed the same way in both.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.etl import profiles as P
from shoprec.models.search import SEARCH_ID, TEXT_RANK, TEXT_SCORE

SOURCES = ("als", "rules", "similar", "content", "popular")
SEED_ITEM = "seed_item_id"
LABEL = "label"

# Dense features, in model order. Counts are log1p-scaled before standardising.
USER_DENSE = ("recency_days", "frequency", "monetary", "n_view", "n_cart", "n_purchase", "view_to_purchase",
              "active_days", "sessions")
ITEM_DENSE = ("views_decayed", "carts_decayed", "purchases_decayed", "view_to_cart", "view_to_purchase",
              "distinct_buyers", "price_avg", "ratings_decayed", "rating_avg")
CROSS_DENSE = ("category_share", "days_since_category", "brand_share", "days_since_brand", "price_ratio", "n_sources")
SOURCE_DENSE = tuple(f"{s}_{kind}" for s in SOURCES for kind in ("score", "rank"))
# The search ranker's own features: how well the item's words match the query, and its place in
# the text order (shoprec.models.search.match_items).
SEARCH_DENSE = (TEXT_SCORE, TEXT_RANK)
LOG_SCALED = {"frequency", "monetary", "n_view", "n_cart", "n_purchase", "active_days", "sessions",
              "views_decayed", "carts_decayed", "purchases_decayed", "ratings_decayed", "distinct_buyers", "price_avg",
              "days_since_category", "days_since_brand", "als_rank", "rules_rank", "similar_rank", "content_rank",
              "popular_rank", "rules_score", "popular_score", TEXT_RANK}
# Categorical features and their hash-bucket counts (the "vocabulary": xxhash64 mod buckets).
CATEGORICAL = {"user_bucket": 1 << 16, "item_bucket": 1 << 16, "category_bucket": 1 << 10,
               "brand_bucket": 1 << 12, "segment": 64, "price_band": 16}
ID_BUCKETS = ("user_bucket", "item_bucket")  # left out of the model with ranker.id_embeddings false


def dense_features(search: bool = False) -> list[str]:
    """Every dense feature, in the order the model's ``dense`` input takes them (the search
    ranker's: the same, then :data:`SEARCH_DENSE`)."""
    recommender = [*(f"user_{c}" for c in USER_DENSE), *(f"item_{c}" for c in ITEM_DENSE), *CROSS_DENSE,
                   *SOURCE_DENSE]
    return [*recommender, *SEARCH_DENSE] if search else recommender


def seed_items(interactions: DataFrame, per_user: int) -> DataFrame:
    """Each user's ``per_user`` strongest interactions: the items candidates are "like".

    Returns:
        ``user_id, seed_item_id, confidence``.
    """
    order = Window.partitionBy(S.USER_ID).orderBy(F.col(P.CONFIDENCE).desc(), F.col(S.ITEM_ID))
    return (interactions.withColumn("_n", F.row_number().over(order)).where(F.col("_n") <= per_user)
            .select(S.USER_ID, F.col(S.ITEM_ID).alias(SEED_ITEM), P.CONFIDENCE))


def _from_seeds(seeds: DataFrame, neighbours: DataFrame, neighbour_col: str, score: Column, source: str) -> DataFrame:
    """Candidates reached from a user's seed items through an item -> item table; an item reached
    from several seeds keeps its best score and the seed that gave it."""
    reached = seeds.join(neighbours.withColumnRenamed(S.ITEM_ID, SEED_ITEM), SEED_ITEM).select(
        S.USER_ID, F.col(neighbour_col).alias(S.ITEM_ID), SEED_ITEM, score.alias("score"))
    return (reached.groupBy(S.USER_ID, S.ITEM_ID)
            .agg(F.max("score").alias("score"), F.max_by(SEED_ITEM, "score").alias(SEED_ITEM))
            .withColumn("source", F.lit(source)))


def candidates(users: DataFrame, seeds: DataFrame, als_recs: DataFrame, bought_together: DataFrame,
               similar_items: DataFrame, content_similar: DataFrame, popular: DataFrame,
               limits: dict[str, int]) -> DataFrame:
    """Up to ``limits[source]`` candidates per user from each source, merged per (user, item).

    Args:
        users: ``user_id`` rows to generate for.
        seeds: :func:`seed_items`.
        als_recs: ``(user_id, rank, item_id, score)``.
        bought_together: ``(item_id, bought_with_item_id, lift)``.
        similar_items, content_similar: ``(item_id, similar_item_id, score)``.
        popular: ``(rank, item_id, score)`` of one popularity list.
        limits: candidates kept per user and source (a missing or zero source is skipped).

    Returns:
        ``user_id, item_id``, and per source ``<source>_score double`` and ``<source>_rank int``
        (null when that source did not propose the item), ``rules_seed``, ``similar_seed``,
        ``content_seed`` (the seed item behind the candidate) and ``n_sources int``.
    """
    users = users.select(S.USER_ID).distinct()
    seeds = seeds.join(users, S.USER_ID)
    parts = []
    if limits.get("als"):
        parts.append(als_recs.join(users, S.USER_ID).select(
            S.USER_ID, S.ITEM_ID, F.col("score").cast("double").alias("score"),
            F.lit(None).cast("string").alias(SEED_ITEM), F.lit("als").alias("source")))
    if limits.get("rules"):
        parts.append(_from_seeds(seeds, bought_together, "bought_with_item_id", F.col("lift"), "rules"))
    if limits.get("similar"):
        parts.append(_from_seeds(seeds, similar_items, "similar_item_id", F.col("score"), "similar"))
    if limits.get("content"):
        parts.append(_from_seeds(seeds, content_similar, "similar_item_id", F.col("score"), "content"))
    if limits.get("popular"):
        top = popular.where(F.col("rank") <= limits["popular"])
        parts.append(users.crossJoin(F.broadcast(top.select(S.ITEM_ID, F.col("score").cast("double").alias("score"))))
                     .select(S.USER_ID, S.ITEM_ID, "score", F.lit(None).cast("string").alias(SEED_ITEM),
                             F.lit("popular").alias("source")))
    if not parts:
        raise ValueError("candidates: every source limit is zero")
    proposed = parts[0]
    for part in parts[1:]:
        proposed = proposed.unionByName(part)
    limit = F.create_map(*[x for s, n in limits.items() for x in (F.lit(s), F.lit(int(n)))])
    order = Window.partitionBy(S.USER_ID, "source").orderBy(F.col("score").desc(), F.col(S.ITEM_ID))
    ranked = (proposed.withColumn("_rank", F.row_number().over(order))
              .where(F.col("_rank") <= limit[F.col("source")]))
    aggregates = []
    for source in SOURCES:
        mine = F.col("source") == source
        aggregates += [F.max(F.when(mine, F.col("score"))).alias(f"{source}_score"),
                       F.min(F.when(mine, F.col("_rank"))).cast("int").alias(f"{source}_rank")]
        if source in ("rules", "similar", "content"):
            aggregates.append(F.max(F.when(mine, F.col(SEED_ITEM))).alias(f"{source}_seed"))
    merged = ranked.groupBy(S.USER_ID, S.ITEM_ID).agg(*aggregates, F.countDistinct("source").cast("int").alias("n_sources"))
    # A user's own items stay candidates (ALS proposes them back; rules and similar items can
    # reach one seed from another): whether a user is shown an item again is the exclusion
    # rule's call (als.exclude), which the training set and the business rules both apply.
    return merged


def candidates_from(users: DataFrame, inputs: dict[str, DataFrame], als_recs: DataFrame, seeds_per_user: int,
                    limits: dict[str, int]) -> DataFrame:
    """:func:`candidates` for ``users`` from a job's inputs (``interactions`` for the seeds,
    ``bought_together``, ``similar_items``, ``content_similar``, ``popular``) and ``als_recs``."""
    return candidates(users, seed_items(inputs["interactions"], seeds_per_user), als_recs, inputs["bought_together"],
                      inputs["similar_items"], inputs["content_similar"], inputs["popular"], limits)


def _value_counts(events: DataFrame, by: list[str]) -> DataFrame:
    """Per user and combination of the ``by`` values: the item events and the last one's time
    (events with an item and at least one of the values)."""
    has_value = F.col(by[0]).isNotNull()
    for name in by[1:]:
        has_value = has_value | F.col(name).isNotNull()
    return (events.where(F.col(S.ITEM_ID).isNotNull() & has_value)
            .groupBy(S.USER_ID, *by).agg(F.count(F.lit(1)).alias("_n"), F.max(S.EVENT_TIME).alias("_last")))


def _affinity_of(counts: DataFrame, as_of, by: str) -> DataFrame:
    """:func:`affinity` from :func:`_value_counts` rows (those without ``by`` count for none)."""
    per = counts.groupBy(S.USER_ID, by).agg(F.sum("_n").alias("_n"), F.max("_last").alias("_last"))
    total = Window.partitionBy(S.USER_ID)
    has_value = F.col(by).isNotNull()
    # Rows without the value leave last, past the window: a filter on a grouping column would be
    # pushed below the aggregations, and the counts would no longer be one plan for both values.
    return per.select(
        S.USER_ID, by, (F.col("_n") / F.sum(F.when(has_value, F.col("_n"))).over(total)).alias(f"{by}_share"),
        ((F.lit(as_of).cast("timestamp").cast("double") - F.col("_last").cast("double")) / P.SECONDS_PER_DAY)
        .alias(f"days_since_{by}")).where(has_value)


def affinity(events: DataFrame, as_of, by: str) -> DataFrame:
    """Per user and value of ``by`` (``category`` or ``brand``): the share of the user's item
    events with that value and the days since the user's last event with it. Events without a
    value count for no value (a log without brands gives no brand affinity).

    Returns:
        ``user_id, <by>, <by>_share double, days_since_<by> double``.
    """
    return _affinity_of(_value_counts(events, [by]), as_of, by)


def category_affinity(events: DataFrame, as_of) -> DataFrame:
    """:func:`affinity` by category: ``user_id, category, category_share, days_since_category``."""
    return affinity(events, as_of, S.CATEGORY)


def brand_affinity(events: DataFrame, as_of) -> DataFrame:
    """:func:`affinity` by brand: ``user_id, brand, brand_share, days_since_brand``."""
    return affinity(events, as_of, S.BRAND)


def affinities(events: DataFrame, as_of) -> tuple[DataFrame, DataFrame]:
    """:func:`category_affinity` and :func:`brand_affinity` from one aggregation of ``events`` by
    user, category and brand: a plan that joins both (as :func:`assemble` does) reads the events
    once, since Spark reuses the shuffle the two share."""
    counts = _value_counts(events, [S.CATEGORY, S.BRAND])
    return _affinity_of(counts, as_of, S.CATEGORY), _affinity_of(counts, as_of, S.BRAND)


def bucket(column: Column, buckets: int) -> Column:
    """A stable hash bucket in ``[0, buckets)`` (bucket 0 also takes nulls)."""
    return F.when(column.isNull(), F.lit(0)).otherwise(F.pmod(F.xxhash64(column.cast("string")), F.lit(buckets - 1)) + 1).cast("int")


def assemble(cands: DataFrame, user_profile: DataFrame, item_profile: DataFrame, by_category: DataFrame,
             by_brand: DataFrame) -> DataFrame:
    """Join candidates with user and item profiles and the user x item crosses (the user's
    affinity to the item's category, ``by_category`` from :func:`category_affinity`, and to its
    brand, ``by_brand`` from :func:`brand_affinity`).

    Returns:
        ``user_id, item_id``, the categorical bucket columns of :data:`CATEGORICAL`, every raw
        dense feature of :func:`dense_features` (nulls where unknown; see :func:`standardise`),
        ``category`` and the seed columns of :func:`candidates` (for explanations).
    """
    users = user_profile.select(S.USER_ID, "segment", "price_band", "avg_purchase_price",
                                *[F.col(c).cast("double").alias(f"user_{c}") for c in USER_DENSE])
    items = item_profile.select(S.ITEM_ID, S.CATEGORY, S.BRAND,
                                *[F.col(c).cast("double").alias(f"item_{c}") for c in ITEM_DENSE])
    joined = (cands.join(users, S.USER_ID, "left").join(items, S.ITEM_ID, "left")
              .join(by_category, [S.USER_ID, S.CATEGORY], "left")
              .join(by_brand, [S.USER_ID, S.BRAND], "left"))
    return joined.select(
        S.USER_ID, S.ITEM_ID, S.CATEGORY, "rules_seed", "similar_seed", "content_seed",
        bucket(F.col(S.USER_ID), CATEGORICAL["user_bucket"]).alias("user_bucket"),
        bucket(F.col(S.ITEM_ID), CATEGORICAL["item_bucket"]).alias("item_bucket"),
        bucket(F.col(S.CATEGORY), CATEGORICAL["category_bucket"]).alias("category_bucket"),
        bucket(F.col(S.BRAND), CATEGORICAL["brand_bucket"]).alias("brand_bucket"),
        F.coalesce(F.col("segment") + 1, F.lit(0)).cast("int").alias("segment"),
        F.coalesce(F.col("price_band") + 1, F.lit(0)).cast("int").alias("price_band"),
        *[F.col(f"user_{c}") for c in USER_DENSE], *[F.col(f"item_{c}") for c in ITEM_DENSE],
        F.coalesce(F.col("category_share"), F.lit(0.0)).alias("category_share"),
        F.col("days_since_category"),
        F.coalesce(F.col("brand_share"), F.lit(0.0)).alias("brand_share"),
        F.col("days_since_brand"),
        (F.col("item_price_avg") / F.col("avg_purchase_price")).alias("price_ratio"),
        F.col("n_sources").cast("double").alias("n_sources"),
        *[F.col(c).cast("double").alias(c) for c in SOURCE_DENSE],
    )


def search_features(matches: DataFrame, cands: DataFrame, user_profile: DataFrame, item_profile: DataFrame,
                    by_category: DataFrame, by_brand: DataFrame) -> DataFrame:
    """The features of each search's text matches for the search ranker: :func:`assemble`'s for
    the (user, item) pair, a match the user's candidate sources also proposed keeping their scores
    and ranks, plus the match's ``text_score`` and ``text_rank``.

    Args:
        matches: ``search_id, user_id, item_id, text_score, text_rank`` rows
            (:func:`shoprec.models.search.match_items`; other columns are dropped).
        cands: :func:`candidates` rows of the searchers.

    Returns:
        ``search_id`` and :func:`assemble`'s columns plus ``text_score double, text_rank double``.
    """
    S.require_columns(matches, [SEARCH_ID, S.USER_ID, S.ITEM_ID, *SEARCH_DENSE], "search_features")
    pairs = matches.select(S.USER_ID, S.ITEM_ID).distinct()
    proposed = pairs.join(cands, [S.USER_ID, S.ITEM_ID], "left").withColumn(
        "n_sources", F.coalesce(F.col("n_sources"), F.lit(0)))
    features = assemble(proposed, user_profile, item_profile, by_category, by_brand)
    text = matches.select(SEARCH_ID, S.USER_ID, S.ITEM_ID, *[F.col(c).cast("double").alias(c) for c in SEARCH_DENSE])
    return text.join(features, [S.USER_ID, S.ITEM_ID])


def standardisation(features: DataFrame, columns: list[str] | None = None) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of each dense feature (``columns``, default
    :func:`dense_features`) after log scaling, to store beside the model."""
    columns = columns or dense_features()
    scaled = [_log_scaled(c).alias(c) for c in columns]
    stats = features.select(*scaled).agg(*[F.avg(c).alias(f"{c}__mean") for c in columns],
                                         *[F.stddev_pop(c).alias(f"{c}__std") for c in columns]).first()
    return {c: (float(stats[f"{c}__mean"] or 0.0), float(stats[f"{c}__std"] or 0.0) or 1.0) for c in columns}


def _log_scaled(name: str) -> Column:
    value = F.col(name).cast("double")
    base = name.split("_", 1)[1] if name.startswith(("user_", "item_")) else name
    return F.log1p(F.greatest(value, F.lit(0.0))) if base in LOG_SCALED else value


def standardise(features: DataFrame, stats: dict[str, tuple[float, float]]) -> DataFrame:
    """Replace the dense columns with one ``dense array<float>`` column: log-scaled where listed,
    standardised with ``stats``, missing values as 0 (the mean)."""
    values = [F.coalesce((_log_scaled(c) - F.lit(mean)) / F.lit(std), F.lit(0.0)) for c, (mean, std) in stats.items()]
    keep = [c for c in features.columns if c not in stats]
    return features.select(*keep, F.array(*values).cast("array<float>").alias("dense"))


def sampled_negatives(users: DataFrame, items: DataFrame, per_user: int, seed: int) -> DataFrame:
    """``per_user`` catalogue items drawn per user by a seeded hash (no shuffle of the catalogue).

    Args:
        users: ``user_id`` rows.
        items: ``item_id`` rows, the catalogue to draw from.

    Returns:
        Candidate-shaped rows (:func:`candidates` columns, every source null, ``n_sources`` 0);
        a draw that hits the same item twice keeps one row.
    """
    from shoprec.models.als import index_ids

    catalogue = index_ids(items, S.ITEM_ID, "_draw")
    size = catalogue.count()
    if size == 0 or per_user <= 0:
        return None
    draws = users.select(S.USER_ID).distinct().select(
        S.USER_ID, F.explode(F.sequence(F.lit(1), F.lit(per_user))).alias("_n"))
    draws = draws.select(S.USER_ID, F.pmod(F.xxhash64(F.lit(seed), S.USER_ID, "_n"), F.lit(size)).cast("int").alias("_draw"))
    drawn = draws.join(F.broadcast(catalogue) if size <= 1_000_000 else catalogue, "_draw").select(S.USER_ID, S.ITEM_ID).distinct()
    columns = [F.lit(None).cast("double").alias(f"{s}_score") for s in SOURCES]
    columns += [F.lit(None).cast("int").alias(f"{s}_rank") for s in SOURCES]
    columns += [F.lit(None).cast("string").alias(f"{s}_seed") for s in ("rules", "similar", "content")]
    return drawn.select(S.USER_ID, S.ITEM_ID, *columns, F.lit(0).alias("n_sources"))


def with_labels(examples: DataFrame, truth: DataFrame, key: str = S.USER_ID) -> DataFrame:
    """``examples`` with ``label double``: 1 when the (``key``, item) is in ``truth``, else 0
    (``key``: the user, or the search for the search ranker's examples)."""
    positives = truth.select(key, S.ITEM_ID).distinct().withColumn("_positive", F.lit(1.0))
    return (examples.join(positives, [key, S.ITEM_ID], "left")
            .withColumn(LABEL, F.coalesce(F.col("_positive"), F.lit(0.0))).drop("_positive"))


def assign_shards(examples: DataFrame, workers: int, validation_percent: int, seed: int) -> DataFrame:
    """Tag each example with ``split`` (``train``/``validation``, whole users at a time) and, for
    training, ``shard`` in ``[0, workers)`` (by user, so one user's examples stay together)."""
    user_hash = F.xxhash64(F.lit(seed), F.col(S.USER_ID))
    split = F.when(F.pmod(user_hash, F.lit(100)) < validation_percent, F.lit("validation")).otherwise(F.lit("train"))
    shard = F.when(split == "train", F.pmod(F.xxhash64(F.lit(seed + 1), F.col(S.USER_ID)), F.lit(workers))).otherwise(F.lit(0))
    return examples.withColumn("split", split).withColumn("shard", shard.cast("int"))
