"""Ranking and beyond-accuracy metrics against small cases worked out by hand."""

import math
import random

import pytest

from shoprec.evaluation.compare import compare_recommenders, comparison_table
from shoprec.evaluation.ranking import (ACCURACY_METRICS, beyond_accuracy_metrics, beyond_accuracy_reference,
                                       rank_by_score, ranking_metrics, ranking_metrics_at)
from shoprec.spark import CacheScope

TOLERANCE = 1e-9
LOG3 = math.log2(3)


@pytest.fixture(scope="module")
def recs_and_truth(spark):
    recs = spark.createDataFrame(
        [("a", "1", 1), ("a", "2", 2), ("a", "3", 3), ("a", "4", 4), ("b", "9", 1), ("b", "8", 2)],
        "user_id string, item_id string, rank int")
    truth = spark.createDataFrame(
        [("a", "2"), ("a", "4"), ("a", "5"), ("b", "9"), ("b", "9"), ("c", "7")], "user_id string, item_id string")
    return recs, truth


def test_metrics_over_users_in_both(recs_and_truth):
    # a: hit at rank 2 of 3 shown, 3 relevant; b: hit at rank 1 of a 2-item list, 1 relevant.
    ndcg_a = (1 / LOG3) / (1 + 1 / LOG3 + 0.5)
    metrics = ranking_metrics(*recs_and_truth, k=3)
    assert metrics["users"] == 2
    assert metrics["precision@3"] == pytest.approx((1 / 3 + 1 / 3) / 2, abs=TOLERANCE)
    assert metrics["recall@3"] == pytest.approx((1 / 3 + 1) / 2, abs=TOLERANCE)
    assert metrics["ndcg@3"] == pytest.approx((ndcg_a + 1) / 2, abs=TOLERANCE)
    assert metrics["map@3"] == pytest.approx(((1 / 2) / 3 + 1) / 2, abs=TOLERANCE)
    assert metrics["hit_rate@3"] == pytest.approx(1.0)


def test_users_without_recommendations_score_zero_when_counted(recs_and_truth):
    ndcg_a = (1 / LOG3) / (1 + 1 / LOG3 + 0.5)
    metrics = ranking_metrics(*recs_and_truth, k=3, require_recommendations=False)
    assert metrics["users"] == 3
    assert metrics["precision@3"] == pytest.approx(2 / 9, abs=TOLERANCE)
    assert metrics["ndcg@3"] == pytest.approx((ndcg_a + 1) / 3, abs=TOLERANCE)
    assert metrics["hit_rate@3"] == pytest.approx(2 / 3, abs=TOLERANCE)


def test_cut_off_ignores_items_past_k(recs_and_truth):
    # At K=1 user a's first item misses; b's hits.
    metrics = ranking_metrics(*recs_and_truth, k=1)
    assert metrics["precision@1"] == pytest.approx(0.5)
    assert metrics["map@1"] == pytest.approx(0.5)
    assert metrics["hit_rate@1"] == pytest.approx(0.5)


def test_one_pass_over_several_cut_offs_gives_each_cut_off_s_own_metrics(recs_and_truth):
    # a's list is 1,2,3,4 against {2,4,5}; b's is 9,8 against {9}; c has no list (scores zero).
    ndcg_a_at_4 = (1 / LOG3 + 1 / math.log2(5)) / (1 + 1 / LOG3 + 0.5)
    at = ranking_metrics_at(*recs_and_truth, ks=[4, 1, 3, 1], require_recommendations=False)
    assert sorted(at) == [1, 3, 4]
    assert at[4]["precision@4"] == pytest.approx((2 / 4 + 1 / 4) / 3, abs=TOLERANCE)
    assert at[4]["recall@4"] == pytest.approx((2 / 3 + 1) / 3, abs=TOLERANCE)
    assert at[4]["ndcg@4"] == pytest.approx((ndcg_a_at_4 + 1) / 3, abs=TOLERANCE)
    assert at[4]["map@4"] == pytest.approx(((1 / 2 + 2 / 4) / 3 + 1) / 3, abs=TOLERANCE)
    assert at[1]["hit_rate@1"] == pytest.approx(1 / 3, abs=TOLERANCE)
    assert all(metrics["users"] == 3 for metrics in at.values())
    for k in (1, 3, 4):
        alone = ranking_metrics(*recs_and_truth, k=k, require_recommendations=False)
        assert at[k] == pytest.approx(alone, abs=TOLERANCE)


def test_the_metrics_equal_spark_s_ranking_evaluator_on_random_lists(spark):
    """Lists of random length (some empty, some repeating an item) against random held-out sets:
    every accuracy metric at every cut-off is the value RankingEvaluator gives for it."""
    from pyspark.ml.evaluation import RankingEvaluator

    rng = random.Random(11)
    recs, truth, lists = [], [], {}
    for user in range(60):
        ranked = [str(rng.randrange(25)) for _ in range(rng.randrange(13))]
        relevant = {str(rng.randrange(25)) for _ in range(1 + rng.randrange(6))}
        recs += [(f"u{user}", item, rank) for rank, item in enumerate(ranked, start=1)]
        truth += [(f"u{user}", item) for item in relevant]
        lists[f"u{user}"] = (ranked, relevant)
    ks = [1, 3, 5, 10]
    at = ranking_metrics_at(spark.createDataFrame(recs, "user_id string, item_id string, rank int"),
                            spark.createDataFrame(truth, "user_id string, item_id string"), ks,
                            require_recommendations=False)
    per_user = spark.createDataFrame(
        [([float(i) for i in ranked], [float(i) for i in relevant]) for ranked, relevant in lists.values()],
        "prediction array<double>, label array<double>")
    for k in ks:
        assert at[k]["users"] == 60
        for name, spark_name in ACCURACY_METRICS.items():
            expected = RankingEvaluator(metricName=spark_name, k=k).evaluate(per_user)
            assert at[k][f"{name}@{k}"] == pytest.approx(expected, abs=TOLERANCE), (name, k)


@pytest.mark.parametrize("ks", [[], [3, 0]])
def test_no_cut_off_or_a_cut_off_below_one_is_refused_with_a_message(recs_and_truth, ks):
    with pytest.raises(ValueError, match="cut-offs must be one or more positive integers"):
        ranking_metrics_at(*recs_and_truth, ks=ks)


def test_beyond_accuracy(spark):
    recs = spark.createDataFrame(
        [("a", "1", 1), ("a", "2", 2), ("a", "3", 3), ("b", "1", 1), ("b", "4", 2)],
        "user_id string, item_id string, rank int")
    catalogue = spark.createDataFrame(
        [("1", "x"), ("2", "x"), ("3", "y"), ("4", None), ("5", "y"), ("6", "z"), ("7", "z"), ("8", "z")],
        "item_id string, category string")
    training = spark.createDataFrame(
        [("u1", "1"), ("u2", "1"), ("u3", "1"), ("u4", "1"), ("u1", "2"), ("u2", "3")],
        "user_id string, item_id string")
    metrics = beyond_accuracy_metrics(recs, 3, catalogue, training)
    assert metrics["coverage@3"] == pytest.approx(4 / 8)
    # a: pairs (1,2) same, (1,3) and (2,3) differ -> 2/3; b: item 4 has no category -> 1.
    assert metrics["diversity@3"] == pytest.approx((2 / 3 + 1) / 2)
    # p(1)=4/4, p(2)=1/4, p(3)=1/4, p(4)=unseen -> 1/4; five recommended slots.
    assert metrics["novelty@3"] == pytest.approx((0 + 2 + 2 + 0 + 2) / 5)
    # Counted once for several models, the reference gives every model the same values.
    with CacheScope() as scope:
        reference = beyond_accuracy_reference(catalogue, training, scope)
        assert (reference.catalogue_size, reference.training_users) == (8, 4)
        assert beyond_accuracy_metrics(recs, 3, reference=reference) == metrics
    with pytest.raises(ValueError, match="either catalogue and training, or their reference"):
        beyond_accuracy_metrics(recs, 3, catalogue)


def test_rank_by_score_breaks_ties_by_item(spark):
    scored = spark.createDataFrame(
        [("a", "z", 0.5), ("a", "b", 0.5), ("a", "c", 0.9), ("b", "q", 0.1)], "user_id string, item_id string, score double")
    ranked = [tuple(r) for r in rank_by_score(scored, 2).orderBy("user_id", "rank").collect()]
    assert ranked == [("a", 1, "c", 0.9), ("a", 2, "b", 0.5), ("b", 1, "q", 0.1)]


def test_compare_recommenders_averages_every_model_over_all_held_out_users(recs_and_truth, spark):
    recs, truth = recs_and_truth
    recs.cache()
    only_a = recs.where("user_id = 'a'")
    training = spark.createDataFrame([("u1", "1"), ("u2", "9")], "user_id string, item_id string")
    catalogue = spark.createDataFrame([(str(i), "x") for i in range(1, 10)], "item_id string, category string")
    try:
        rows = compare_recommenders({"both": recs, "only_a": only_a}, truth, training, catalogue, k=3, ks=[1])
        value = {(r["model"], r["metric"], r["k"]): r["value"] for r in rows}
        # Three held-out users (a, b, c) for both models: a user a model cannot serve scores zero.
        assert value[("both", "precision", 3)] == pytest.approx(2 / 9, abs=TOLERANCE)
        assert value[("only_a", "precision", 3)] == pytest.approx(1 / 9, abs=TOLERANCE)
        assert value[("both", "hit_rate", 1)] == pytest.approx(1 / 3, abs=TOLERANCE)
        assert value[("only_a", "hit_rate", 1)] == 0.0
        assert value[("both", "users_served", 3)] == 2.0
        assert value[("only_a", "users_served", 3)] == 1.0
        assert value[("only_a", "coverage", 3)] == pytest.approx(3 / 9, abs=TOLERANCE)
        assert comparison_table(rows, 1) == [
            {"model": "both", **{f"{m}@1": pytest.approx(value[("both", m, 1)], abs=1e-5)
                                 for m in ("precision", "recall", "ndcg", "map", "hit_rate")}},
            {"model": "only_a", **{f"{m}@1": pytest.approx(value[("only_a", m, 1)], abs=1e-5)
                                   for m in ("precision", "recall", "ndcg", "map", "hit_rate")}},
        ]
        # The caller's cache is the caller's: still there after the comparison; nothing else is left cached.
        assert recs.storageLevel.useMemory
        assert not only_a.storageLevel.useMemory
    finally:
        recs.unpersist()
