"""Spark MLlib's implicit ALS (as shoprec runs it) against the ``implicit`` library (CPU), on the
same interactions, in the same run.

    make bench-als                                    # synthetic power-law interactions
    make bench-als ALS_ARGS="--movielens ../shared/data/movielens-100k"

For each factor count (64 and 128): seconds per iteration of both, measured as the difference
between a fit of ``--iterations`` and a fit of 2 iterations, divided by the difference (so start-up,
indexing and the final factor collection cancel out), and nDCG@10 of each on a held-out split
(per user, 80/20, seed 42; training items left out of the recommendations). Same confidence
(``c = 1 + alpha`` per interaction), same regularisation value, same iterations, both on every
core of the machine. Spark's ALS is tuned: user and item blocks = cores, intermediate and final
RDDs in memory (no serialisation), no checkpointing within these few iterations.

Writes ``reports/bench_als.json`` (per factor count: ``spark_s_per_iter``,
``implicit_s_per_iter``, ``ratio``, ``spark_ndcg_at_10``, ``implicit_ndcg_at_10``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "lib"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from pyspark.ml.recommendation import ALS  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from shoprec.config import SparkConfig  # noqa: E402
from shoprec.evaluation.ranking import ranking_metrics  # noqa: E402
from shoprec.evaluation.splits import stratified_split  # noqa: E402
from shoprec.models import als as A  # noqa: E402
from shoprec.spark import build_session  # noqa: E402

K = 10
SEED = 42
REG = 0.1
ALPHA = 10.0
USER, ITEM = "user_index", "item_index"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    memory = int(next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal"))) // 2**20
    return f"{os.cpu_count()} cores ({cpu}), {memory} GiB"


def synthetic_pairs(users: int, items: int, pairs: int, seed: int) -> np.ndarray:
    """Distinct (user, item) pairs: item popularity and user activity both power-law (Zipf-like),
    the shape of real shop and rating logs."""
    rng = np.random.default_rng(seed)
    item_weight = 1.0 / np.arange(1, items + 1) ** 0.9
    user_weight = 1.0 / np.arange(1, users + 1) ** 0.6
    drawn = np.stack([rng.choice(users, int(pairs * 1.3), p=user_weight / user_weight.sum()),
                      rng.choice(items, int(pairs * 1.3), p=item_weight / item_weight.sum())], axis=1)
    unique = np.unique(drawn, axis=0)
    return unique[rng.permutation(len(unique))[:pairs]]


def movielens_pairs(data: Path) -> np.ndarray:
    rows = np.loadtxt(data / "u.data", dtype=np.int64, usecols=(0, 1))
    return np.unique(rows - 1, axis=0)


def spark_fit(train, rank: int, iterations: int, blocks: int):
    als = ALS(rank=rank, regParam=REG, alpha=ALPHA, maxIter=iterations, implicitPrefs=True, userCol=USER,
              itemCol=ITEM, ratingCol="strength", seed=SEED, numUserBlocks=blocks, numItemBlocks=blocks,
              intermediateStorageLevel="MEMORY_ONLY", finalStorageLevel="MEMORY_ONLY", checkpointInterval=-1)
    started = time.perf_counter()
    model = als.fit(train)
    model.userFactors.count()
    return model, time.perf_counter() - started


def implicit_fit(matrix, rank: int, iterations: int):
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(factors=rank, regularization=REG, iterations=iterations, random_state=SEED,
                                    calculate_training_loss=False)
    started = time.perf_counter()
    model.fit(matrix, show_progress=False)
    return model, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--movielens", type=Path, help="a MovieLens directory with u.data instead of synthetic data")
    parser.add_argument("--users", type=int, default=60_000)
    parser.add_argument("--items", type=int, default=12_000)
    parser.add_argument("--pairs", type=int, default=2_000_000)
    parser.add_argument("--ranks", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--out", type=Path, default=PROJECT / "reports" / "bench_als.json")
    args = parser.parse_args(argv)

    import scipy.sparse as sparse
    from threadpoolctl import threadpool_limits

    pairs = movielens_pairs(args.movielens) if args.movielens else synthetic_pairs(args.users, args.items, args.pairs, SEED)
    cores = os.cpu_count() or 1
    spark = build_session(SparkConfig(master=f"local[{cores}]", app_name="bench-als", shuffle_partitions=cores,
                                      conf={"spark.driver.memory": "12g", "spark.ui.enabled": "false",
                                            "spark.ui.showConsoleProgress": "false"}))
    spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    frame = spark.createDataFrame(pd.DataFrame(pairs.astype(np.int32), columns=[USER, ITEM]))
    train, test = stratified_split(frame, 0.8, SEED, user_col=USER, item_col=ITEM)
    train = train.withColumn("strength", F.lit(1.0)).cache()
    test = test.cache()
    train_pairs = train.select(USER, ITEM).toPandas().to_numpy(dtype=np.int64)
    n_users, n_items = int(pairs[:, 0].max()) + 1, int(pairs[:, 1].max()) + 1
    # implicit takes c_ui itself; Spark builds c_ui = 1 + alpha * r from r = 1.
    confidence = sparse.csr_matrix((np.full(len(train_pairs), 1.0 + ALPHA, dtype=np.float32),
                                    (train_pairs[:, 0], train_pairs[:, 1])), shape=(n_users, n_items))
    test_users = np.sort(test.select(USER).distinct().toPandas()[USER].to_numpy(dtype=np.int64))
    print(f"bench-als: {len(pairs)} interactions, {n_users} users, {n_items} items; "
          f"{train.count()} train / {test.count()} test", flush=True)

    # Warm the JVM's JIT and both libraries' thread pools, so the first timed fit is not the slowest.
    spark_fit(train, args.ranks[0], 2, cores)
    implicit_fit(confidence, args.ranks[0], 2)
    results = {}
    for rank in args.ranks:
        _, spark_short = spark_fit(train, rank, 2, cores)
        spark_model, spark_long = spark_fit(train, rank, args.iterations, cores)
        spark_per_iter = (spark_long - spark_short) / (args.iterations - 2)
        with threadpool_limits(limits=1, user_api="blas"):  # implicit parallelises with its own threads
            _, implicit_short = implicit_fit(confidence, rank, 2)
            implicit_model, implicit_long = implicit_fit(confidence, rank, args.iterations)
        implicit_per_iter = (implicit_long - implicit_short) / (args.iterations - 2)

        max_seen = int(confidence.getnnz(axis=1).max())
        spark_recs = A.recommend_unseen(spark_model, test.select(USER).distinct(), train.select(USER, ITEM), K, max_seen)
        ids, _ = implicit_model.recommend(test_users, confidence[test_users], N=K, filter_already_liked_items=True)
        found = ids >= 0
        implicit_recs = spark.createDataFrame(pd.DataFrame({
            USER: np.repeat(test_users, K).reshape(-1, K)[found].astype(np.int32),
            "rank": np.tile(np.arange(1, K + 1, dtype=np.int32), (len(test_users), 1))[found],
            ITEM: ids[found].astype(np.int32)}))
        scores = {name: ranking_metrics(recs, test, K, user_col=USER, item_col=ITEM)[f"ndcg@{K}"]
                  for name, recs in (("spark", spark_recs), ("implicit", implicit_recs))}
        results[str(rank)] = {
            "spark_s_per_iter": round(spark_per_iter, 3), "implicit_s_per_iter": round(implicit_per_iter, 3),
            "ratio": round(spark_per_iter / implicit_per_iter, 2),
            "spark_ndcg_at_10": round(scores["spark"], 4), "implicit_ndcg_at_10": round(scores["implicit"], 4),
            "spark_fit_seconds": round(spark_long, 1), "implicit_fit_seconds": round(implicit_long, 1),
        }
        print(f"bench-als: rank {rank}: {results[str(rank)]}", flush=True)
    spark.stop()

    report = {
        "data": str(args.movielens) if args.movielens else
        f"synthetic power-law: {args.users} users, {args.items} items, {args.pairs} pairs, seed {SEED}",
        "interactions": int(len(pairs)), "iterations": args.iterations, "reg_param": REG, "alpha": ALPHA,
        "machine": machine(), "goal": "ratio <= 4", "factors": results,
        "command": "make bench-als" + (f" ALS_ARGS='--movielens {args.movielens}'" if args.movielens else ""),
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"bench-als: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
