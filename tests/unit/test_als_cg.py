"""Implicit ALS by blocked conjugate gradient: each half-iteration solves the same normal equations
as an exact solver would, whatever the blocks, and the result is an ordinary MLlib ALSModel."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.ml.recommendation import ALSModel
from pyspark.sql import functions as F

from shoprec.models.als_cg import (CHECKPOINT_EVERY, Message, Side, blocks_of, completing_rows, fit_als_cg,
                                   half_step, initial_factors, message_to, received_rows_and_missing_gram)

RANK, REG, ALPHA = 4, 0.5, 3.0


@pytest.fixture(scope="module")
def interactions(spark):
    rng = np.random.default_rng(3)
    users = rng.integers(0, 40, 400)
    items = (rng.pareto(1.2, 400) * 4).astype(int) % 25
    strength = rng.random(400) + 0.5
    rows = [(int(u), int(i), float(s)) for u, i, s in zip(users, items, strength)]
    return spark.createDataFrame(rows, "user_index int, item_index int, confidence float")


def factors_of(df) -> dict[int, np.ndarray]:
    return {r.id: np.asarray(r.features, dtype=np.float64) for r in df.collect()}


def exact_half_step(confidence: dict, other: dict[int, np.ndarray], rows: list[int]) -> dict[int, np.ndarray]:
    """Each row's exact least-squares solution given the other side's factors (Hu et al.)."""
    gram = sum(np.outer(v, v) for v in other.values())
    solved = {}
    for row in rows:
        a, b = gram + REG * np.eye(RANK), np.zeros(RANK)
        for col, c in confidence[row].items():
            a += (c - 1) * np.outer(other[col], other[col])
            b += c * other[col]
        solved[row] = np.linalg.solve(a, b)
    return solved


def test_converged_half_steps_match_the_exact_solution_with_any_number_of_blocks(spark, interactions):
    pairs = interactions.groupBy("user_index", "item_index").agg(F.sum("confidence").alias("s")).collect()
    by_user, by_item = {}, {}
    for r in pairs:
        c = float(np.float32(1 + ALPHA * r.s))
        by_user.setdefault(r.user_index, {})[r.item_index] = c
        by_item.setdefault(r.item_index, {})[r.user_index] = c
    user_ids = np.array(sorted(by_user))
    start = dict(zip(user_ids.tolist(), initial_factors(user_ids, RANK, 11).astype(np.float64)))
    # One iteration updates the items from the starting user factors, then the users from those items.
    items = exact_half_step(by_item, start, sorted(by_item))
    users = exact_half_step(by_user, items, sorted(by_user))
    for blocks in (1, 3):
        model = fit_als_cg(interactions, RANK, REG, ALPHA, max_iter=1, seed=11, blocks=blocks, cg_steps=40)
        got_items, got_users = factors_of(model.itemFactors), factors_of(model.userFactors)
        assert set(got_items) == set(items) and set(got_users) == set(users)
        assert max(np.abs(got_items[i] - items[i]).max() for i in items) < 1e-3
        assert max(np.abs(got_users[u] - users[u]).max() for u in users) < 1e-3 * max(
            np.abs(v).max() for v in users.values())


def test_the_result_is_an_mllib_model_that_recommends(spark, interactions):
    model = fit_als_cg(interactions, RANK, REG, ALPHA, max_iter=3, seed=5, blocks=2)
    assert isinstance(model, ALSModel) and model.rank == RANK
    assert model.getUserCol() == "user_index" and model.getItemCol() == "item_index"
    recs = model.recommendForUserSubset(interactions.select("user_index").distinct().limit(3), 5).collect()
    assert len(recs) == 3 and all(len(r.recommendations) == 5 for r in recs)
    scored = model.transform(interactions.limit(5)).collect()
    assert all(np.isfinite(r.prediction) for r in scored)


def test_checkpointing_the_factors_leaves_the_result_unchanged(spark, interactions, tmp_path):
    plain = fit_als_cg(interactions, RANK, REG, ALPHA, max_iter=CHECKPOINT_EVERY, seed=4, blocks=2)
    # The shared session's checkpoint directory (an Option, usually None) is put back as it was,
    # so that no later test checkpoints.
    jvm_context = spark.sparkContext._jsc.sc()
    before = jvm_context.checkpointDir()
    spark.sparkContext.setCheckpointDir(str(tmp_path / "checkpoints"))
    try:
        checkpointed = fit_als_cg(interactions, RANK, REG, ALPHA, max_iter=CHECKPOINT_EVERY, seed=4, blocks=2)
    finally:
        getattr(jvm_context, "checkpointDir_$eq")(before)
    assert spark.sparkContext.getCheckpointDir() == (before.get() if before.isDefined() else None)
    assert any((tmp_path / "checkpoints").rglob("part-*")), "no factors were checkpointed"
    for plain_factors, checkpointed_factors in ((plain.userFactors, checkpointed.userFactors),
                                                (plain.itemFactors, checkpointed.itemFactors)):
        expected, got = factors_of(plain_factors), factors_of(checkpointed_factors)
        assert set(got) == set(expected)
        assert all(np.array_equal(got[i], expected[i]) for i in expected)


def test_completing_rows_supply_the_gram_matrix_of_the_rows_a_block_lacks():
    rng = np.random.default_rng(0)
    everything = rng.random((30, 5)).astype(np.float32)
    lacking = everything[9:].astype(np.float64)
    rows = completing_rows(lacking.T @ lacking)
    together = np.vstack([everything[:9], rows]).astype(np.float64)
    full = everything.astype(np.float64).T @ everything.astype(np.float64)
    assert rows.shape == (5, 5)
    assert np.allclose(together.T @ together, full, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("sent", [[], [2], [0, 3, 4, 5, 6, 7, 8, 9, 10], list(range(11))])
def test_a_message_carries_the_rows_sent_and_the_gram_matrix_of_the_others(sent):
    rng = np.random.default_rng(1)
    factors = rng.random((11, 3)).astype(np.float32)
    sent = np.array(sent, dtype=np.int64)
    full = factors.astype(np.float64).T @ factors.astype(np.float64)
    got = message_to(7, factors, sent if len(sent) else None, full)
    others = np.delete(factors, sent, axis=0).astype(np.float64)
    assert got.sender == 7 and np.array_equal(got.rows, factors[sent])
    assert np.allclose(got.unsent_gram, others.T @ others, atol=1e-9)


def test_a_block_refuses_to_solve_unless_each_sending_block_sent_one_message():
    gram = np.eye(2)
    messages = [Message(2, np.ones((1, 2), np.float32), gram), Message(0, np.zeros((2, 2), np.float32), 2 * gram)]
    rows, missing = received_rows_and_missing_gram(messages, [0, 2], block=1)
    assert [len(r) for r in rows] == [2, 1] and np.array_equal(missing, 3 * gram)
    for wrong in (messages[:1], messages + messages[:1]):
        with pytest.raises(RuntimeError, match="ALS block 1 heard from blocks"):
            received_rows_and_missing_gram(wrong, [0, 2], block=1)


def test_the_cg_solver_serves_shop_ids_like_the_mllib_one(spark):
    from shoprec.models import als as A

    rows = [(f"u{u}", f"i{(u * 7 + j) % 12}", 1.0 + j) for u in range(20) for j in range(4)]
    interactions = spark.createDataFrame(rows, "user_id string, item_id string, confidence double")
    params = A.AlsParams(rank=4, reg_param=0.1, alpha=5.0, max_iter=4)
    recommender = A.train_recommender(interactions, params, seed=2, solver=A.AlsSolver("cg", blocks=2))
    recs = recommender.recommend(interactions.select("user_id").distinct(), interactions, 3).collect()
    assert {r.user_id for r in recs} == {f"u{u}" for u in range(20)}
    seen = {(r[0], r[1]) for r in rows}
    assert all((r.user_id, r.item_id) not in seen for r in recs)
    similar = recommender.similar_items(2).collect()
    assert len(similar) == 24 and all(r.item_id != r.similar_item_id for r in similar)


def test_a_half_step_that_loses_a_blocks_factors_fails_naming_the_blocks(spark, interactions):
    pairs = interactions.select(F.col("user_index").alias("u"), F.col("item_index").alias("i"), "confidence")
    users = blocks_of(pairs, "u", "i", 2, RANK, 1)
    items = blocks_of(pairs, "i", "u", 2, RANK, 2)
    assert users.blocks_with_rows == [0, 1] and items.blocks_with_rows == [0, 1]
    # Block 1's factors vanish (filter keeps the partitioning, so the half-step still runs).
    without_block_1 = Side(items.factors.filter(lambda keyed: keyed[0] != 1), items.ratings, items.blocks_with_rows)
    with pytest.raises(RuntimeError, match=r"solved 1 blocks, expected 2 \(blocks \[0, 1\]\)"):
        half_step(without_block_1, users, 2, REG, 3)
    solved = half_step(items, users, 2, REG, 3)
    assert sorted(solved.factors.keys().collect()) == [0, 1]
    for side in (users, solved):
        side.factors.unpersist()
        side.ratings.unpersist()
