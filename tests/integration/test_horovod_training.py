"""The ranker's Horovod training with two real processes (horovodrun, Gloo) on a tiny training set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import PROJECT

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CATEGORICAL = {"user_bucket": 64, "item_bucket": 64}
DENSE = ["a", "b"]


def write_training_set(root: Path, workers: int = 2) -> None:
    """A learnable set: positives when user and item buckets share parity, or feature a is high."""
    rng = np.random.default_rng(0)

    def part(n: int) -> pa.Table:
        users, items = rng.integers(1, 64, n), rng.integers(1, 64, n)
        dense = rng.normal(size=(n, 2)).astype("float32")
        label = ((users % 2 == items % 2) & (dense[:, 0] > 0)).astype("float64")
        return pa.table({"user_bucket": users.astype("int32"), "item_bucket": items.astype("int32"),
                         "dense": list(dense), "label": label})

    for shard in range(workers):
        (root / "split=train" / f"shard={shard}").mkdir(parents=True)
        pq.write_table(part(3000), root / "split=train" / f"shard={shard}" / "part-0.parquet")
    (root / "split=validation" / "shard=0").mkdir(parents=True)
    pq.write_table(part(1000), root / "split=validation" / "shard=0" / "part-0.parquet")
    (root / "_feature_spec.json").write_text(json.dumps(
        {"categorical": CATEGORICAL, "dense": DENSE, "workers": workers, "standardisation": {}}))


def test_two_ranks_train_in_lockstep(tmp_path):
    training_set, out = tmp_path / "training_set", tmp_path / "out"
    write_training_set(training_set)
    venv_bin = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "PYTHONPATH": str(PROJECT / "lib"),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [str(venv_bin / "horovodrun"), "-np", "2", "-H", "localhost:2", sys.executable, "-m", "shoprec.models.ranker.train",
         "--training-set", str(training_set), "--out", str(out), "--epochs", "4", "--batch-size", "128",
         "--learning-rate", "0.005"],
        env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    digests = [(out / f"rank-{r}.weights.sha256").read_text() for r in (0, 1)]
    assert digests[0] == digests[1]  # gradients averaged and variables broadcast: identical weights
    history = json.loads((out / "history.json").read_text())
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert max(h["val_auc"] for h in history) > 0.8
    assert (out / "model" / "saved_model.pb").exists()
    assert list((out / "checkpoints").glob("ckpt-*.index"))
