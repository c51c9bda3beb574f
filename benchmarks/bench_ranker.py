"""Training throughput of the ranker: Horovod with 1 and 2 processes against plain TensorFlow.

    make bench-ranker                                   # synthetic set shaped like the real features
    make bench-ranker TRAINING_SET=var/warehouse/training_set/run_date=2026-01-08

All three train the same model (conf/base.yaml ``ranker`` section) on the same examples with the
same per-process batch size:

- ``np1``, ``np2``: ``horovodrun -np N`` running :func:`shoprec.models.ranker.train.train` (Gloo);
  N processes each take ``batch_size`` examples per step, so a step covers N x batch_size examples;
- ``plain_tf``: one process, a ``tf.function`` GradientTape step, no Horovod.

Examples/s are measured over the training steps only (not validation), from the second epoch on
(the first includes graph tracing), and the median epoch is reported. Results go to
``reports/bench_ranker.json`` (keys ``np1``, ``np2``, ``plain_tf``, each with ``examples_per_s``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "lib"))

from shoprec.config import load_config  # noqa: E402
from shoprec.models.ranker import features as X  # noqa: E402


def synthetic_training_set(root: Path, examples: int, workers: int, seed: int) -> None:
    """A training set with the real feature layout (buckets and dense features of the feature spec)
    and labels that depend on the features, split into ``workers`` shards plus a validation part."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    dense_names = X.dense_features()
    weights = rng.normal(size=len(dense_names))

    serial = iter(range(10**9))

    def part(n: int) -> pa.Table:
        # Training sorts each rank's rows by (user_id, item_id), as the real table has them.
        columns = {"user_id": [f"u{next(serial)}" for _ in range(n)], "item_id": [f"i{i}" for i in range(n)]}
        columns.update({name: rng.integers(0, buckets, n).astype("int32") for name, buckets in X.CATEGORICAL.items()})
        dense = rng.normal(size=(n, len(dense_names))).astype("float32")
        logit = dense @ weights / np.sqrt(len(dense_names)) + 0.5 * (columns["item_bucket"] % 7 == 0) - 2.0
        columns["dense"] = list(dense)
        columns["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("float64")
        return pa.table(columns)

    for shard in range(workers):
        directory = root / "split=train" / f"shard={shard}"
        directory.mkdir(parents=True)
        pq.write_table(part(examples // workers), directory / "part-0.parquet")
    (root / "split=validation" / "shard=0").mkdir(parents=True)
    pq.write_table(part(max(examples // 10, 1000)), root / "split=validation" / "shard=0" / "part-0.parquet")
    (root / "_feature_spec.json").write_text(json.dumps(
        {"categorical": X.CATEGORICAL, "dense": dense_names, "workers": workers, "standardisation": {}}))


def steady_rate(history: list[dict]) -> float:
    """The median examples/s of the epochs after the first."""
    rates = [h["examples_per_s"] for h in history[1:]] or [h["examples_per_s"] for h in history]
    return statistics.median(rates)


def horovod_rate(training_set: Path, processes: int, settings: dict, work: Path) -> dict:
    """Train under ``horovodrun -np processes`` and read the examples/s it recorded per epoch."""
    venv_bin = Path(sys.executable).parent
    out = work / f"np{processes}"
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "PYTHONPATH": str(PROJECT / "lib"),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [str(venv_bin / "horovodrun"), "-np", str(processes), "-H", f"localhost:{processes}",
               sys.executable, "-m", "shoprec.models.ranker.train", "--training-set", str(training_set),
               "--out", str(out), "--epochs", str(settings["epochs"]), "--patience", str(settings["epochs"]),
               "--batch-size", str(settings["batch_size"]), "--learning-rate", str(settings["learning_rate"])]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"horovodrun -np {processes} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    history = json.loads((out / "history.json").read_text())
    return {"examples_per_s": round(steady_rate(history), 1),
            "epochs": [round(h["examples_per_s"], 1) for h in history],
            "best_val_auc": round(max(h["val_auc"] for h in history), 4),
            "wall_seconds": round(time.perf_counter() - started, 1)}


def plain_tf_rate(training_set: Path, settings: dict, cfg) -> dict:
    """The same model and batches in a single process, without Horovod."""
    import numpy as np
    import tensorflow as tf

    from shoprec.models.ranker.model import RankerSpec, build_ranker
    from shoprec.models.ranker.train import auc, read_split

    spec = json.loads((training_set / "_feature_spec.json").read_text())
    features, labels, _ = read_split(str(training_set), "train")
    val_features, val_labels, _ = read_split(str(training_set), "validation")
    ranker = cfg.ranker
    model = build_ranker(RankerSpec(categorical=spec["categorical"], dense=spec["dense"],
                                    embedding_dim=ranker.embedding_dim, cross_layers=ranker.cross_layers,
                                    hidden_units=list(ranker.hidden_units), dropout=ranker.dropout, seed=ranker.seed))
    optimizer = tf.keras.optimizers.Adam(settings["learning_rate"])
    loss_fn = tf.keras.losses.BinaryCrossentropy(from_logits=True)

    @tf.function
    def step(batch, target):
        with tf.GradientTape() as tape:
            loss = loss_fn(target, model(batch, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    rng = np.random.default_rng(ranker.seed)
    n, batch_size = len(labels), settings["batch_size"]
    steps = max(n // batch_size, 1)
    history = []
    started_all = time.perf_counter()
    for _ in range(settings["epochs"]):
        order = rng.permutation(n)
        started = time.perf_counter()
        for i in range(steps):
            take = order[i * batch_size:(i + 1) * batch_size]
            float(step({k: v[take] for k, v in features.items()}, labels[take]))
        seconds = time.perf_counter() - started
        scores = model(val_features, training=False).numpy()
        history.append({"examples_per_s": steps * batch_size / seconds, "val_auc": auc(val_labels, scores)})
    return {"examples_per_s": round(steady_rate(history), 1),
            "epochs": [round(h["examples_per_s"], 1) for h in history],
            "best_val_auc": round(max(h["val_auc"] for h in history), 4),
            "wall_seconds": round(time.perf_counter() - started_all, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--training-set", help="a training_set/run_date=D directory (default: a synthetic one)")
    parser.add_argument("--examples", type=int, default=400_000, help="size of the synthetic training set")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--conf", default=str(PROJECT / "conf" / "base.yaml"), help="config with the ranker section")
    parser.add_argument("--out", default=str(PROJECT / "reports" / "bench_ranker.json"))
    args = parser.parse_args(argv)
    cfg = load_config(args.conf)
    settings = {"epochs": args.epochs, "batch_size": cfg.ranker.batch_size, "learning_rate": cfg.ranker.learning_rate}
    work = Path(tempfile.mkdtemp(prefix="bench-ranker-", dir=PROJECT / "var" if (PROJECT / "var").is_dir() else None))
    try:
        if args.training_set:
            training_set, source = Path(args.training_set), args.training_set
        else:
            training_set, source = work / "training_set", f"synthetic, {args.examples} examples"
            synthetic_training_set(training_set, args.examples, 2, cfg.ranker.seed)
        results = {}
        for name, measure in (("plain_tf", lambda: plain_tf_rate(training_set, settings, cfg)),
                              ("np1", lambda: horovod_rate(training_set, 1, settings, work)),
                              ("np2", lambda: horovod_rate(training_set, 2, settings, work))):
            results[name] = measure()
            print(f"{name}: {results[name]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {**results, "training_set": source, **settings,
              "model": {"embedding_dim": cfg.ranker.embedding_dim, "cross_layers": cfg.ranker.cross_layers,
                        "hidden_units": cfg.ranker.hidden_units},
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "speedup_np2_over_np1": round(results["np2"]["examples_per_s"] / results["np1"]["examples_per_s"], 3),
              "horovod_np1_over_plain_tf": round(results["np1"]["examples_per_s"] / results["plain_tf"]["examples_per_s"], 3),
              "command": "make bench-ranker" + (f" TRAINING_SET={args.training_set}" if args.training_set else "")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
