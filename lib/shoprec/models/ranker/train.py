"""Data-parallel training of the ranker with Horovod (TensorFlow, Gloo).

The same :func:`train` runs under ``horovod.spark.run`` on Spark executors (the train_ranker job)
and under ``horovodrun`` outside Spark::

    horovodrun -np 2 -H localhost:2 python -m shoprec.models.ranker.train \\
        --training-set var/warehouse/training_set/run_date=2026-01-08 --out var/ranker/2026-01-08

The Horovod recipe: ``hvd.init()``; each rank reads its own training shards; the learning rate is
scaled by the number of ranks; gradients are averaged by ``DistributedGradientTape``; variables
are broadcast from rank 0 after the first step; every rank runs the same number of steps;
validation predictions are gathered from all ranks so the AUC and the per-user nDCG are those of
the whole validation set; early stopping on one of them is decided identically everywhere; only
rank 0 writes checkpoints and the final model and returns the history. When the feature spec names
a ``reference_order`` (the search ranker's text order), its nDCG on the validation set is returned
too, for the caller to serve the model only where it beats that order.

Two losses: ``pointwise`` (binary cross-entropy per example, examples shuffled across users) and
``listwise`` (softmax cross-entropy over each user's candidates, ListNet-style: batches hold whole
users, and the model learns to order a user's candidates rather than to tell active users from
quiet ones, which a global AUC rewards but a user's list never shows).

Training is deterministic: rows sorted, seeds fixed, TensorFlow's deterministic ops, Gloo's fixed
reduction order.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class TrainSettings:
    """Everything a training process needs; plain data so it pickles to Spark executors."""

    training_set: str
    out: str
    epochs: int = 10
    batch_size: int = 512
    learning_rate: float = 0.001
    patience: int = 2
    embedding_dim: int = 16
    cross_layers: int = 2
    hidden_units: list[int] = field(default_factory=lambda: [128, 64])
    dropout: float = 0.1
    seed: int = 42
    loss: str = "pointwise"            # pointwise | listwise (see the module docstring)
    early_stopping: str = "auc"        # auc | ndcg: the validation metric that picks the best epoch
    resume: bool = False
    mlflow_tracking_uri: str | None = None
    mlflow_run_id: str | None = None
    metric_prefix: str = ""            # before each epoch metric's name in the MLflow run ("search_")


LOSSES = ("pointwise", "listwise")
EARLY_STOPPING = ("auc", "ndcg")


def local_path(path: str) -> Path:
    return Path(path[len("file://"):] if path.startswith("file://") else path)


def read_split(training_set: str, split: str, shards: list[int] | None = None):
    """Features, labels and groups of one split (and, for training, the given shards).

    A group is one ranked list: a user's candidates, or one search's matches when the feature spec
    names ``group: search_id`` (the search ranker's examples).

    Returns:
        ``(features, labels, groups)``: numpy arrays, rows sorted by group and item; ``groups`` numbers
        the groups ``0, 1, ...`` in that order, so a group's rows are one contiguous run. ``(None,
        None, None)`` when the split has no rows.
    """
    import numpy as np
    import pyarrow.parquet as pq

    root = local_path(training_set) / f"split={split}"
    directories = sorted(root.glob("shard=*")) if shards is None else [root / f"shard={s}" for s in shards]
    tables = [pq.read_table(d) for d in directories if d.exists()]
    if not tables:
        return None, None, None
    import pyarrow as pa

    # Spark writes a shard's rows in an order that depends on task timing; sorted, every run of the
    # same training set sees the same examples in the same order (and trains the same model).
    spec = json.loads((local_path(training_set) / "_feature_spec.json").read_text())
    group = spec.get("group", "user_id")
    table = pa.concat_tables(tables).sort_by([(group, "ascending"), ("item_id", "ascending")])
    features = {name: table.column(name).to_numpy().astype("int32") for name in spec["categorical"]}
    features["dense"] = np.stack(table.column("dense").to_numpy(zero_copy_only=False)).astype("float32")
    # Dictionary codes stand for the group ids: equal ids, equal codes, so the sorted rows' runs are
    # the same, without a Python object per row.
    codes = table.column(group).combine_chunks().dictionary_encode().indices.to_numpy()
    return features, table.column("label").to_numpy().astype("float32"), segments_of(codes)


def ndcg_per_user(groups, labels, scores, k: int = 10) -> float:
    """Mean over users with a positive of nDCG@k of their rows ordered by score (ties by row).

    ``groups`` numbers each row's user; the ideal list puts the user's positives first.
    """
    import numpy as np

    groups, labels, scores = np.asarray(groups), np.asarray(labels), np.asarray(scores)
    if len(groups) == 0:
        return float("nan")
    order = np.lexsort((np.arange(len(scores)), -scores, groups))
    g, y = groups[order], labels[order]
    starts = run_starts(g)
    lengths = np.diff(np.append(starts, len(g)))
    position = np.arange(len(g)) - np.repeat(starts, lengths)
    discount = 1.0 / np.log2(position + 2.0)
    dcg = np.add.reduceat(np.where(position < k, y * discount, 0.0), starts)
    positives = np.add.reduceat(y, starts)
    ideal_discounts = np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))
    has = positives > 0
    if not has.any():
        return float("nan")
    ideal = ideal_discounts[np.minimum(positives[has], k).astype(int) - 1]
    return float(np.mean(dcg[has] / ideal))


def reference_ndcg(spec: dict, features, labels, groups) -> float:
    """The per-group nDCG@10 of the order a feature spec's ``reference_order`` names: its dense
    feature ascending (the search ranker's ``text_rank``: the text order, which a search ranker
    must beat to be served). NaN when the spec names none or there are no rows."""
    name = spec.get("reference_order")
    if name is None or labels is None:
        return float("nan")
    # Standardising (after log1p) keeps a feature's order, so the stored column orders as the raw one.
    return ndcg_per_user(groups, labels, -features["dense"][:, spec["dense"].index(name)])


def user_batches_order(groups, rng):
    """A permutation of the rows that keeps each user's rows together, users in random order."""
    import numpy as np

    starts = run_starts(groups)
    lengths = np.diff(np.append(starts, len(groups)))
    users = rng.permutation(len(starts))
    offsets = np.cumsum(lengths[users]) - lengths[users]
    return np.repeat(starts[users] - offsets, lengths[users]) + np.arange(len(groups))


def run_starts(values):
    """The positions where a run of equal consecutive values starts (the first is 0)."""
    import numpy as np

    return np.concatenate([[0], np.flatnonzero(values[1:] != values[:-1]) + 1]).astype("int64")


def segments_of(values):
    """Numbers ``0, 1, ...`` for the runs of equal consecutive values (a batch's users, or a sorted
    split's user ids), one per row."""
    import numpy as np

    if len(values) == 0:
        return np.zeros(0, dtype="int32")
    return np.concatenate([[0], np.cumsum(values[1:] != values[:-1])]).astype("int32")


def listwise_loss(labels, logits, segments, num_segments: int):
    """Softmax cross-entropy over each segment's rows (ListNet with the labels as the target
    distribution), averaged over the segments that hold a positive."""
    import tensorflow as tf

    top = tf.math.unsorted_segment_max(logits, segments, num_segments)
    shifted = logits - tf.gather(top, segments)
    # Empty segments sum to 0; the floor keeps their log finite (they are never gathered back).
    norm = tf.math.log(tf.maximum(tf.math.unsorted_segment_sum(tf.exp(shifted), segments, num_segments), 1e-30))
    log_prob = shifted - tf.gather(norm, segments)
    positives = tf.math.unsorted_segment_sum(labels, segments, num_segments)
    per_segment = -tf.math.unsorted_segment_sum(labels * log_prob, segments, num_segments) / tf.maximum(positives, 1.0)
    counted = tf.cast(positives > 0, tf.float32)
    return tf.reduce_sum(per_segment * counted) / tf.maximum(tf.reduce_sum(counted), 1.0)


def auc(labels, scores) -> float:
    """Area under the ROC curve by the rank-sum formula (ties share their average rank)."""
    import numpy as np

    labels = np.asarray(labels)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    _, inverse, counts = np.unique(np.asarray(scores), return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2)[inverse]
    return float((ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def train(settings: TrainSettings) -> dict | None:
    """Train on every Horovod rank; rank 0 returns the history and where the model is, others None."""
    import horovod.tensorflow as hvd
    import numpy as np
    import tensorflow as tf

    from shoprec.models.ranker.model import RankerSpec, build_ranker

    if settings.loss not in LOSSES:
        raise ValueError(f"loss {settings.loss!r} is not one of {', '.join(LOSSES)}")
    if settings.early_stopping not in EARLY_STOPPING:
        raise ValueError(f"early_stopping {settings.early_stopping!r} is not one of {', '.join(EARLY_STOPPING)}")
    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    # Ranks sharing a machine share its cores: each takes its part, or their thread pools fight.
    cores = max(1, (os.cpu_count() or 1) // hvd.local_size())
    tf.config.threading.set_intra_op_parallelism_threads(cores)
    tf.config.threading.set_inter_op_parallelism_threads(cores)
    # Same training set and seed, same weights: reruns of a day reproduce its model and scores.
    tf.config.experimental.enable_op_determinism()
    spec = json.loads((local_path(settings.training_set) / "_feature_spec.json").read_text())
    # Each rank reads its own shards: shard k goes to rank k mod size.
    mine = [k for k in range(spec["workers"]) if k % size == rank]
    features, labels, groups = read_split(settings.training_set, "train", mine)
    if features is None:
        raise RuntimeError(f"rank {rank}: no training shards {mine} under {settings.training_set}")
    val_features, val_labels, val_groups = read_split(settings.training_set, "validation")
    reference_val_ndcg = reference_ndcg(spec, val_features, val_labels, val_groups)

    ranker = RankerSpec(categorical=spec["categorical"], dense=spec["dense"], embedding_dim=settings.embedding_dim,
                        cross_layers=settings.cross_layers, hidden_units=list(settings.hidden_units),
                        dropout=settings.dropout, seed=settings.seed)
    model = build_ranker(ranker)
    optimizer = tf.keras.optimizers.Adam(settings.learning_rate * size)
    pointwise_loss = tf.keras.losses.BinaryCrossentropy(from_logits=True)
    listwise = settings.loss == "listwise"

    def loss_fn(target, logits, segments):
        if listwise:
            return listwise_loss(target, logits, segments, settings.batch_size)
        return pointwise_loss(target, logits)
    out = local_path(settings.out)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    manager = tf.train.CheckpointManager(checkpoint, str(out / "checkpoints"), max_to_keep=2)
    watched_name = f"val_{settings.early_stopping}"
    # best_epoch: the epoch whose weights are kept (the first with the best watched metric); None
    # while no epoch had it defined (a one-class validation set), and then the last weights are kept.
    start_epoch, history, best, best_epoch, stale = 0, [], -1.0, None, 0
    if settings.resume and manager.latest_checkpoint:
        # The model and optimizer from the last checkpoint, and the early-stopping state saved with it.
        checkpoint.restore(manager.latest_checkpoint)
        start_epoch = int(Path(manager.latest_checkpoint).name.split("-")[-1])
        state = json.loads((out / "checkpoints" / f"state-{start_epoch}.json").read_text())
        history, best, stale = state["history"], state.get("best", state.get("best_auc")), state["stale"]
        # States saved before best_epoch was kept: the first epoch that reached the best.
        best_epoch = state.get("best_epoch", next((h["epoch"] for h in history if h[watched_name] == best), None))
    elif settings.resume:
        raise FileNotFoundError(f"--resume: no checkpoint under {out / 'checkpoints'}")
    elif rank == 0 and out.exists():
        # A fresh run must not find an earlier run's best weights or checkpoints. The other ranks
        # write here only after the collectives below, so rank 0 clears it first.
        shutil.rmtree(out)

    @tf.function
    def step(batch, target, segments, first: bool):
        with tf.GradientTape() as tape:
            loss = loss_fn(target, model(batch, training=True), segments)
        tape = hvd.DistributedGradientTape(tape)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        if first:
            hvd.broadcast_variables(model.variables, root_rank=0)
            hvd.broadcast_variables(optimizer.variables(), root_rank=0)
        return loss

    rng = np.random.default_rng(settings.seed + rank)
    # allgather concatenates the ranks' strided validation slices (rank 0's, then rank 1's, ...):
    # these row numbers put the gathered scores back in row order.
    gathered_rows = np.concatenate([np.arange(len(val_labels))[r::size] for r in range(size)])
    n = len(labels)
    # Every rank must run the same number of steps, or the allreduce of the last ones would hang.
    steps = int(hvd.allreduce(tf.constant(max(n // settings.batch_size, 1)), op=hvd.Min).numpy())
    for epoch in range(start_epoch, settings.epochs):
        if stale >= settings.patience:
            break
        order = user_batches_order(groups, rng) if listwise else rng.permutation(n)
        losses = []
        started = time.perf_counter()
        for i in range(steps):
            take = order[(i * settings.batch_size) % n:][:settings.batch_size]
            batch = {k: v[take] for k, v in features.items()}
            losses.append(float(step(batch, labels[take], segments_of(groups[take]), epoch == start_epoch and i == 0)))
        # Throughput of the whole job: every rank's examples over the slowest rank's time.
        seconds = float(hvd.allreduce(tf.constant(time.perf_counter() - started), op=hvd.Max).numpy())
        train_loss = float(hvd.allreduce(tf.constant(np.mean(losses)), op=hvd.Average).numpy())
        # Validation: each rank scores a slice; the gathered slices give the whole set's AUC, nDCG and loss.
        part = slice(rank, None, size)
        scores = model({k: v[part] for k, v in val_features.items()}, training=False).numpy()
        val_scores = np.empty(len(val_labels), dtype="float32")
        val_scores[gathered_rows] = hvd.allgather(tf.constant(scores)).numpy()
        if listwise:
            val_loss = float(listwise_loss(tf.constant(val_labels), tf.constant(val_scores), tf.constant(val_groups),
                                           int(val_groups.max()) + 1 if len(val_groups) else 1).numpy())
        else:
            val_loss = float(pointwise_loss(val_labels, val_scores).numpy())
        val_auc = auc(val_labels, val_scores)
        val_ndcg = ndcg_per_user(val_groups, val_labels, val_scores)
        train_auc = auc(labels[order[:50_000]], model({k: v[order[:50_000]] for k, v in features.items()},
                                                        training=False).numpy())
        train_auc = float(hvd.allreduce(tf.constant(train_auc), op=hvd.Average).numpy())
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "train_auc": train_auc,
                        "val_loss": val_loss, "val_auc": val_auc, "val_ndcg": val_ndcg,
                        "examples_per_s": steps * settings.batch_size * size / max(seconds, 1e-9)})
        watched = history[-1][watched_name]
        if watched > best:
            best, best_epoch, stale = watched, epoch + 1, 0
            if rank == 0:
                model.save_weights(str(out / "best" / "weights"))
        else:
            stale += 1
        if rank == 0:
            # The state first: a checkpoint is only found by --resume once its state is there.
            state = {"history": history, "best": best, "best_epoch": best_epoch, "stale": stale}
            (out / "checkpoints").mkdir(parents=True, exist_ok=True)
            (out / "checkpoints" / f"state-{epoch + 1}.json").write_text(json.dumps(state))
            manager.save(checkpoint_number=epoch + 1)
            _log_epoch(settings, history[-1])
    # Every rank records a digest of its final weights: all ranks must agree (a check for operators).
    import hashlib

    digest = hashlib.sha256(b"".join(np.ascontiguousarray(w).tobytes() for w in model.get_weights())).hexdigest()
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank-{rank}.weights.sha256").write_text(digest + "\n")
    if rank != 0:
        return None
    if (out / "best" / "weights.index").exists():
        model.load_weights(str(out / "best" / "weights"))
    else:  # no epoch had a defined validation AUC (one-class validation set): keep the last weights
        model.save_weights(str(out / "best" / "weights"))
    model.save(str(out / "model"))
    (out / "history.json").write_text(json.dumps(history, indent=1))
    chosen = next((h for h in history if h["epoch"] == best_epoch), history[-1] if history else {})
    return {"history": history, "best_epoch": chosen.get("epoch"), "best_val_auc": chosen.get("val_auc", float("nan")),
            "best_val_ndcg": chosen.get("val_ndcg", float("nan")), "reference_val_ndcg": reference_val_ndcg,
            "model_path": str(out / "model"), "ranks": size,
            "settings": asdict(settings), "examples_per_rank": n}


def train_each(settings: list[TrainSettings]) -> list[dict] | None:
    """:func:`train` for each of ``settings`` in turn, in the same Horovod processes (one start-up
    for several models); rank 0 returns their results in that order, others None."""
    results = [train(one) for one in settings]
    return results if results and results[0] is not None else None


def _log_epoch(settings: TrainSettings, metrics: dict) -> None:
    """Rank 0 reports an epoch's metrics to the job's MLflow run, when there is one."""
    if not (settings.mlflow_tracking_uri and settings.mlflow_run_id):
        return
    from mlflow.tracking import MlflowClient

    client = MlflowClient(settings.mlflow_tracking_uri)
    for name, value in metrics.items():
        if name != "epoch" and value == value:  # NaN AUCs (a one-class validation set) are not logged
            client.log_metric(settings.mlflow_run_id, f"{settings.metric_prefix}{name}", float(value),
                              step=int(metrics["epoch"]))


def main(argv: list[str] | None = None) -> int:
    """``horovodrun -np N python -m shoprec.models.ranker.train ...`` (outside Spark)."""
    parser = argparse.ArgumentParser(description="Train the ranker with Horovod on a training set's shards.")
    parser.add_argument("--training-set", required=True, help="training_set/run_date=YYYY-MM-DD directory")
    parser.add_argument("--out", required=True, help="directory for checkpoints and the saved model")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--learning-rate", type=float, default=0.001)
    parser.add_argument("--patience", type=int, default=2, help="epochs without a better validation metric (--early-stopping) before stopping")
    parser.add_argument("--loss", choices=LOSSES, default="pointwise",
                        help="pointwise: cross-entropy per example; listwise: softmax over each user's candidates")
    parser.add_argument("--early-stopping", choices=EARLY_STOPPING, default="auc",
                        help="the validation metric that picks the epoch kept (ndcg: per-user nDCG@10)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    args = parser.parse_args(argv)
    result = train(TrainSettings(training_set=args.training_set, out=args.out, epochs=args.epochs,
                                 batch_size=args.batch_size, learning_rate=args.learning_rate, patience=args.patience,
                                 loss=args.loss, early_stopping=args.early_stopping, resume=args.resume))
    if result is not None:
        print(json.dumps({k: v for k, v in result.items() if k != "settings"}, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    raise SystemExit(main())
