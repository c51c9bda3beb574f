"""ALS helpers, nearest neighbours, popularity, rules, content, segments, splits and the hold-out."""

import dataclasses
import datetime as dt

import pytest
from pyspark.sql import functions as F

from shoprec.evaluation.holdout import exclusions, time_holdout
from shoprec.evaluation.splits import stratified_split
from shoprec.models import als as A
from shoprec.models import rules as R
from shoprec.models.content import content_features, content_similar_items, recommend_by_content
from shoprec.models.neighbours import TargetSearch, nearest_neighbours, top_unexcluded
from shoprec.models.popularity import popular_items, recommend_popular
from shoprec.models.segments import assign_segments, describe_segments, fit_segments
from shoprec.spark import CacheScope


def test_index_ids_are_dense_and_sorted(spark):
    df = spark.createDataFrame([("b",), ("a",), ("c",), ("a",), (None,)], "user_id string")
    assert sorted(tuple(r) for r in A.index_ids(df, "user_id", "user_index").collect()) == [("a", 0), ("b", 1), ("c", 2)]


def test_nearest_neighbours_are_exact_cosine(spark):
    vectors = spark.createDataFrame(
        [(0, [2.0, 0.0]), (1, [0.9, 0.1]), (2, [0.0, 1.0]), (3, [-1.0, 0.0])], "id int, features array<float>")
    result = {(r.id, r.rank): (r.similar_index, r.score) for r in nearest_neighbours(vectors, 2).collect()}
    cos01 = 0.9 / (0.9 ** 2 + 0.1 ** 2) ** 0.5
    assert result[(0, 1)] == (1, pytest.approx(cos01, rel=1e-6))
    assert result[(0, 2)] == (2, pytest.approx(0.0, abs=1e-6))  # orthogonal beats opposite
    assert result[(3, 1)][0] == 2
    assert len(result) == 8


def test_top_unexcluded_masks_each_querys_own_list_and_breaks_ties_by_id(spark):
    targets = spark.createDataFrame(
        [(5, [3.0, 0.0]), (2, [2.0, 1.0]), (9, [1.0, 2.0]), (7, [0.0, 3.0]), (4, [3.0, 0.0])], "id int, features array<float>")
    queries = spark.createDataFrame(
        [(1, [1.0, 0.0], None), (2, [0.0, 1.0], [7, 8]), (3, [1.0, 1.0], [5, 2, 9, 7]), (4, [1.0, 0.0], [5, 4, 2, 9, 7])],
        "id int, features array<float>, excluded array<int>")

    result = top_unexcluded(queries, targets, 3, "excluded").orderBy("id", "rank").collect()

    assert [tuple(r) for r in result] == [
        (1, 1, 4, 3.0), (1, 2, 5, 3.0), (1, 3, 2, 2.0),  # 4 and 5 tie: the smaller id first
        (2, 1, 9, 2.0), (2, 2, 2, 1.0), (2, 3, 4, 0.0),  # 8 is unknown and ignored
        (3, 1, 4, 3.0),                                   # only one target left
    ]
    assert result[0].__fields__ == ["id", "rank", "target", "score"]


@pytest.mark.parametrize("search", [TargetSearch(), TargetSearch("ivf")], ids=["exact", "ivf"])
def test_top_unexcluded_with_no_targets_is_empty(spark, search):
    targets = spark.createDataFrame([], "id int, features array<float>")
    queries = spark.createDataFrame([(1, [1.0, 0.0])], "id int, features array<float>")

    assert top_unexcluded(queries, targets, 3, search=search).collect() == []
    assert nearest_neighbours(targets, 2, search).collect() == []


def test_top_unexcluded_scores_do_not_depend_on_how_queries_are_partitioned(spark):
    """A local run and a cluster run batch the same queries differently; their rankings and
    scores (compared to 6 places downstream) must agree."""
    import numpy as np

    rng = np.random.default_rng(11)
    targets = spark.createDataFrame([(i, rng.normal(size=48).astype(np.float32).tolist()) for i in range(700)],
                                    "id int, features array<float>")
    queries = spark.createDataFrame([(q, rng.normal(size=48).astype(np.float32).tolist()) for q in range(40)],
                                    "id int, features array<float>")

    def ranked(frame):
        rows = top_unexcluded(frame, targets, 10).collect()
        return {(r.id, r.rank): (r.target, r.score) for r in rows}

    together = ranked(queries.coalesce(1))  # one block of 40 rows
    apart = ranked(queries.repartition(40, "id"))  # mostly one row per partition
    assert together.keys() == apart.keys() and len(together) == 400
    assert {key: target for key, (target, _) in together.items()} == {key: target for key, (target, _) in apart.items()}
    assert max(abs(together[key][1] - apart[key][1]) for key in together) < 1e-12


def test_unseen_recommendations_are_exact_however_many_items_a_user_excludes(spark):
    import numpy as np

    rng = np.random.default_rng(7)
    n_users, n_items, k = 6, 240, 5
    rows = [(int(u), int(i), float(rng.uniform(1, 4))) for u in range(n_users)
            for i in rng.choice(n_items, 30, replace=False)]
    indexed = spark.createDataFrame(rows, "user_index int, item_index int, confidence float")
    model = A.fit_als(indexed, A.AlsParams(rank=6, reg_param=0.1, alpha=5.0, max_iter=3), seed=3)
    users = {r.id: np.array(r.features, dtype=np.float32) for r in model.userFactors.collect()}
    items = {r.id: np.array(r.features, dtype=np.float32) for r in model.itemFactors.collect()}
    ranked = {user: sorted(items, key=lambda item: (-float(users[user] @ items[item]), item)) for user in users}
    # Each user leaves out their own best items: none, a few, a hundred, all of them, all but two.
    excluded_counts = [0, 3, 17, 100, len(items), len(items) - 2]
    excluded = {user: ranked[user][:count] for user, count in enumerate(excluded_counts)}
    exclude = spark.createDataFrame([(u, i) for u, best in excluded.items() for i in best],
                                    "user_index int, item_index int")
    wanted = spark.createDataFrame([(u,) for u in range(n_users)] + [(n_users + 5,)], "user_index int")

    recs = A.recommend_unseen(model, wanted, exclude, k).collect()

    got = {}
    for r in recs:
        got.setdefault(r.user_index, []).append((r.rank, r.item_index))
    assert set(got) == set(range(n_users)) - {4}  # nothing left for user 4 or the unknown user
    for user, count in enumerate(excluded_counts):
        assert sorted(got.get(user, [])) == list(enumerate(ranked[user][count:count + k], start=1)), f"user {user}"
    assert len(got[n_users - 1]) == 2


def test_the_ivf_search_gives_the_exact_lists_when_every_list_is_probed_and_measures_its_recall(spark):
    import numpy as np

    rng = np.random.default_rng(9)
    rows = [(f"u{u}", f"i{i}", 1.0) for u in range(40) for i in rng.choice(120, 12, replace=False)]
    interactions = spark.createDataFrame(rows, "user_id string, item_id string, confidence double")
    everywhere = TargetSearch("ivf", lists=6, probes=6)
    recommender = A.train_recommender(interactions, A.AlsParams(rank=6, reg_param=0.1, alpha=5.0, max_iter=3),
                                      seed=4, search=everywhere)
    users, seen = interactions.select("user_id"), interactions.select("user_id", "item_id")

    def lists(frame, id_col="user_id", item_col="item_id"):
        return {(r[id_col], r["rank"]): r[item_col] for r in frame.collect()}

    exact = lists(recommender.recommend(users, seen, 5, TargetSearch()))
    assert lists(recommender.recommend(users, seen, 5)) == exact and len(exact) == 200
    assert lists(recommender.similar_items(3), "item_id", "similar_item_id") == lists(
        dataclasses.replace(recommender, search=TargetSearch()).similar_items(3), "item_id", "similar_item_id")
    assert A.search_recall(recommender, users, seen, 5, 1000, seed=1) == 1.0

    narrow = dataclasses.replace(recommender, search=TargetSearch("ivf", lists=6, probes=1))
    found = lists(narrow.recommend(users, seen, 5))
    shared = {(user, item) for (user, _), item in found.items()} & {(user, item) for (user, _), item in exact.items()}
    recall = A.search_recall(narrow, users, seen, 5, 1000, seed=1)
    assert recall == len(shared) / len(exact) < 1.0
    assert len(found) == 200  # every user still gets 5
    assert A.search_recall(dataclasses.replace(recommender, search=TargetSearch()), users, seen, 5, 1000, 1) is None


def test_als_recommends_unseen_items_of_similar_users(spark):
    # Two taste groups; u4 has seen only part of group one's items.
    rows = [(u, i, 1.0) for u in ("u1", "u2", "u3") for i in ("a", "b", "c", "d")]
    rows += [(u, i, 1.0) for u in ("v1", "v2", "v3") for i in ("x", "y", "z")]
    rows += [("u4", "a", 1.0), ("u4", "b", 1.0)]
    interactions = spark.createDataFrame(rows, "user_id string, item_id string, confidence double")
    recommender = A.train_recommender(interactions, A.AlsParams(rank=4, reg_param=0.01, alpha=10.0, max_iter=10), seed=1)
    seen = interactions.select("user_id", "item_id")
    recs = recommender.recommend(spark.createDataFrame([("u4",), ("nobody",)], "user_id string"), seen, 2).collect()
    assert [(r.user_id, r.rank) for r in recs] == [("u4", 1), ("u4", 2)]
    assert {r.item_id for r in recs} == {"c", "d"}
    similar = {(r.item_id, r.rank): r.similar_item_id for r in recommender.similar_items(1).collect()}
    assert similar[("x", 1)] in {"y", "z"}
    assert similar[("a", 1)] in {"b", "c", "d"}


def persisted_rdds(spark) -> dict[int, str]:
    """Every RDD the session holds persisted, by id, with its name (DataFrame caches included)."""
    entries = spark.sparkContext._jsc.sc().getPersistentRDDs().iterator()
    held = {}
    while entries.hasNext():
        entry = entries.next()
        held[entry._1()] = entry._2().name()
    return held


def small_interactions(spark):
    """Twelve users, three of nine items each: enough for a few-factor fit."""
    rows = [(f"u{u}", f"i{(u * 5 + j) % 9}", 1.0 + j) for u in range(12) for j in range(3)]
    return spark.createDataFrame(rows, "user_id string, item_id string, confidence double")


@pytest.mark.parametrize("solver", ["mllib", "cg"])
def test_a_released_als_recommender_leaves_nothing_cached_but_its_input(spark, solver):
    if solver == "cg":
        pytest.importorskip("implicit")
    interactions = small_interactions(spark).cache()
    interactions.count()
    before = persisted_rdds(spark)
    with CacheScope() as scope:
        # Twelve iterations: the lineage the release looks through has 2^24 paths for the CG solver.
        recommender = A.train_recommender(interactions, A.AlsParams(rank=3, reg_param=0.1, alpha=5.0, max_iter=12),
                                          seed=4, solver=A.AlsSolver(solver, blocks=2), scope=scope)
        assert len(recommender.recommend(interactions.select("user_id"), None, 2).collect()) == 24
        fitted = set(persisted_rdds(spark)) - set(before)
        # The id indices and both sides' factors.
        assert len(fitted) >= 4
    # Nothing the fit persisted is left (Spark's cleaner may meanwhile drop an earlier test's unreferenced RDD).
    assert set(persisted_rdds(spark)) <= set(before)
    assert interactions.storageLevel.useMemory, "releasing the model dropped the cache it was fitted from"
    interactions.unpersist()


def test_tuning_releases_every_grid_points_model(spark):
    train = small_interactions(spark)
    truth = spark.createDataFrame([(f"u{u}", f"i{(u + 4) % 9}") for u in range(12)], "user_id string, item_id string")
    before = set(persisted_rdds(spark))
    results = A.tune(train, truth, None, A.param_grid([2, 3], [0.1], [5.0], 2), 3, seed=1)
    assert [p.rank for p, _ in results] == [2, 3] and all(0 <= m["ndcg@3"] <= 1 for _, m in results)
    assert set(persisted_rdds(spark)) <= before


def test_tuning_releases_a_grid_points_model_when_scoring_it_fails(spark):
    train = small_interactions(spark)
    # No item column: the fit succeeds, scoring it against this truth cannot.
    truth = spark.createDataFrame([(f"u{u}", f"i{(u + 4) % 9}") for u in range(12)], "user_id string, product string")
    before = set(persisted_rdds(spark))
    with pytest.raises(Exception, match="item_id"):
        A.tune(train, truth, None, A.param_grid([2], [0.1], [5.0], 2), 3, seed=1)
    assert set(persisted_rdds(spark)) <= before


def test_best_params_picks_the_highest_metric():
    grid = A.param_grid([8, 16], [0.1], [1.0], 5)
    assert A.best_params([(grid[0], {"ndcg@10": 0.2}), (grid[1], {"ndcg@10": 0.3})], "ndcg@10") == grid[1]
    with pytest.raises(ValueError):
        A.best_params([], "ndcg@10")


def test_popular_items_overall_and_per_category(spark):
    items = spark.createDataFrame(
        [("a", "x", 10.0, 0.0, 0.0, 0.0), ("b", "x", 0.0, 0.0, 2.0, 0.0), ("c", "y", 5.0, 1.0, 0.0, 0.0),
         ("d", "y", 0.0, 0.0, 0.0, 0.0), ("e", "z", 0.0, 0.0, 0.0, 3.0)],
        "item_id string, category string, views_decayed double, carts_decayed double, purchases_decayed double, "
        "ratings_decayed double")
    popular = popular_items(items, {"view": 1.0, "cart": 4.0, "purchase": 10.0, "rating": 2.0}, top_k=2)
    got = sorted((r.scope, r.category or "", r.rank, r.item_id, r.score) for r in popular.collect())
    assert got == [("all", "", 1, "b", 20.0), ("all", "", 2, "a", 10.0),
                   ("category", "x", 1, "b", 20.0), ("category", "x", 2, "a", 10.0),
                   ("category", "y", 1, "c", 9.0), ("category", "z", 1, "e", 6.0)]
    users = spark.createDataFrame([("u1",)], "user_id string")
    seen = spark.createDataFrame([("u1", "b")], "user_id string, item_id string")
    recs = recommend_popular(popular.where(F.col("scope") == "all"), users, seen, 5).collect()
    assert [(r.rank, r.item_id) for r in recs] == [(1, "a")]


def test_popular_items_overall_ranking_breaks_ties_by_item_id_across_partitions(spark):
    # 40 items over 4 partitions, scores in tied pairs: the overall top 5 is merged from every
    # partition's own top and ranked by score, then by the smaller item id.
    rows = [(f"i{n:02d}", None, float(n // 2), 0.0, 0.0, 0.0) for n in range(40)]
    items = spark.createDataFrame(rows, "item_id string, category string, views_decayed double, "
                                  "carts_decayed double, purchases_decayed double, ratings_decayed double").repartition(4)
    popular = popular_items(items, {"view": 1.0}, top_k=5)
    overall = sorted((r["rank"], r.item_id, r.score) for r in popular.where(F.col("scope") == "all").collect())
    assert overall == [(1, "i38", 19.0), (2, "i39", 19.0), (3, "i36", 18.0), (4, "i37", 18.0), (5, "i34", 17.0)]
    assert popular.where(F.col("scope") == "category").count() == 0
    assert popular_items(items.limit(0), {"view": 1.0}, top_k=5).count() == 0


def test_baskets_rules_and_bought_together(spark):
    t = dt.datetime(2026, 1, 1, 10)
    events = spark.createDataFrame(
        [(u, i, "purchase", s, t) for u, s, items in (("u1", "s1", "ab"), ("u2", "s2", "abc"), ("u3", "s3", "ac"),
                                                      ("u4", "s4", "a"), ("u5", "s5", "bc"))
         for i in items] + [("u4", "z", "view", "s4", t)],
        "user_id string, item_id string, event_type string, session_id string, event_time timestamp")
    baskets = R.purchase_baskets(events, "session")
    assert sorted(r["items"] for r in baskets.collect()) == [["a", "b"], ["a", "b", "c"], ["a", "c"], ["b", "c"]]
    _, rules = R.mine_rules(baskets, min_support=0.5, min_confidence=0.6)
    got = {(tuple(r.antecedent), r.consequent[0]): (r.support, r.confidence, r.lift) for r in rules.collect()}
    # 4 baskets: a,b,c each in 3; ab, ac, bc each in 2 -> confidence 2/3, lift (2/3)/(3/4).
    assert set(got) == {(("a",), "b"), (("b",), "a"), (("a",), "c"), (("c",), "a"), (("b",), "c"), (("c",), "b")}
    assert got[(("a",), "b")] == (pytest.approx(0.5), pytest.approx(2 / 3), pytest.approx(8 / 9))
    together = [(r.item_id, r.rank, r.bought_with_item_id) for r in R.bought_together(rules, 1).orderBy("item_id").collect()]
    assert together == [("a", 1, "b"), ("b", 1, "a"), ("c", 1, "a")]
    history = spark.createDataFrame([("u9", "a")], "user_id string, item_id string")
    recs = R.recommend_from_rules(rules, history, history, 5).collect()
    assert [(r.rank, r.item_id) for r in recs] == [(1, "b"), (2, "c")]


def test_read_basket_lines_trims_and_deduplicates(spark, tmp_path):
    path = tmp_path / "baskets.csv"
    path.write_text("milk,bread ,milk\n\nbeer\n")
    got = [(r.basket_id, r["items"]) for r in R.read_basket_lines(spark, str(path)).orderBy("basket_id").collect()]
    assert got == [("0", ["bread", "milk"]), ("1", []), ("2", ["beer"])]


def test_content_similarity_follows_category_and_brand(spark):
    items = spark.createDataFrame(
        [("1", "audio.headphones", "sony"), ("2", "audio.headphones", "sony"), ("3", "audio.speakers", "sony"),
         ("4", "garden.tools", "bosch"), ("5", None, None)], "item_id string, category string, brand string")
    similar = content_similar_items(content_features(items, 64), 1)
    top = {r.item_id: r.similar_item_id for r in similar.collect()}
    assert top["1"] == "2" and top["2"] == "1"
    assert top["3"] in {"1", "2"}
    assert "5" not in top  # no catalogue words, no neighbours
    interactions = spark.createDataFrame([("u", "1", 3.0)], "user_id string, item_id string, confidence double")
    recs = recommend_by_content(interactions, similar, None, 3).collect()
    assert [r.item_id for r in recs] == ["2"]


def test_segments_separate_obvious_groups(spark):
    rows = [(f"light{i}", 30.0 + i, 0, 0.0, 2, 1, 1, 2.0, 0.0) for i in range(10)]
    rows += [(f"heavy{i}", 1.0, 20 + i, 500.0 + i, 200, 20, 30, 9.0, 0.1) for i in range(10)]
    profiles = spark.createDataFrame(rows, "user_id string, recency_days double, frequency long, monetary double, "
                                           "n_view long, active_days long, sessions long, events_per_session double, "
                                           "view_to_purchase double")
    segmented = assign_segments(fit_segments(profiles, 2, seed=7), profiles)
    by_group = {}
    for r in segmented.collect():
        by_group.setdefault(r.user_id.rstrip("0123456789"), set()).add(r.segment)
    assert len(by_group["light"]) == 1 and len(by_group["heavy"]) == 1 and by_group["light"] != by_group["heavy"]
    description = describe_segments(segmented)
    assert sorted(d["users"] for d in description) == [10, 10]


def test_stratified_split_is_per_user_and_deterministic(spark):
    rows = [(f"u{u}", f"i{i}") for u in range(5) for i in range(8)] + [("solo", "i0")]
    df = spark.createDataFrame(rows, "user_id string, item_id string")
    train, test = stratified_split(df, 0.75, seed=42)
    per_user = {r.user_id: r["count"] for r in train.groupBy("user_id").count().collect()}
    assert per_user == {**{f"u{u}": 6 for u in range(5)}, "solo": 1}
    assert test.count() == 10
    assert train.join(test, ["user_id", "item_id"]).count() == 0
    again, _ = stratified_split(df.repartition(3), 0.75, seed=42)
    assert sorted(map(tuple, again.collect())) == sorted(map(tuple, train.collect()))
    other, _ = stratified_split(df, 0.75, seed=7)
    assert sorted(map(tuple, other.collect())) != sorted(map(tuple, train.collect()))


def test_time_holdout_has_no_leakage(spark):
    def event(user, item, event_type, day):
        return (user, item, event_type, dt.datetime(2026, 1, day, 12), dt.date(2026, 1, day), None)

    events = spark.createDataFrame(
        [event("u1", "a", "view", 1), event("u1", "b", "purchase", 2), event("u1", "c", "purchase", 4),
         event("u1", "d", "view", 4), event("u2", "a", "purchase", 4), event("u1", "e", "purchase", 6)],
        "user_id string, item_id string, event_type string, event_time timestamp, event_date date, rating double")
    holdout = time_holdout(events, "2026-01-05", 2, ["cart", "purchase"], {"view": 1.0, "purchase": 5.0}, 10.0)
    assert holdout.cutoff == "2026-01-04"
    assert sorted((r.user_id, r.item_id) for r in holdout.train_interactions.collect()) == [("u1", "a"), ("u1", "b")]
    assert max(r.event_time for r in holdout.train_events.collect()) < dt.datetime(2026, 1, 4)
    # u2 has no history before the cut-off; the day-6 purchase is after the run date.
    assert [(r.user_id, r.item_id) for r in holdout.truth.collect()] == [("u1", "c")]
    assert [(r.user_id, r.item_id) for r in exclusions(holdout.train_interactions, "purchased").collect()] == [("u1", "b")]
    assert exclusions(holdout.train_interactions, "none") is None


def test_order_baskets_fall_back_to_sessions(spark):
    t = dt.datetime(2026, 1, 1, 10)
    events = spark.createDataFrame(
        [("u1", "a", "purchase", "s1", "o1", t), ("u1", "b", "purchase", "s2", "o1", t),
         ("u1", "c", "purchase", "s2", None, t), ("u1", "d", "purchase", "s2", None, t),
         ("u2", "e", "purchase", "s3", "o2", t)],
        "user_id string, item_id string, event_type string, session_id string, order_id string, event_time timestamp")
    baskets = sorted(r["items"] for r in R.purchase_baskets(events, "order").collect())
    assert baskets == [["a", "b"], ["c", "d"]]  # o2 has one item
    with pytest.raises(ValueError, match="kind must be one of"):
        R.purchase_baskets(events, "cart")
