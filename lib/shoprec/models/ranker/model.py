"""The ranking model: a DCN-v2 style network over id embeddings and dense features.

Built by a plain function so it can be unit-tested on CPU without Horovod. TensorFlow is imported
inside the functions: the Spark-only jobs and the Airflow DAG parser never load it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RankerSpec:
    """The model's inputs and size.

    ``categorical`` maps each categorical feature to its vocabulary size (ids are hashed or
    indexed into ``[0, size)`` before they reach the model); ``dense`` names the float features,
    standardised upstream.
    """

    categorical: dict[str, int]
    dense: list[str]
    embedding_dim: int = 16
    cross_layers: int = 2
    hidden_units: list[int] = field(default_factory=lambda: [128, 64])
    dropout: float = 0.1
    seed: int = 42


def build_ranker(spec: RankerSpec):
    """A Keras model mapping ``{feature: tensor}`` to one logit per example (higher = more likely).

    Architecture (Wang et al., DCN V2, 2021, the "stacked" variant):
    every categorical feature goes through its own embedding; the embeddings and the dense
    features are concatenated into ``x0``; ``cross_layers`` cross layers compute
    ``x_{l+1} = x0 * (W_l x_l + b_l) + x_l`` (explicit feature interactions), an MLP of
    ``hidden_units`` (ReLU, dropout) follows, and a linear unit gives the logit.

    Returns:
        An uncompiled ``tf.keras.Model``; inputs are int32 scalars per categorical feature and a
        float32 vector ``dense`` of ``len(spec.dense)`` values.
    """
    import tensorflow as tf

    tf.keras.utils.set_random_seed(spec.seed)
    inputs = {}
    parts = []
    for name, vocabulary in sorted(spec.categorical.items()):
        ids = tf.keras.Input(shape=(), dtype=tf.int32, name=name)
        inputs[name] = ids
        embedding = tf.keras.layers.Embedding(vocabulary, spec.embedding_dim, name=f"{name}_embedding")
        parts.append(embedding(ids))
    if spec.dense:
        dense = tf.keras.Input(shape=(len(spec.dense),), dtype=tf.float32, name="dense")
        inputs["dense"] = dense
        parts.append(dense)
    x0 = tf.keras.layers.Concatenate(name="x0")(parts) if len(parts) > 1 else parts[0]
    width = x0.shape[-1]
    x = x0
    for layer in range(spec.cross_layers):
        projected = tf.keras.layers.Dense(width, name=f"cross_{layer}")(x)
        x = tf.keras.layers.Add(name=f"cross_{layer}_residual")([tf.keras.layers.Multiply()([x0, projected]), x])
    for i, units in enumerate(spec.hidden_units):
        x = tf.keras.layers.Dense(units, activation="relu", name=f"deep_{i}")(x)
        if spec.dropout:
            x = tf.keras.layers.Dropout(spec.dropout, seed=spec.seed + i)(x)
    logit = tf.keras.layers.Dense(1, name="logit")(x)
    logit = tf.keras.layers.Reshape((), name="score")(logit)
    return tf.keras.Model(inputs=inputs, outputs=logit, name="shoprec_ranker")
