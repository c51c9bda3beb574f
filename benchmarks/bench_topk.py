"""ALS top-K with exclusions: shoprec's exact scoring (``recommend_unseen``) against MLlib's
``recommendForUserSubset`` ranked ``K + depth`` deep with the excluded items removed afterwards,
and against shoprec's approximate search through an inverted-file index (``--ivf-probes``).

    python benchmarks/bench_topk.py                      # 100,000 users x 20,000 items, 16 factors
    python benchmarks/bench_topk.py --items 100000 --skip-mllib
    python benchmarks/bench_topk.py --items 500000 --skip-mllib --ivf-probes 8 16 32

One implicit ALS model is fitted (2 iterations) on synthetic power-law interactions, whose pairs
are also what each user leaves out (their purchases, Zipf-distributed and capped at 700; the
report gives the mean and the largest). Both top-Ks rank every user of that model and are timed
to the last row written (Spark's ``noop`` sink; each result is cached on the way, for the
comparison), on every core of the machine. The report also counts the users whose MLlib list
came up short (more exclusions among its ``K + depth`` than the depth leaves room for) and, for
the others, how many of the K items both methods agree on. Each IVF run is timed the same way,
its index build (k-means on the driver) included, and scored by its recall: the share of the exact
top-K it finds.

Writes ``reports/bench_topk.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(PROJECT / "lib"), str(PROJECT / "benchmarks")]
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # Spark already runs a task per core

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from pyspark.sql.window import Window  # noqa: E402

from bench_als import machine  # noqa: E402

from shoprec.config import SparkConfig  # noqa: E402
from shoprec.models import als as A  # noqa: E402
from shoprec.models.ivf import default_lists as ivf_default_lists  # noqa: E402
from shoprec.models.neighbours import TargetSearch  # noqa: E402
from shoprec.spark import build_session  # noqa: E402

SEED = 42
MAX_EXCLUDED = 700


def purchases(users: int, items: int, seed: int) -> pd.DataFrame:
    """Distinct (user, item) pairs: items per user Zipf-distributed (capped at :data:`MAX_EXCLUDED`,
    every user at least one), items drawn with power-law popularity."""
    rng = np.random.default_rng(seed)
    per_user = np.minimum(rng.zipf(1.8, users), MAX_EXCLUDED)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    item_draws = rng.choice(items, size=int(per_user.sum() * 1.2) + 1000, p=popularity / popularity.sum())
    pairs = pd.DataFrame({A.USER_INDEX: np.repeat(np.arange(users), per_user).astype(np.int32),
                          A.ITEM_INDEX: item_draws[:per_user.sum()].astype(np.int32)})
    return pairs.drop_duplicates()


def timed_write(frame) -> float:
    start = time.perf_counter()
    frame.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - start


def measure(spark, users: int, items: int, factors: int, k: int, depth: int, with_mllib: bool = True,
            ivf_probes: tuple[int, ...] = (), ivf_lists: int = 0) -> dict:
    """Fit the model, time the top-Ks on ``spark`` and compare their lists (see the module docstring).

    Returns:
        the report's measured fields (``exact_seconds``; with MLlib also ``mllib_seconds``,
        ``speed_up``, ``mllib_users_short``, ``shared_items_fraction``; with ``ivf_probes`` an
        ``ivf`` list of ``probes``, ``lists``, ``seconds``, ``speed_up`` and ``recall``) and the
        data's sizes.
    """
    pairs = purchases(users, items, SEED)
    bought = spark.createDataFrame(pairs).cache()
    excluded_per_user = pairs.groupby(A.USER_INDEX).size()
    print(f"bench-topk: {len(pairs)} purchases, {users} users, {items} items; excluded per user "
          f"mean {excluded_per_user.mean():.1f}, max {excluded_per_user.max()}", flush=True)
    model = A.fit_als(bought.withColumn(A.STRENGTH, F.lit(1.0)),
                      A.AlsParams(rank=factors, reg_param=0.1, alpha=10.0, max_iter=2), seed=SEED)
    model.userFactors.cache().count()
    model.itemFactors.cache().count()
    known_users = model.userFactors.select(F.col("id").alias(A.USER_INDEX)).cache()
    known_users.count()
    items_known = model.itemFactors.count()

    # Each result is cached as the timed write runs, so the comparison below reads it instead of
    # ranking every user again (MLlib's deep ranking takes minutes).
    exact = A.recommend_unseen(model, known_users, bought, k).cache()
    timed_write(A.recommend_unseen(model, known_users.limit(1000), bought, k))  # warm the Python workers
    exact_seconds = timed_write(exact)
    print(f"bench-topk: shoprec exact top-{k}: {exact_seconds:.1f} s", flush=True)
    result = {"purchases": int(len(pairs)), "excluded_per_user_mean": round(float(excluded_per_user.mean()), 2),
              "excluded_per_user_max": int(excluded_per_user.max()), "items_with_factors": items_known,
              "exact_seconds": round(exact_seconds, 1)}
    if ivf_probes:
        exact_pairs = exact.select(A.USER_INDEX, A.ITEM_INDEX)
        runs = []
        for probes in ivf_probes:
            search = TargetSearch("ivf", ivf_lists, probes, SEED)
            start = time.perf_counter()
            approximate = A.recommend_unseen(model, known_users, bought, k, search).cache()
            seconds = time.perf_counter() - start + timed_write(approximate)
            recall = approximate.join(exact_pairs, [A.USER_INDEX, A.ITEM_INDEX]).count() / exact_pairs.count()
            lists = ivf_lists or ivf_default_lists(items_known)
            runs.append({"probes": probes, "lists": lists, "seconds": round(seconds, 1),
                         "speed_up": round(exact_seconds / seconds, 1), "recall": round(recall, 4)})
            print(f"bench-topk: IVF {probes} of {lists} lists: {seconds:.1f} s, recall {recall:.4f}", flush=True)
            approximate.unpersist()
        result["ivf"] = runs
    if with_mllib:
        deep = (model.recommendForUserSubset(known_users, k + depth)
                .select(A.USER_INDEX, F.posexplode("recommendations").alias("position", "rec"))
                .select(A.USER_INDEX, "position", F.col("rec.item_index").alias(A.ITEM_INDEX)))
        kept = deep.join(bought, [A.USER_INDEX, A.ITEM_INDEX], "left_anti")
        by_position = Window.partitionBy(A.USER_INDEX).orderBy("position")
        ranked = kept.withColumn("rank", F.row_number().over(by_position)).where(F.col("rank") <= k).cache()
        mllib_seconds = timed_write(ranked)
        print(f"bench-topk: MLlib {k}+{depth} deep: {mllib_seconds:.1f} s", flush=True)
        mine = exact.groupBy(A.USER_INDEX).agg(F.collect_set(A.ITEM_INDEX).alias("exact_items"))
        theirs = ranked.groupBy(A.USER_INDEX).agg(F.collect_set(A.ITEM_INDEX).alias("mllib_items"))
        compared = mine.join(theirs, A.USER_INDEX, "left").select(
            F.coalesce(F.size("mllib_items"), F.lit(0)).alias("mllib_count"),
            F.size(F.array_intersect("exact_items", F.coalesce("mllib_items", F.array()))).alias("shared"),
            F.size("exact_items").alias("exact_count")).toPandas()
        full = compared[compared["mllib_count"] == compared["exact_count"]]
        result.update({
            "mllib_depth": depth, "mllib_seconds": round(mllib_seconds, 1),
            "speed_up": round(mllib_seconds / exact_seconds, 1),
            "mllib_users_short": int((compared["mllib_count"] < compared["exact_count"]).sum()),
            "shared_items_fraction": round(float(full["shared"].sum() / max(full["exact_count"].sum(), 1)), 5),
        })
        ranked.unpersist()
    exact.unpersist()
    bought.unpersist()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--factors", type=int, default=16)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--depth", type=int, default=500, help="MLlib's extra depth for excluded items")
    parser.add_argument("--skip-mllib", action="store_true", help="time only shoprec's top-K")
    parser.add_argument("--ivf-probes", type=int, nargs="*", default=[],
                        help="also time the IVF search at these probes per user, and score its recall")
    parser.add_argument("--ivf-lists", type=int, default=0, help="IVF lists (0: about the square root of the items)")
    parser.add_argument("--out", type=Path, default=PROJECT / "reports" / "bench_topk.json")
    given = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(given)

    cores = os.cpu_count() or 1
    spark = build_session(SparkConfig(master=f"local[{cores}]", app_name="bench-topk", shuffle_partitions=cores,
                                      conf={"spark.driver.memory": "12g", "spark.ui.enabled": "false",
                                            "spark.ui.showConsoleProgress": "false"}))
    spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    result = measure(spark, args.users, args.items, args.factors, args.k, args.depth, not args.skip_mllib,
                     tuple(args.ivf_probes), args.ivf_lists)
    spark.stop()

    report = {
        "data": f"synthetic power-law purchases, seed {SEED}", "users": args.users, "items": args.items,
        "factors": args.factors, "k": args.k, **result, "machine": machine(),
        "command": "python benchmarks/bench_topk.py" + (f" {' '.join(given)}" if given else ""),
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"bench-topk: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
