"""The training loop's pieces that need no Horovod: per-user nDCG, user-keeping batch order, the
listwise loss, and reading a split's user groups."""

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shoprec.models.ranker.train import (listwise_loss, ndcg_per_user, read_split, reference_ndcg, segments_of,
                                         user_batches_order)

tf = pytest.importorskip("tensorflow")


def test_ndcg_per_user_averages_over_users_with_a_positive():
    groups = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    labels = np.array([1, 0, 0, 0, 1, 0, 0, 0], dtype="float32")
    scores = np.array([0.9, 0.1, 0.2, 0.5, 0.4, 0.1, 0.2, 0.3])
    # user 0: its positive first (1.0); user 1: its positive second (1/log2(3)); user 2 has none.
    assert ndcg_per_user(groups, labels, scores) == pytest.approx((1.0 + 1 / math.log2(3)) / 2)
    # Only the top k count: with k = 1, user 1's positive in second place earns nothing.
    assert ndcg_per_user(groups, labels, scores, k=1) == pytest.approx(0.5)
    assert math.isnan(ndcg_per_user(groups, np.zeros(8), scores))


def test_ndcg_per_user_ideal_list_caps_at_k():
    groups = np.zeros(4, dtype=int)
    labels = np.array([1, 1, 1, 0], dtype="float32")
    scores = np.array([0.1, 0.9, 0.8, 0.95])  # the negative first, then two positives
    dcg = 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_per_user(groups, labels, scores, k=3) == pytest.approx(dcg / (1 + 1 / math.log2(3) + 1 / math.log2(4)))
    assert ndcg_per_user(groups, labels, scores, k=2) == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))


def test_reference_ndcg_scores_the_spec_reference_feature_ascending():
    # Two searches; the dense columns are (text_score, text_rank), text_rank standardised (so it
    # is negative for the best matches): ascending it is the text order.
    spec = {"dense": ["text_score", "text_rank"], "reference_order": "text_rank"}
    groups = np.array([0, 0, 0, 1, 1])
    dense = np.array([[0.0, 0.5], [0.0, -1.0], [0.0, 0.1], [0.0, 2.0], [0.0, -0.3]], dtype="float32")
    labels = np.array([1, 0, 0, 1, 0], dtype="float32")
    # Search 0: text order rows 1, 2, 0, its positive third; search 1: rows 4, 3, its positive second.
    expected = (1 / math.log2(4) + 1 / math.log2(3)) / 2
    assert reference_ndcg(spec, {"dense": dense}, labels, groups) == pytest.approx(expected)
    # A spec without a reference order, or no validation rows: nothing to compare with.
    assert math.isnan(reference_ndcg({"dense": spec["dense"]}, {"dense": dense}, labels, groups))
    assert math.isnan(reference_ndcg(spec, None, None, None))


def test_user_batches_order_is_a_permutation_that_keeps_users_together():
    groups = np.repeat(np.arange(50), np.random.default_rng(0).integers(1, 9, 50)).astype("int32")
    orders = [user_batches_order(groups, np.random.default_rng(seed)) for seed in (1, 2)]
    for order in orders:
        assert sorted(order.tolist()) == list(range(len(groups)))
        reordered = groups[order]
        runs = reordered[np.concatenate([[True], reordered[1:] != reordered[:-1]])]
        assert len(runs) == len(set(runs.tolist())) == 50  # each user one contiguous run
    assert not np.array_equal(*orders)  # the users' order is shuffled
    assert segments_of(np.array([7, 7, 3, 3, 3, 9])).tolist() == [0, 0, 1, 1, 1, 2]


def test_listwise_loss_is_the_mean_softmax_cross_entropy_of_users_with_positives():
    tf.config.experimental.enable_op_determinism()
    labels = np.array([1, 0, 0, 0, 1, 0, 0, 1, 1], dtype="float32")
    logits = np.array([0.9, 0.1, 0.2, 0.5, 0.4, 0.1, 0.2, 0.3, -1.0], dtype="float32")
    segments = np.array([0, 0, 0, 1, 1, 2, 2, 3, 3], dtype="int32")

    def log_softmax(x):
        return x - np.log(np.exp(x).sum())

    expected = np.mean([-log_softmax(logits[:3])[0],
                        -log_softmax(logits[3:5])[1],
                        -(log_softmax(logits[7:9])).sum() / 2])  # two positives share the target
    # More segment slots than segments (a batch's fixed size): the empty ones change nothing.
    loss = listwise_loss(tf.constant(labels), tf.constant(logits), tf.constant(segments), 16)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    with tf.GradientTape() as tape:
        variable = tf.Variable(logits)
        value = listwise_loss(tf.constant(labels), variable, tf.constant(segments), 16)
    gradient = tape.gradient(value, variable).numpy()
    assert np.all(np.isfinite(gradient))
    assert np.allclose(gradient[5:7], 0.0)  # user 2 has no positive: no signal
    assert gradient[0] < 0 < gradient[1]    # the positive pushed up, the negatives down


def test_read_split_numbers_users_in_row_order(tmp_path):
    root = tmp_path / "set"
    (root / "split=validation" / "shard=0").mkdir(parents=True)
    pq.write_table(pa.table({"user_id": ["b", "a", "b", "c", "a"], "item_id": ["2", "1", "1", "1", "2"],
                             "user_bucket": pa.array([1, 2, 1, 3, 2], pa.int32()),
                             "dense": [[0.5], [1.0], [0.0], [2.0], [1.5]], "label": [1.0, 0.0, 0.0, 1.0, 1.0]}),
                   root / "split=validation" / "shard=0" / "part-0.parquet")
    (root / "_feature_spec.json").write_text(json.dumps({"categorical": {"user_bucket": 4}, "dense": ["x"]}))
    features, labels, groups = read_split(str(root), "validation")
    assert groups.tolist() == [0, 0, 1, 1, 2]  # a, a, b, b, c
    assert labels.tolist() == [0.0, 1.0, 0.0, 1.0, 1.0]  # sorted by user, then item
    assert features["dense"][:, 0].tolist() == [1.0, 1.5, 0.0, 0.5, 2.0]
    assert read_split(str(root), "train") == (None, None, None)


def test_read_split_groups_by_search_when_the_spec_says_so(tmp_path):
    """The search ranker's examples: one list per search, so two searches of one user are two groups."""
    root = tmp_path / "set"
    (root / "split=validation" / "shard=0").mkdir(parents=True)
    pq.write_table(pa.table({"user_id": ["u", "u", "u", "v"], "search_id": ["s2", "s1", "s2", "s3"],
                             "item_id": ["1", "1", "2", "1"], "user_bucket": pa.array([1, 1, 1, 2], pa.int32()),
                             "dense": [[0.5], [1.0], [0.0], [2.0]], "label": [1.0, 0.0, 0.0, 1.0]}),
                   root / "split=validation" / "shard=0" / "part-0.parquet")
    (root / "_feature_spec.json").write_text(json.dumps({"categorical": {"user_bucket": 4}, "dense": ["x"],
                                                         "group": "search_id"}))
    features, labels, groups = read_split(str(root), "validation")
    assert groups.tolist() == [0, 1, 1, 2]  # s1, s2, s2, s3
    assert labels.tolist() == [0.0, 1.0, 0.0, 1.0]  # sorted by search, then item
    assert features["dense"][:, 0].tolist() == [1.0, 0.5, 0.0, 2.0]
