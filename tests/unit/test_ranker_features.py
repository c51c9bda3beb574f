"""Candidate merging, labels, shards and standardisation of the ranker's features."""

import pytest
from pyspark.sql import functions as F

from shoprec.models.ranker import features as X


def test_candidates_merge_sources_and_keep_their_limits(spark):
    users = spark.createDataFrame([("u",)], "user_id string")
    seeds = spark.createDataFrame([("u", "s1", 5.0), ("v", "s9", 1.0)], "user_id string, seed_item_id string, confidence double")
    als = spark.createDataFrame([("u", 1, "a", 0.9), ("u", 2, "b", 0.8), ("u", 3, "c", 0.7), ("u", 4, "s1", 0.6)],
                                "user_id string, rank int, item_id string, score double")
    together = spark.createDataFrame([("s1", "b", 3.0), ("s1", "d", 2.0)], "item_id string, bought_with_item_id string, lift double")
    similar = spark.createDataFrame([("s1", "e", 0.5)], "item_id string, similar_item_id string, score double")
    content = spark.createDataFrame([("s1", "a", 0.4)], "item_id string, similar_item_id string, score double")
    popular = spark.createDataFrame([(1, "p", 10.0), (2, "a", 9.0)], "rank int, item_id string, score double")
    got = {r.item_id: r for r in X.candidates(users, seeds, als, together, similar, content, popular,
                                              {"als": 2, "rules": 5, "similar": 5, "content": 5, "popular": 1}).collect()}
    assert set(got) == {"a", "b", "d", "e", "p"}  # als limited to 2; popular to 1
    assert (got["b"].als_rank, got["b"].rules_score, got["b"].rules_seed, got["b"].n_sources) == (2, 3.0, "s1", 2)
    assert (got["a"].als_score, got["a"].content_score, got["a"].content_seed, got["a"].n_sources) == (0.9, 0.4, "s1", 2)
    assert got["p"].popular_rank == 1 and got["p"].als_score is None
    assert got["d"].rules_rank == 2


def test_a_users_own_items_stay_candidates(spark):
    # Whether a user is shown an item again is the exclusion rule's call, not the candidates'.
    users = spark.createDataFrame([("u",)], "user_id string")
    seeds = spark.createDataFrame([("u", "s1", 5.0)], "user_id string, seed_item_id string, confidence double")
    als = spark.createDataFrame([("u", 1, "s1", 0.9), ("u", 2, "a", 0.8)], "user_id string, rank int, item_id string, score double")
    empty = spark.createDataFrame([], "item_id string, similar_item_id string, score double")
    together = spark.createDataFrame([], "item_id string, bought_with_item_id string, lift double")
    popular = spark.createDataFrame([(1, "s1", 10.0)], "rank int, item_id string, score double")
    got = {r.item_id: r for r in X.candidates(users, seeds, als, together, empty, empty, popular,
                                              {"als": 5, "popular": 1}).collect()}
    assert set(got) == {"s1", "a"}
    assert (got["s1"].als_rank, got["s1"].popular_rank, got["s1"].n_sources) == (1, 1, 2)


def test_labels_shards_and_standardisation(spark):
    rows = [(f"u{i}", f"i{j}", float(i), float(j)) for i in range(20) for j in range(3)]
    examples = spark.createDataFrame(rows, "user_id string, item_id string, user_frequency double, als_score double")
    truth = spark.createDataFrame([("u1", "i2"), ("u1", "i2"), ("u3", "zz")], "user_id string, item_id string")
    labelled = X.with_labels(examples, truth)
    assert labelled.where(F.col("label") == 1).select("user_id", "item_id").collect() == [("u1", "i2")]
    assert labelled.count() == 60

    sharded = X.assign_shards(labelled, workers=3, validation_percent=30, seed=1)
    per_user = sharded.groupBy("user_id").agg(F.countDistinct("split").alias("splits"), F.countDistinct("shard").alias("shards"))
    assert per_user.where((F.col("splits") > 1) | (F.col("shards") > 1)).count() == 0  # users stay whole
    assert {r.shard for r in sharded.where(F.col("split") == "train").select("shard").distinct().collect()} <= {0, 1, 2}
    assert 0 < sharded.where(F.col("split") == "validation").count() < 60

    stats = {"user_frequency": (9.5, 2.0), "als_score": (1.0, 0.5)}
    dense = X.standardise(spark.createDataFrame([("u", 11.5, None)], "user_id string, user_frequency double, als_score double"), stats)
    assert dense.columns == ["user_id", "dense"]
    # user_frequency is log-scaled before standardising; a missing score becomes the mean (0).
    value = dense.first().dense
    import math

    assert value[0] == pytest.approx((math.log1p(11.5) - 9.5) / 2.0, rel=1e-6)
    assert value[1] == 0.0


def test_brand_affinity_is_the_users_share_of_events_with_the_brand_and_days_since_the_last(spark):
    import datetime as dt

    events = spark.createDataFrame([
        ("u", "i1", "acme", dt.datetime(2026, 1, 1, 12)), ("u", "i2", "acme", dt.datetime(2026, 1, 3, 12)),
        ("u", "i3", "zeta", dt.datetime(2026, 1, 2, 0)), ("u", "i4", None, dt.datetime(2026, 1, 4, 0)),
        ("u", None, "acme", dt.datetime(2026, 1, 4, 0)),   # a search: no item, no affinity
        ("v", "i3", "zeta", dt.datetime(2026, 1, 1, 0)),
    ], "user_id string, item_id string, brand string, event_time timestamp")
    got = {(r.user_id, r.brand): (r.brand_share, r.days_since_brand)
           for r in X.brand_affinity(events, dt.datetime(2026, 1, 5)).collect()}
    # u's item events with a brand: two of acme, one of zeta (the brandless one counts for none).
    assert got == {("u", "acme"): (pytest.approx(2 / 3), pytest.approx(1.5)),
                   ("u", "zeta"): (pytest.approx(1 / 3), pytest.approx(3.0)),
                   ("v", "zeta"): (pytest.approx(1.0), pytest.approx(4.0))}


def test_both_affinities_from_one_aggregation_equal_each_alone_and_read_the_events_once(spark, tmp_path):
    import datetime as dt

    as_of = dt.datetime(2026, 1, 5)
    # Events with a category and no brand, a brand and no category, both, neither, and no item.
    spark.createDataFrame([
        ("u", "i1", "audio", "acme", dt.datetime(2026, 1, 1, 12)), ("u", "i2", "audio", None, dt.datetime(2026, 1, 2)),
        ("u", "i3", None, "zeta", dt.datetime(2026, 1, 3)), ("u", "i4", None, None, dt.datetime(2026, 1, 4)),
        ("u", None, "audio", "acme", dt.datetime(2026, 1, 4, 6)), ("v", "i5", "tv", "zeta", dt.datetime(2026, 1, 2)),
        ("v", "i6", "tv", "acme", dt.datetime(2026, 1, 3)),
    ], "user_id string, item_id string, category string, brand string, event_time timestamp").write.parquet(
        str(tmp_path / "events"))
    events = spark.read.parquet(str(tmp_path / "events"))
    by_category, by_brand = X.affinities(events, as_of)

    def rows(df):
        return sorted(tuple(round(v, 9) if isinstance(v, float) else v for v in r) for r in df.collect())

    assert rows(by_category) == rows(X.category_affinity(events, as_of)) == [
        ("u", "audio", 1.0, 3.0), ("v", "tv", 1.0, 2.0)]
    assert rows(by_brand) == rows(X.brand_affinity(events, as_of)) == [
        ("u", "acme", 0.5, 3.5), ("u", "zeta", 0.5, 2.0), ("v", "acme", 0.5, 2.0), ("v", "zeta", 0.5, 3.0)]
    pairs = events.select("user_id", "category", "brand").distinct()
    joined = pairs.join(by_category, ["user_id", "category"], "left").join(by_brand, ["user_id", "brand"], "left")
    joined.collect()
    # The final plan: one scan for the pairs, one for both affinities (the second reuses its shuffle).
    final = joined._jdf.queryExecution().executedPlan().toString().split("== Initial Plan ==")[0]
    assert final.count("FileScan parquet") == 2 and "ReusedExchange" in final


def candidate_rows(spark, rows, als=None):
    """Candidates ``(user_id, item_id, n_sources)`` with every source's columns null, except ALS's
    score and rank when ``als`` gives them."""
    cands = spark.createDataFrame(rows, "user_id string, item_id string, n_sources int")
    for source in X.SOURCES:
        score, rank = als if (als and source == "als") else (None, None)
        cands = cands.withColumn(f"{source}_score", F.lit(score).cast("double")).withColumn(
            f"{source}_rank", F.lit(rank).cast("int"))
    for source in ("rules", "similar", "content"):
        cands = cands.withColumn(f"{source}_seed", F.lit(None).cast("string"))
    return cands


def profiles_of(spark, user, items):
    """A user profile for ``user`` and item profiles for ``items`` ``(item_id, category, brand)``,
    every dense feature 1.0."""
    users = spark.createDataFrame([(user, 0, 0, 10.0)], "user_id string, segment int, price_band int, "
                                                        "avg_purchase_price double")
    for name in X.USER_DENSE:
        users = users.withColumn(name, F.lit(1.0))
    item_rows = spark.createDataFrame(items, "item_id string, category string, brand string")
    for name in X.ITEM_DENSE:
        item_rows = item_rows.withColumn(name, F.lit(1.0))
    return users, item_rows


def test_assembled_examples_carry_the_users_affinity_to_the_items_category_and_brand(spark):
    import datetime as dt

    as_of = dt.datetime(2026, 1, 5)
    events = spark.createDataFrame([
        ("u", "i1", "audio", "acme", dt.datetime(2026, 1, 4)), ("u", "i2", "tv", "zeta", dt.datetime(2026, 1, 3)),
    ], "user_id string, item_id string, category string, brand string, event_time timestamp")
    cands = candidate_rows(spark, [("u", "i3", 1), ("u", "i4", 1)])
    users, items = profiles_of(spark, "u", [("i3", "audio", "zeta"), ("i4", "kitchen", "acme")])
    got = {r.item_id: r for r in X.assemble(cands, users, items, X.category_affinity(events, as_of),
                                            X.brand_affinity(events, as_of)).collect()}
    # i3: the user's category (audio) in another brand; i4: the user's brand (acme) in a new category.
    assert (got["i3"].category_share, got["i3"].days_since_category) == (0.5, 1.0)
    assert (got["i3"].brand_share, got["i3"].days_since_brand) == (0.5, 2.0)
    assert (got["i4"].category_share, got["i4"].days_since_category) == (0.0, None)
    assert (got["i4"].brand_share, got["i4"].days_since_brand) == (0.5, 1.0)
    assert set(X.dense_features()) <= set(got["i3"].asDict())


def test_search_features_are_the_pairs_features_plus_each_matchs_text_score_and_rank(spark):
    import datetime as dt

    as_of = dt.datetime(2026, 1, 5)
    events = spark.createDataFrame([("u", "i1", "audio", "acme", dt.datetime(2026, 1, 4))],
                                   "user_id string, item_id string, category string, brand string, event_time timestamp")
    # i3 was proposed by ALS (rank 2); i4 by no source.
    cands = candidate_rows(spark, [("u", "i3", 1)], als=(0.5, 2))
    users, items = profiles_of(spark, "u", [("i3", "audio", "zeta"), ("i4", "kitchen", "acme")])
    # Two searches of the user; i3 matches both, at different places.
    matches = spark.createDataFrame([("s1", "u", "i3", 1.0, 1), ("s1", "u", "i4", 0.5, 2), ("s2", "u", "i3", 0.4, 3)],
                                    "search_id string, user_id string, item_id string, text_score double, text_rank int")
    by_category, by_brand = X.affinities(events, as_of)
    got = {(r.search_id, r.item_id): r for r in X.search_features(matches, cands, users, items, by_category,
                                                                 by_brand).collect()}
    assert set(got) == {("s1", "i3"), ("s1", "i4"), ("s2", "i3")}
    assert [(got[k].text_score, got[k].text_rank) for k in sorted(got)] == [(1.0, 1.0), (0.5, 2.0), (0.4, 3.0)]
    assert (got[("s1", "i3")].als_rank, got[("s1", "i3")].n_sources) == (2.0, 1.0)
    assert (got[("s1", "i4")].als_rank, got[("s1", "i4")].n_sources) == (None, 0.0)
    assert got[("s1", "i3")].category_share == 1.0 and got[("s1", "i4")].brand_share == 1.0
    assert set(X.dense_features(search=True)) <= set(got[("s1", "i3")].asDict())
    assert X.dense_features(search=True) == [*X.dense_features(), *X.SEARCH_DENSE]
