"""The ranking model on CPU, without Horovod: shapes, and a tiny model learns a tiny rule."""

import numpy as np
import pytest

from shoprec.models.ranker.model import RankerSpec, build_ranker

tf = pytest.importorskip("tensorflow")


def batch(n: int, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    users = rng.integers(0, 20, n).astype("int32")
    items = rng.integers(0, 30, n).astype("int32")
    dense = rng.normal(size=(n, 3)).astype("float32")
    # Relevant when the item's parity matches the user's, or when the first dense feature is high.
    label = ((users % 2 == items % 2) | (dense[:, 0] > 1.0)).astype("float32")
    return {"user": users, "item": items, "dense": dense}, label


def test_outputs_one_logit_per_example():
    model = build_ranker(RankerSpec(categorical={"user": 20, "item": 30}, dense=["a", "b", "c"], hidden_units=[8]))
    features, _ = batch(7, np.random.default_rng(0))
    assert model(features, training=False).shape == (7,)
    names = {layer.name for layer in model.layers}
    assert {"user_embedding", "item_embedding", "cross_0", "cross_1", "deep_0", "logit"} <= names


def test_a_tiny_model_fits_a_tiny_set():
    rng = np.random.default_rng(1)
    features, label = batch(512, rng)
    model = build_ranker(RankerSpec(categorical={"user": 20, "item": 30}, dense=["a", "b", "c"],
                                    embedding_dim=8, hidden_units=[32], dropout=0.0, seed=3))
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01),
                  loss=tf.keras.losses.BinaryCrossentropy(from_logits=True),
                  metrics=[tf.keras.metrics.AUC(from_logits=True, name="auc")])
    history = model.fit(features, label, epochs=60, batch_size=128, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert history.history["auc"][-1] > 0.97


def test_scoring_on_spark_gives_the_models_probabilities_and_keeps_every_column_but_dense(spark, tmp_path):
    from shoprec.jobs.score import score_with_model

    model = build_ranker(RankerSpec(categorical={"user": 20, "item": 30}, dense=["a", "b", "c"], hidden_units=[8],
                                    seed=5))
    model.save(str(tmp_path / "model"))
    features, _ = batch(300, np.random.default_rng(2))
    expected = 1.0 / (1.0 + np.exp(-model(features, training=False).numpy().astype("float64")))
    rows = [(f"u{n}", int(features["user"][n]), int(features["item"][n]), [float(x) for x in features["dense"][n]])
            for n in range(300)]
    examples = spark.createDataFrame(rows, "user_id string, user int, item int, dense array<float>").repartition(3)
    scored = score_with_model(examples, str(tmp_path / "model"), ["user", "item"])
    assert scored.columns == ["user_id", "user", "item", "score"]
    got = {r.user_id: r.score for r in scored.collect()}
    np.testing.assert_allclose([got[f"u{n}"] for n in range(300)], expected, rtol=1e-5)


def test_scoring_refuses_dense_vectors_of_different_lengths(spark, tmp_path):
    from shoprec.jobs.score import score_with_model

    model = build_ranker(RankerSpec(categorical={"user": 20}, dense=["a", "b"], hidden_units=[4]))
    model.save(str(tmp_path / "model"))
    examples = spark.createDataFrame([(1, [0.1, 0.2]), (2, [0.3])], "user int, dense array<float>").coalesce(1)
    with pytest.raises(Exception, match="dense vector of the same length"):
        score_with_model(examples, str(tmp_path / "model"), ["user"]).collect()
