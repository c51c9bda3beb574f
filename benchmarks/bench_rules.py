"""Association rules from Spark's FP-Growth against mlxtend, on the same baskets in the same run.

    make bench-rules        # -> reports/groceries_rules.json and reports/synthetic_rules.json

Two basket sets: the 9,835 real baskets of ../shared/data/groceries-arules (minSupport 0.001,
minConfidence 0.5) and a larger synthetic set written by this script (``--baskets``, default
200,000: power-law item popularity, Poisson basket sizes, planted bundles that are bought
together; minSupport 0.001, minConfidence 0.3). For each: Spark MLlib FP-Growth as shoprec runs it
(shoprec.models.rules, from the basket file to the collected rules) and mlxtend's faster
algorithm for the set + ``association_rules`` (from the same file, one-hot encoding included), each timed, and the two
single-consequent rule sets compared rule by rule (support, confidence and lift to 1e-9).
Spark runs on local[2] (every core here); mlxtend is single-threaded by design.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "lib"))

from shoprec.config import SparkConfig  # noqa: E402
from shoprec.models import rules as R  # noqa: E402
from shoprec.spark import build_session  # noqa: E402

DEFAULT_DATA = PROJECT.parent / "shared" / "data" / "groceries-arules" / "groceries.csv"
# Thresholds of the published Groceries results (R arules); the synthetic set's are its own.
GROCERIES = {"min_support": 0.001, "min_confidence": 0.5}
SYNTHETIC = {"min_support": 0.001, "min_confidence": 0.3}
# mlxtend's faster algorithm for each set, measured here: apriori on Groceries' 169 items with
# long itemsets (fpgrowth took over 4 minutes); fpgrowth on the synthetic set's 2,000 items, whose
# level-2 candidates would make apriori's one-hot products baskets x 2M pairs.
GROCERIES_MLXTEND = "apriori"
SYNTHETIC_MLXTEND = "fpgrowth"
TOLERANCE = 1e-9
SEED = 42
DEFAULT_BASKETS = 200_000


def synthetic_baskets(path: Path, baskets: int, items: int = 2000, bundles: int = 100, seed: int = SEED) -> None:
    """Write ``baskets`` lines in the Groceries format: each basket has 1 + Poisson(3) items drawn
    by Zipf-like popularity, and three in ten also hold most of one planted bundle (2-4 items
    bought together), so rules with real lift exist beside the popular-item noise."""
    rng = np.random.default_rng(seed)
    weight = 1.0 / np.arange(1, items + 1) ** 0.8
    weight /= weight.sum()
    bundle_items = [rng.choice(items, rng.integers(2, 5), replace=False) for _ in range(bundles)]
    sizes = 1 + rng.poisson(3, baskets)
    drawn = rng.choice(items, int(sizes.sum()), p=weight)
    ends = np.cumsum(sizes)
    with_bundle = rng.random(baskets) < 0.3
    chosen_bundle = rng.integers(0, bundles, baskets)
    with path.open("w") as out:
        start = 0
        for n in range(baskets):
            basket = set(drawn[start:ends[n]].tolist())
            start = ends[n]
            if with_bundle[n]:
                bundle = bundle_items[chosen_bundle[n]]
                basket.update(bundle[rng.random(len(bundle)) < 0.85].tolist())
            out.write(",".join(f"item{i}" for i in sorted(basket)) + "\n")


def spark_rules(spark, path: Path, min_support: float, min_confidence: float) -> tuple[dict, float]:
    """``{(antecedent, consequent): (support, confidence, lift)}`` from Spark, and the seconds it took."""
    started = time.perf_counter()
    baskets = R.read_basket_lines(spark, str(path))
    _, rules = R.mine_rules(baskets, min_support, min_confidence)
    found = {(tuple(r["antecedent"]), r["consequent"][0]): (r["support"], r["confidence"], r["lift"])
             for r in rules.collect()}
    return found, time.perf_counter() - started


def mlxtend_rules(path: Path, min_support: float, min_confidence: float, algorithm: str) -> tuple[dict, float]:
    """The same rules from mlxtend (``algorithm`` + association_rules), and the seconds it took."""
    import pandas as pd
    from mlxtend import frequent_patterns
    from mlxtend.frequent_patterns import association_rules
    from mlxtend.preprocessing import TransactionEncoder

    started = time.perf_counter()
    baskets = [sorted({item.strip() for item in line.rstrip("\n").split(",") if item.strip()})
               for line in path.read_text().splitlines()]
    encoder = TransactionEncoder()
    onehot = pd.DataFrame(encoder.fit(baskets).transform(baskets), columns=encoder.columns_)
    itemsets = getattr(frequent_patterns, algorithm)(onehot, min_support=min_support, use_colnames=True)
    rules = association_rules(itemsets, num_itemsets=len(baskets), metric="confidence",
                              min_threshold=min_confidence)
    rules = rules[rules["consequents"].apply(len) == 1]
    found = {(tuple(sorted(r.antecedents)), next(iter(r.consequents))): (r.support, r.confidence, r.lift)
             for r in rules.itertuples()}
    return found, time.perf_counter() - started


def threshold_ties(ours: dict, theirs: dict, min_confidence: float) -> list:
    """Rules only Spark keeps whose confidence is exactly ``min_confidence``. Spark divides
    integer counts (6 / 20 == 0.3); mlxtend divides float supports (0.0012 / 0.004 is a hair
    under 0.3) and drops them. Not a disagreement about the data, so not a difference."""
    return sorted(k for k in set(ours) - set(theirs) if abs(ours[k][1] - min_confidence) < TOLERANCE)


def differences(ours: dict, theirs: dict, min_confidence: float | None = None) -> list[str]:
    """Human-readable differences between two rule sets (empty when they agree), apart from
    :func:`threshold_ties` when ``min_confidence`` is given."""
    ties = set(threshold_ties(ours, theirs, min_confidence)) if min_confidence is not None else set()
    problems = [f"only in Spark: {k}" for k in sorted(set(ours) - set(theirs) - ties)]
    problems += [f"only in mlxtend: {k}" for k in sorted(set(theirs) - set(ours))]
    for key in sorted(set(ours) & set(theirs)):
        if any(abs(a - b) > TOLERANCE for a, b in zip(ours[key], theirs[key])):
            problems.append(f"measures differ for {key}: {ours[key]} vs {theirs[key]}")
    return problems


def compare(spark, path: Path, name: str, thresholds: dict, algorithm: str, command: str) -> tuple[dict, list[str]]:
    """Both implementations on the basket file at ``path``: the report and the differences."""
    ours, seconds = spark_rules(spark, path, **thresholds)
    theirs, mlxtend_seconds = mlxtend_rules(path, **thresholds, algorithm=algorithm)
    problems = differences(ours, theirs, thresholds["min_confidence"])
    report = {
        "data": name,
        "baskets": sum(1 for _ in path.open()),
        "rule_count": len(ours),
        "max_lift": round(max(v[2] for v in ours.values()), 6) if ours else None,
        "seconds": round(seconds, 2),
        "mlxtend_rule_count": len(theirs),
        "mlxtend_seconds": round(mlxtend_seconds, 2),
        "mlxtend_algorithm": algorithm,
        "mlxtend_over_spark": round(mlxtend_seconds / seconds, 2),
        "identical_to_mlxtend": not problems,
        "only_in_spark_at_exactly_min_confidence": len(threshold_ties(ours, theirs, thresholds["min_confidence"])),
        "rules_at_confidence_exactly_min": sum(1 for v in ours.values()
                                               if abs(v[1] - thresholds["min_confidence"]) < TOLERANCE),
        **thresholds,
        "command": command,
    }
    print(json.dumps(report, indent=1), flush=True)
    for problem in problems[:20]:
        print(problem)
    return report, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="the Groceries basket file")
    parser.add_argument("--baskets", type=int, default=DEFAULT_BASKETS, help="synthetic baskets (0: Groceries only)")
    parser.add_argument("--reports", default=str(PROJECT / "reports"))
    args = parser.parse_args(argv)
    reports = Path(args.reports)
    reports.mkdir(parents=True, exist_ok=True)
    spark = build_session(SparkConfig(master="local[2]", app_name="bench-rules", shuffle_partitions=4,
                                      conf={"spark.ui.showConsoleProgress": "false", "spark.driver.memory": "6g"}),
                          "bench-rules")
    spark.sparkContext.setLogLevel("ERROR")
    failed = False
    try:
        report, problems = compare(spark, Path(args.data), "Groceries (groceries-arules)", GROCERIES,
                                   GROCERIES_MLXTEND, "make bench-rules")
        (reports / "groceries_rules.json").write_text(json.dumps(report, indent=1) + "\n")
        failed |= bool(problems)
        if args.baskets:
            with tempfile.TemporaryDirectory() as scratch:
                path = Path(scratch) / "baskets.csv"
                synthetic_baskets(path, args.baskets)
                report, problems = compare(
                    spark, path, f"synthetic: {args.baskets} baskets, 2000 items, 100 bundles, seed {SEED}",
                    SYNTHETIC, SYNTHETIC_MLXTEND, "make bench-rules" + (f" RULES_ARGS='--baskets {args.baskets}'"
                                                     if args.baskets != DEFAULT_BASKETS else ""))
            (reports / "synthetic_rules.json").write_text(json.dumps(report, indent=1) + "\n")
            failed |= bool(problems)
    finally:
        spark.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
