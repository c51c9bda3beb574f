"""Spark MLlib's implicit ALS (as shoprec runs it) against the ``implicit`` library (CPU), on the
same interactions, in the same run.

    make bench-als                                    # synthetic power-law interactions
    make bench-als ALS_ARGS="--movielens ../shared/data/movielens-100k"

For each factor count (64 and 128): seconds per iteration of both, measured as the difference
between a fit of ``--iterations`` and a fit of 2 iterations, divided by the difference (so start-up,
indexing and the final factor collection cancel out); each library's pair of fits is run
``--repeats`` times (3) and the median counts, every figure kept in ``s_per_iter_runs``, because
one pair of fits on a shared 2-core machine varies by a fifth or more. And nDCG@10 of each on a held-out split
(per user, 80/20, seed 42; training items left out of the recommendations; one numpy scorer for
both libraries' factors). Same confidence
(``c = 1 + alpha`` per interaction), same regularisation value, same iterations, both on every
core of the machine. Spark's ALS is tuned: user and item blocks = cores, intermediate and final
RDDs in memory (no serialisation), no checkpointing within these few iterations, one BLAS thread
per task. implicit is timed twice: as its users run it (conjugate-gradient steps, its default) and
with exact Cholesky solves, the algorithm Spark runs. shoprec's own ``als.solver: cg``
(implicit's objective and conjugate-gradient kernel, distributed over Spark blocks) is timed on
the same Spark session the same way.

Spark's ALS solves its normal equations through netlib's BLAS/LAPACK: with a native
``libblas.so.3`` / ``liblapack.so.3`` on the library path (Debian: ``libopenblas0-pthread``) it
uses them, otherwise a JVM fallback several times slower at 128 factors. The report records which
(``spark_blas``).

Writes ``reports/bench_als.json`` (per factor count: ``spark_s_per_iter``,
``implicit_s_per_iter``, ``ratio``, ``implicit_exact_s_per_iter``, ``ratio_to_exact``,
``spark_ndcg_at_10``, ``implicit_ndcg_at_10``, and for the CG solver ``cg_s_per_iter``,
``cg_ratio`` (to implicit), ``cg_ndcg_at_10``; ``implicit_items_first_ndcg_at_10``: implicit's
kernel with the half-iterations in MLlib's order, items first; and ``s_per_iter_runs``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "lib"))
# One BLAS thread per task: Spark already runs a task per core, and a native OpenBLAS that also
# threads would oversubscribe them (Spark's MLlib guide says the same); implicit asks for it too.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from pyspark.ml.recommendation import ALS  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from shoprec.config import SparkConfig  # noqa: E402
from shoprec.evaluation.splits import stratified_split  # noqa: E402
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


def spark_blas(spark) -> dict[str, str]:
    """The BLAS and LAPACK implementations Spark's ALS ran on: ``JNIBLAS`` is a native library
    (libblas.so.3, e.g. OpenBLAS), ``VectorBLAS`` / ``Java*`` the JVM's own fallback."""
    netlib = spark.sparkContext._jvm.dev.ludovic.netlib
    return {"blas": netlib.blas.BLAS.getInstance().getClass().getSimpleName(),
            "lapack": netlib.lapack.LAPACK.getInstance().getClass().getSimpleName()}


def spark_factors(model, n_users: int, n_items: int, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """A fitted Spark model's user and item factors as dense arrays indexed by id (zeros where
    ALS has none)."""
    def dense(factors, rows: int) -> np.ndarray:
        frame = factors.toPandas()
        out = np.zeros((rows, rank), dtype=np.float32)
        out[frame["id"].to_numpy()] = np.stack(frame["features"].to_numpy())
        return out

    return dense(model.userFactors, n_users), dense(model.itemFactors, n_items)


def ndcg_at_k(factors: tuple[np.ndarray, np.ndarray], seen, held_out: dict[int, set], k: int = K,
              batch: int = 2048) -> float:
    """Mean nDCG@k over the held-out users: each user's top k items by factor dot product, their
    training items (``seen``, a users x items CSR matrix) left out; binary relevance. The same
    code scores both libraries' factors, so only the factors differ."""
    user_factors, item_factors = factors
    users = np.array(sorted(held_out), dtype=np.int64)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    total = 0.0
    for start in range(0, len(users), batch):
        chunk = users[start:start + batch]
        scores = user_factors[chunk] @ item_factors.T
        rows, cols = seen[chunk].nonzero()
        scores[rows, cols] = -np.inf
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1), axis=1)
        for user, items in zip(chunk, top):
            relevant = held_out[int(user)]
            gains = np.fromiter((item in relevant for item in items), dtype=np.float64, count=k)
            total += (gains * discount).sum() / discount[:min(len(relevant), k)].sum()
    return total / len(users)


def spark_fit(train, rank: int, iterations: int, blocks: int):
    als = ALS(rank=rank, regParam=REG, alpha=ALPHA, maxIter=iterations, implicitPrefs=True, userCol=USER,
              itemCol=ITEM, ratingCol="strength", seed=SEED, numUserBlocks=blocks, numItemBlocks=blocks,
              intermediateStorageLevel="MEMORY_ONLY", finalStorageLevel="MEMORY_ONLY", checkpointInterval=-1)
    started = time.perf_counter()
    model = als.fit(train)
    model.userFactors.count()
    return model, time.perf_counter() - started


def cg_fit(train, rank: int, iterations: int, blocks: int):
    """shoprec's blocked conjugate-gradient ALS on Spark (``als.solver: cg``): implicit's
    objective and kernel, distributed over ``blocks`` blocks per side."""
    from shoprec.models.als_cg import fit_als_cg

    started = time.perf_counter()
    model = fit_als_cg(train, rank, REG, ALPHA, iterations, SEED, blocks, user_col=USER, item_col=ITEM,
                       strength_col="strength")
    model.userFactors.count()
    return model, time.perf_counter() - started


def per_iteration(fit, iterations: int, repeats: int) -> tuple[float, list[float], object, float]:
    """Seconds per iteration of ``fit(n)`` (returning ``(model, seconds)``): the median over
    ``repeats`` of (a fit of ``iterations`` - a fit of 2) / (``iterations`` - 2), every figure, and
    the last long fit's model and seconds."""
    figures, model, seconds = [], None, 0.0
    for _ in range(repeats):
        _, short = fit(2)
        model, seconds = fit(iterations)
        figures.append((seconds - short) / (iterations - 2))
    return statistics.median(figures), figures, model, seconds


def implicit_fit(matrix, rank: int, iterations: int, exact: bool = False):
    """implicit's CPU ALS: by default each least-squares step is 3 conjugate-gradient steps (its
    default, what its users run); ``exact`` solves it by Cholesky, as Spark does."""
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(factors=rank, regularization=REG, iterations=iterations, random_state=SEED,
                                    calculate_training_loss=False, use_cg=not exact)
    started = time.perf_counter()
    model.fit(matrix, show_progress=False)
    return model, time.perf_counter() - started


def implicit_items_first(matrix, rank: int, iterations: int):
    """implicit's own CG kernel with the half-iterations in MLlib's (and the CG solver's) order,
    items before users, from implicit's kind of start: separates the effect of that order on
    nDCG from anything Spark does."""
    from implicit.cpu._als import least_squares_cg

    rng = np.random.default_rng(SEED)
    users = (rng.random((matrix.shape[0], rank)) * 0.01).astype(np.float32)
    items = (rng.random((matrix.shape[1], rank)) * 0.01).astype(np.float32)
    transposed = matrix.T.tocsr()
    for _ in range(iterations):
        least_squares_cg(transposed, items, users, REG, num_threads=0, cg_steps=3)
        least_squares_cg(matrix, users, items, REG, num_threads=0, cg_steps=3)
    return users, items


def measure(spark, pairs: np.ndarray, ranks: list[int], iterations: int, repeats: int, cores: int
            ) -> tuple[dict, dict]:
    """Every library's seconds per iteration and nDCG@10 on ``pairs`` (distinct ``(user, item)``
    rows) at each of ``ranks``, with ``cores`` blocks for Spark: the report's ``factors`` and
    ``spark_blas``."""
    import scipy.sparse as sparse
    from threadpoolctl import threadpool_limits

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
    held_out = test.select(USER, ITEM).toPandas().groupby(USER)[ITEM].apply(set).to_dict()
    print(f"bench-als: {len(pairs)} interactions, {n_users} users, {n_items} items; "
          f"{train.count()} train / {test.count()} test", flush=True)

    # Warm the JVM's JIT and both libraries' thread pools, so the first timed fit is not the slowest.
    spark_fit(train, ranks[0], 2, cores)
    cg_fit(train, ranks[0], 2, cores)
    implicit_fit(confidence, ranks[0], 2)
    results = {}
    for rank in ranks:
        spark_per_iter, spark_runs, spark_model, spark_long = per_iteration(
            lambda n: spark_fit(train, rank, n, cores), iterations, repeats)
        cg_per_iter, cg_runs, cg_model, cg_long = per_iteration(
            lambda n: cg_fit(train, rank, n, cores), iterations, repeats)
        with threadpool_limits(limits=1, user_api="blas"):  # implicit parallelises with its own threads
            implicit_per_iter, implicit_runs, implicit_model, implicit_long = per_iteration(
                lambda n: implicit_fit(confidence, rank, n), iterations, repeats)
            exact_per_iter, _, _, _ = per_iteration(
                lambda n: implicit_fit(confidence, rank, n, exact=True), iterations, repeats)

        print(f"bench-als: rank {rank}: s/iteration Spark {spark_per_iter:.3f}, shoprec CG {cg_per_iter:.3f}, "
              f"implicit {implicit_per_iter:.3f} (exact {exact_per_iter:.3f})", flush=True)
        scores = {"spark": ndcg_at_k(spark_factors(spark_model, n_users, n_items, rank), confidence, held_out),
                  "cg": ndcg_at_k(spark_factors(cg_model, n_users, n_items, rank), confidence, held_out),
                  "implicit_items_first": ndcg_at_k(implicit_items_first(confidence, rank, iterations),
                                                    confidence, held_out),
                  "implicit": ndcg_at_k((implicit_model.user_factors, implicit_model.item_factors), confidence,
                                        held_out)}
        results[str(rank)] = {
            "spark_s_per_iter": round(spark_per_iter, 3), "implicit_s_per_iter": round(implicit_per_iter, 3),
            "ratio": round(spark_per_iter / implicit_per_iter, 2),
            "implicit_exact_s_per_iter": round(exact_per_iter, 3),
            "ratio_to_exact": round(spark_per_iter / exact_per_iter, 2),
            "spark_ndcg_at_10": round(scores["spark"], 4), "implicit_ndcg_at_10": round(scores["implicit"], 4),
            "spark_fit_seconds": round(spark_long, 1), "implicit_fit_seconds": round(implicit_long, 1),
            "cg_s_per_iter": round(cg_per_iter, 3), "cg_ratio": round(cg_per_iter / implicit_per_iter, 2),
            "cg_ndcg_at_10": round(scores["cg"], 4), "cg_fit_seconds": round(cg_long, 1),
            "implicit_items_first_ndcg_at_10": round(scores["implicit_items_first"], 4),
            "s_per_iter_runs": {"spark": [round(x, 3) for x in spark_runs], "cg": [round(x, 3) for x in cg_runs],
                                "implicit": [round(x, 3) for x in implicit_runs]},
        }
        print(f"bench-als: rank {rank}: {results[str(rank)]}", flush=True)
    train.unpersist()
    test.unpersist()
    return results, spark_blas(spark)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--movielens", type=Path, help="a MovieLens directory with u.data instead of synthetic data")
    parser.add_argument("--users", type=int, default=60_000)
    parser.add_argument("--items", type=int, default=12_000)
    parser.add_argument("--pairs", type=int, default=2_000_000)
    parser.add_argument("--ranks", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="timed pairs of fits per library; the median counts")
    parser.add_argument("--out", type=Path, default=PROJECT / "reports" / "bench_als.json")
    given = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(given)

    pairs = movielens_pairs(args.movielens) if args.movielens else synthetic_pairs(args.users, args.items, args.pairs, SEED)
    cores = os.cpu_count() or 1
    spark = build_session(SparkConfig(master=f"local[{cores}]", app_name="bench-als", shuffle_partitions=cores,
                                      conf={"spark.driver.memory": "12g", "spark.ui.enabled": "false",
                                            "spark.ui.showConsoleProgress": "false"}))
    results, blas = measure(spark, pairs, args.ranks, args.iterations, args.repeats, cores)
    spark.stop()

    report = {
        "data": str(args.movielens) if args.movielens else
        f"synthetic power-law: {args.users} users, {args.items} items, {args.pairs} pairs, seed {SEED}",
        "interactions": int(len(pairs)), "iterations": args.iterations, "repeats": args.repeats,
        "reg_param": REG, "alpha": ALPHA,
        "machine": machine(), "spark_blas": blas, "goal": "ratio <= 4", "factors": results,
        "command": "make bench-als" + (f" ALS_ARGS='{' '.join(given)}'" if given else ""),
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"bench-als: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
