"""Text matching of queries to catalogue items (the first stage of search_rerank), search_rerank's
orders, and which search ranker it serves."""

from pathlib import Path

import pytest
from pyspark.sql import functions as F

from shoprec.models import search as Q

ITEMS = [("1", "electronics.audio.headphones", "sony"), ("2", "electronics.audio.headphones", "bose"),
         ("3", "electronics.tv", "sony"), ("4", "electronics.audio.speakers", "sony"),
         ("5", "kitchen.kettles", "bosch"), ("6", "electronics.audio.headphones", "sony")]


def catalogue(spark):
    return Q.item_words(spark.createDataFrame(ITEMS, "item_id string, category string, brand string"))


def searches(spark, rows):
    return spark.createDataFrame(rows, "search_id string, user_id string, query string")


def test_words_split_category_paths_and_drop_short_words(spark):
    row = spark.createDataFrame([("Electronics.Audio/HEAD-phones  a Sony sony",)], "t string").select(
        Q.words(F.col("t")).alias("w")).first()
    assert row.w == ["electronics", "audio", "head", "phones", "sony"]
    assert sorted(r.token for r in catalogue(spark).where(F.col("item_id") == "5").collect()) == ["bosch", "kettles", "kitchen"]


def test_every_query_word_matches_and_rare_words_weigh_more(spark):
    got = Q.match_items(searches(spark, [("s1", "u", "Sony headphones"), ("s2", "u", "sony")]), catalogue(spark),
                        min_match=1.0, max_matches=10)
    by_search = {}
    for r in got.collect():
        by_search.setdefault(r.search_id, {})[r.item_id] = r.text_score
    assert set(by_search["s1"]) == {"1", "6"}  # Sony and headphones; not Bose headphones, not a Sony TV
    assert all(abs(v - 1.0) < 1e-9 for v in by_search["s1"].values())
    assert set(by_search["s2"]) == {"1", "3", "4", "6"}

    partial = {r.item_id: r.text_score for r in Q.match_items(
        searches(spark, [("s1", "u", "sony headphones")]), catalogue(spark), min_match=0.3, max_matches=10).collect()}
    assert set(partial) == {"1", "2", "3", "4", "6"}
    # "headphones" (3 items) is rarer than "sony" (4 items): Bose headphones beat a Sony TV.
    assert partial["2"] > partial["3"] and partial["1"] == partial["6"] == 1.0


def test_best_tier_when_no_item_has_every_word_and_no_rows_for_unknown_words(spark):
    got = Q.match_items(searches(spark, [("s1", "u", "bose speakers"), ("s2", "u", "xyzzy"), ("s3", "u", "bosch headphones")]),
                        catalogue(spark), min_match=1.0, max_matches=10)
    rows = got.collect()
    # No Bose speakers: the best partial matches (equally rare words, one item each) are returned, below 1.
    assert {r.item_id for r in rows if r.search_id == "s1"} == {"2", "4"}
    # "bosch" (one item) is rarer than "headphones" (three): the Bosch item is the best partial match.
    assert {r.item_id for r in rows if r.search_id == "s3"} == {"5"}
    assert all(r.text_score < 1.0 for r in rows)
    assert not [r for r in rows if r.search_id == "s2"]


def test_max_matches_keeps_the_most_popular_of_equal_text_score(spark):
    popularity = spark.createDataFrame([("1", 1.0), ("6", 5.0), ("4", 9.0), ("3", 0.5)], "item_id string, score double")
    got = Q.match_items(searches(spark, [("s1", "u", "sony")]), catalogue(spark), 1.0, 2, popularity)
    assert [(r.item_id, r.text_rank) for r in got.orderBy("text_rank").collect()] == [("4", 1), ("6", 2)]


def test_catalogue_matches_follow_the_search_config_and_the_weighted_popularity(spark, make_config):
    # Among the four Sony items, views alone favour item 3 and purchases item 6: with purchases
    # weighing 10 views (conf/base.yaml), 6 and then 1 are the two kept.
    funnel = {"1": (30.0, 3.0), "3": (50.0, 0.0), "4": (5.0, 0.0), "6": (1.0, 6.0)}
    profile = spark.createDataFrame(
        [(item, category, brand, *funnel.get(item, (0.0, 0.0)), 0.0, None) for item, category, brand in ITEMS],
        "item_id string, category string, brand string, views_decayed double, purchases_decayed double, "
        "carts_decayed double, ratings_decayed double")
    cfg = make_config(SEARCH__MAX_MATCHES="2", SEARCH__MIN_MATCH="1.0")
    got = Q.catalogue_matches(cfg, searches(spark, [("s1", "u", "sony"), ("s2", "u", "bose headphones")]), profile)
    assert sorted((r.search_id, r.text_rank, r.item_id) for r in got.collect()) == [
        ("s1", 1, "6"), ("s1", 2, "1"), ("s2", 1, "2")]
    views_only = make_config(SEARCH__MAX_MATCHES="2", PROFILES__INTERACTION_WEIGHTS="{view: 1.0}")
    got = Q.catalogue_matches(views_only, searches(spark, [("s1", "u", "sony")]), profile)
    assert [r.item_id for r in got.orderBy("text_rank").collect()] == ["3", "1"]


def test_searches_with_the_same_words_get_the_same_matches_whoever_searched(spark):
    got = Q.match_items(searches(spark, [("s1", "u1", "Sony headphones"), ("s2", "u2", "headphones  SONY sony"),
                                         ("s3", "u3", "a"), ("s4", "u4", "sony")]), catalogue(spark), 1.0, 10)
    by_search = {}
    for r in got.collect():
        by_search.setdefault((r.search_id, r.user_id), []).append((r.item_id, r.text_score, r.text_rank))
    assert set(by_search) == {("s1", "u1"), ("s2", "u2"), ("s4", "u4")}  # "a" has no word of two letters
    assert sorted(by_search[("s1", "u1")]) == sorted(by_search[("s2", "u2")])
    assert {item for item, _, _ in by_search[("s1", "u1")]} == {"1", "6"}
    assert "_query_key" not in got.columns


def test_fused_order_moves_from_the_text_order_to_the_rankers_with_its_weight(spark):
    from shoprec.jobs.search_rerank import RRF_K, fused_order

    # One search, four matches: the text order is a, b, c, d; the ranker's is d, c, b, a.
    scored = spark.createDataFrame(
        [("s", "a", 1.0, 1, 0.1), ("s", "b", 1.0, 2, 0.2), ("s", "c", 1.0, 3, 0.3), ("s", "d", 1.0, 4, 0.9)],
        "search_id string, item_id string, text_score double, text_rank int, score double")

    def order(weight, top_k=4):
        rows = fused_order(scored, weight, top_k).orderBy("rank").collect()
        assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
        return [r["item_id"] for r in rows]

    assert order(0.0) == ["a", "b", "c", "d"]
    assert order(1.0) == ["d", "c", "b", "a"]
    # Equal weights: a and d (first in one order, last in the other) tie above b and c, and the
    # text order breaks the tie.
    assert order(0.5) == ["a", "d", "b", "c"]
    # Between: the fused scores computed here from the two ranks, ties to the text order.
    ranks = {"a": (1, 4), "b": (2, 3), "c": (3, 2), "d": (4, 1)}   # item: (text rank, ranker rank)
    for weight in (0.3, 0.7):
        fused = {item: weight / (RRF_K + ranker) + (1 - weight) / (RRF_K + text)
                 for item, (text, ranker) in ranks.items()}
        assert order(weight) == sorted(ranks, key=lambda item: (-fused[item], ranks[item][0]))
    assert order(0.3, top_k=2) == order(0.3)[:2]
    with pytest.raises(ValueError, match="ranker_weight"):
        fused_order(scored, 1.5, 4)


def test_learned_order_ranks_by_the_search_rankers_score_then_the_text_order(spark):
    from shoprec.jobs.search_rerank import learned_order

    scored = spark.createDataFrame(
        [("s", "a", 1.0, 1, 0.1), ("s", "b", 1.0, 2, 0.7), ("s", "c", 0.5, 3, 0.7), ("s", "d", 0.5, 4, 0.9),
         ("t", "a", 1.0, 1, 0.2)],
        "search_id string, item_id string, text_score double, text_rank int, score double")
    rows = learned_order(scored, 3).orderBy("search_id", "rank").collect()
    assert [(r.search_id, r.rank, r.item_id) for r in rows] == [("s", 1, "d"), ("s", 2, "b"), ("s", 3, "c"),
                                                                ("t", 1, "a")]


def test_followed_searches_take_the_items_acted_on_after_the_search_until_the_next_one(spark):
    import datetime as dt

    def at(minute):
        return dt.datetime(2026, 5, 5, 10, minute)

    events = spark.createDataFrame([
        ("e1", "u", None, "search", at(0), "s1", "sony headphones"),
        ("e2", "u", "1", "view", at(1), "s1", None),
        ("e3", "u", "2", "cart", at(2), "s1", None),
        ("e4", "u", None, "search", at(3), "s1", "bose"),
        ("e5", "u", "3", "view", at(4), "s1", None),
        ("e6", "u", "4", "remove_from_cart", at(5), "s1", None),   # not a follow-up type
        ("e7", "u", "5", "view", at(6), "s2", None),               # another session
        ("e8", "v", None, "search", at(0), "s3", "kettle"),        # never followed
        ("e9", "w", None, "search", dt.datetime(2026, 5, 4, 9), "s4", "tv"),   # before `since`
        ("e10", "w", "6", "view", dt.datetime(2026, 5, 4, 9, 1), "s4", None),
    ], "event_id string, user_id string, item_id string, event_type string, event_time timestamp, "
       "session_id string, query string")
    searches, followups = Q.followed_searches(events, "2026-05-05", ["view", "cart", "purchase"])
    assert sorted((r.search_id, r.user_id, r.query) for r in searches.collect()) == [
        ("e1", "u", "sony headphones"), ("e4", "u", "bose")]
    assert sorted((r.search_id, r.item_id) for r in followups.collect()) == [("e1", "1"), ("e1", "2"), ("e4", "3")]


def test_the_newest_search_ranker_serves_only_where_it_beat_the_text_order(make_config, tmp_path):
    import json as json_

    from shoprec.jobs.search_rerank import SearchOrder, search_order
    from shoprec.jobs.train_ranker import SEARCH_VALIDATION, search_verdict

    cfg = make_config(RANKER__MODELS_ROOT=str(tmp_path / "models"), SEARCH__RANKER_WEIGHT="0.25")
    assert search_order(cfg, "2026-01-10") == SearchOrder(None, 0.25, "none: no search ranker trained; the fused order")

    def trained(date: str, model_ndcg: float, text_ndcg: float | None) -> Path:
        root = tmp_path / "models" / "search_ranker" / date
        (root / "model").mkdir(parents=True)
        if text_ndcg is not None:
            verdict = search_verdict({"best_val_ndcg": model_ndcg, "reference_val_ndcg": text_ndcg})
            (root / SEARCH_VALIDATION).write_text(json_.dumps(verdict))
        return root

    winner = trained("2026-01-05", 0.41, 0.39)
    assert search_order(cfg, "2026-01-06") == SearchOrder(winner, 0.25, str(winner))
    # A newer model that lost to the text order: the text order serves (the fused order at
    # weight 0), and the older winner is not brought back.
    loser = trained("2026-01-07", 0.37, 0.39)
    order = search_order(cfg, "2026-01-08")
    assert (order.model, order.ranker_weight) == (None, 0.0)
    assert order.why.startswith(f"none: {loser} scored below the text order") and "0.3700 against 0.3900" in order.why
    # Before the loser was trained, the winner is the newest.
    assert search_order(cfg, "2026-01-06").model == winner
    # A model saved without a verdict is served as before.
    unjudged = trained("2026-01-09", 0.1, None)
    assert search_order(cfg, "2026-01-09").model == unjudged
    off = make_config(RANKER__MODELS_ROOT=str(tmp_path / "models"), SEARCH__RANKER_WEIGHT="0.25",
                      SEARCH__LEARNED="false")
    assert search_order(off, "2026-01-09") == SearchOrder(None, 0.25, "none: search.learned is off; the fused order")


def test_a_search_ranker_that_cannot_be_compared_is_served():
    from shoprec.jobs.train_ranker import search_verdict

    nan = float("nan")
    assert search_verdict({"best_val_ndcg": 0.4, "reference_val_ndcg": 0.39})["served"]
    assert not search_verdict({"best_val_ndcg": 0.39, "reference_val_ndcg": 0.39})["served"]  # a tie: the text order
    assert not search_verdict({"best_val_ndcg": nan, "reference_val_ndcg": 0.39})["served"]
    assert search_verdict({"best_val_ndcg": 0.1, "reference_val_ndcg": nan})["served"]
    assert search_verdict({"best_val_ndcg": 0.1})["served"]
