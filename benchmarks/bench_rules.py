"""Association rules on the Groceries baskets, checked against an independent implementation.

    make bench-rules        # -> reports/groceries_rules.json

Spark MLlib FP-Growth (shoprec.models.rules) at minSupport 0.001, minConfidence 0.5 on the
9,835 baskets of ../shared/data/groceries-arules, timed; then mlxtend's apriori +
association_rules on the same baskets, and the two single-consequent rule sets compared rule
by rule (support, confidence and lift to 1e-9).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "lib"))

from shoprec.config import SparkConfig  # noqa: E402
from shoprec.models import rules as R  # noqa: E402
from shoprec.spark import build_session  # noqa: E402

DEFAULT_DATA = PROJECT.parent / "shared" / "data" / "groceries-arules" / "groceries.csv"
MIN_SUPPORT = 0.001
MIN_CONFIDENCE = 0.5
TOLERANCE = 1e-9


def spark_rules(spark, path: Path) -> tuple[dict, float]:
    """``{(antecedent, consequent): (support, confidence, lift)}`` from Spark, and the seconds it took."""
    started = time.perf_counter()
    baskets = R.read_basket_lines(spark, str(path))
    _, rules = R.mine_rules(baskets, MIN_SUPPORT, MIN_CONFIDENCE)
    found = {(tuple(r["antecedent"]), r["consequent"][0]): (r["support"], r["confidence"], r["lift"])
             for r in rules.collect()}
    return found, time.perf_counter() - started


def mlxtend_rules(path: Path) -> tuple[dict, float]:
    """The same rules from mlxtend (apriori + association_rules), and the seconds it took."""
    import pandas as pd
    from mlxtend.frequent_patterns import apriori, association_rules
    from mlxtend.preprocessing import TransactionEncoder

    started = time.perf_counter()
    baskets = [sorted({item.strip() for item in line.rstrip("\n").split(",") if item.strip()})
               for line in path.read_text().splitlines()]
    encoder = TransactionEncoder()
    onehot = pd.DataFrame(encoder.fit(baskets).transform(baskets), columns=encoder.columns_)
    itemsets = apriori(onehot, min_support=MIN_SUPPORT, use_colnames=True)
    rules = association_rules(itemsets, metric="confidence", min_threshold=MIN_CONFIDENCE)
    rules = rules[rules["consequents"].apply(len) == 1]
    found = {(tuple(sorted(r.antecedents)), next(iter(r.consequents))): (r.support, r.confidence, r.lift)
             for r in rules.itertuples()}
    return found, time.perf_counter() - started


def differences(ours: dict, theirs: dict) -> list[str]:
    """Human-readable differences between two rule sets (empty when they agree)."""
    problems = [f"only in Spark: {k}" for k in sorted(set(ours) - set(theirs))]
    problems += [f"only in mlxtend: {k}" for k in sorted(set(theirs) - set(ours))]
    for key in sorted(set(ours) & set(theirs)):
        if any(abs(a - b) > TOLERANCE for a, b in zip(ours[key], theirs[key])):
            problems.append(f"measures differ for {key}: {ours[key]} vs {theirs[key]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--reports", default=str(PROJECT / "reports"))
    args = parser.parse_args(argv)
    path = Path(args.data)
    spark = build_session(SparkConfig(master="local[2]", app_name="bench-rules", shuffle_partitions=4,
                                      conf={"spark.ui.showConsoleProgress": "false"}), "bench-rules")
    spark.sparkContext.setLogLevel("ERROR")
    try:
        ours, seconds = spark_rules(spark, path)
    finally:
        spark.stop()
    theirs, mlxtend_seconds = mlxtend_rules(path)
    problems = differences(ours, theirs)
    report = {
        "rule_count": len(ours),
        "max_lift": round(max(v[2] for v in ours.values()), 6),
        "seconds": round(seconds, 2),
        "mlxtend_rule_count": len(theirs),
        "mlxtend_seconds": round(mlxtend_seconds, 2),
        "identical_to_mlxtend": not problems,
        "rules_at_confidence_exactly_0_5": sum(1 for v in ours.values() if abs(v[1] - 0.5) < TOLERANCE),
        "min_support": MIN_SUPPORT,
        "min_confidence": MIN_CONFIDENCE,
        "command": "make bench-rules",
    }
    Path(args.reports).mkdir(parents=True, exist_ok=True)
    (Path(args.reports) / "groceries_rules.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    for problem in problems[:20]:
        print(problem)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
