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


def write_training_set(root: Path, workers: int = 2, rows_per_user: int = 1) -> None:
    """A learnable set: positives when user and item buckets share parity, and feature a is high.
    ``rows_per_user`` candidates per user (a user's bucket is the same on each of its rows)."""
    rng = np.random.default_rng(0)
    users_so_far = [0]  # users are numbered across parts, so no user is in two splits

    def part(n: int) -> pa.Table:
        user_numbers = users_so_far[0] + np.arange(n) // rows_per_user
        users_so_far[0] = int(user_numbers[-1]) + 1
        users, items = 1 + user_numbers % 63, rng.integers(1, 64, n)
        dense = rng.normal(size=(n, 2)).astype("float32")
        label = ((users % 2 == items % 2) & (dense[:, 0] > 0)).astype("float64")
        return pa.table({"user_id": [f"u{u}" for u in user_numbers], "item_id": [f"i{k}" for k in range(n)],
                         "user_bucket": users.astype("int32"), "item_bucket": items.astype("int32"),
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

    # The same examples in another row order (as another Spark run may write them), trained again
    # into the same directory: the very same weights.
    for path in training_set.rglob("*.parquet"):
        table = pq.read_table(path)
        pq.write_table(table.take(np.random.default_rng(1).permutation(table.num_rows)), path)
    (out / "checkpoints" / "ckpt-99.index").write_text("left by an earlier run")
    again = subprocess.run(done.args, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert (out / "rank-0.weights.sha256").read_text() == digests[0]
    assert not (out / "checkpoints" / "ckpt-99.index").exists()


def test_listwise_training_keeps_the_epoch_with_the_best_per_user_ndcg(tmp_path):
    from shoprec.models.ranker.train import ndcg_per_user, read_split

    tf = pytest.importorskip("tensorflow")
    training_set, out = tmp_path / "training_set", tmp_path / "out"
    write_training_set(training_set, rows_per_user=20)
    run = _horovodrun(training_set, out, "--epochs", "4", "--patience", "4", "--loss", "listwise",
                      "--early-stopping", "ndcg")
    output, _ = run.communicate(timeout=900)
    assert run.returncode == 0, output[-3000:]
    digests = [(out / f"rank-{r}.weights.sha256").read_text() for r in (0, 1)]
    assert digests[0] == digests[1]
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 4
    features, labels, groups = read_split(str(training_set), "validation")
    chance = np.mean([ndcg_per_user(groups, labels, np.random.default_rng(seed).random(len(labels)))
                      for seed in range(5)])
    best = max(h["val_ndcg"] for h in history)
    assert best > chance + 0.1, (best, chance)
    # The saved model is the kept epoch's: scoring the validation set again gives its nDCG.
    model = tf.keras.models.load_model(str(out / "model"))
    scores = model(features, training=False).numpy()
    assert ndcg_per_user(groups, labels, scores) == pytest.approx(best, abs=1e-6)


def _horovodrun(training_set: Path, out: Path, *extra: str, **popen) -> subprocess.Popen:
    venv_bin = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "PYTHONPATH": str(PROJECT / "lib"),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen(
        [str(venv_bin / "horovodrun"), "-np", "2", "-H", "localhost:2", sys.executable, "-m", "shoprec.models.ranker.train",
         "--training-set", str(training_set), "--out", str(out), "--batch-size", "64", "--learning-rate", "0.005",
         *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _rank_process(rank: int) -> int | None:
    """The pid of the training process Horovod started as ``rank``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"shoprec.models.ranker.train" in cmdline and b"horovodrun" not in cmdline \
                and f"HOROVOD_RANK={rank}".encode() in environ:
            return int(proc.name)
    return None


def test_a_killed_rank_fails_the_run_and_resume_finishes_it(tmp_path):
    import signal
    import time

    training_set, out = tmp_path / "training_set", tmp_path / "out"
    write_training_set(training_set)
    run = _horovodrun(training_set, out, "--epochs", "50", "--patience", "50")
    deadline = time.monotonic() + 600
    while not (out / "checkpoints" / "state-2.json").exists():
        assert run.poll() is None, run.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint after 10 minutes"
        time.sleep(0.5)
    pid = _rank_process(1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    # The surviving rank must not wait forever in an allreduce: the whole run fails, promptly.
    returncode = run.wait(timeout=180)
    assert returncode != 0
    assert time.monotonic() - killed_at < 180
    run.stdout.close()
    assert not (out / "model").exists()

    done_epochs = max(int(p.stem.split("-")[1]) for p in (out / "checkpoints").glob("state-*.json"))
    saved = json.loads((out / "checkpoints" / f"state-{done_epochs}.json").read_text())["history"]
    resumed = _horovodrun(training_set, out, "--epochs", str(done_epochs + 2), "--patience", "50", "--resume")
    output, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, output[-3000:]
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, done_epochs + 3))
    assert history[:done_epochs] == saved  # the epochs before the failure are kept, not retrained
    digests = [(out / f"rank-{r}.weights.sha256").read_text() for r in (0, 1)]
    assert digests[0] == digests[1]
    assert (out / "model" / "saved_model.pb").exists()
