"""mine_rules: purchase baskets -> ``assoc_rules`` and ``bought_together`` (FP-Growth).

Run on a cluster::

    spark-submit --master yarn --deploy-mode client \\
        --py-files dist/shoprec.zip --files conf/base.yaml,conf/cluster.yaml \\
        jobs/mine_rules.py --conf cluster.yaml --run-date 2026-01-07

Baskets are the purchases of one session (``rules.basket: session``) or of one user in one day
(``user_day``), over the last ``rules.history_days`` days up to the run date; baskets of one item
are left out. An itemset must reach ``rules.min_support`` and be in ``rules.min_basket_count``
baskets. Both tables are snapshots partitioned by run_date.
"""

from __future__ import annotations

import argparse
import logging

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from shoprec.config import Config
from shoprec.io.tables import read_snapshot, write_snapshot
from shoprec.jobs.build_profiles import events_as_of, history_start
from shoprec.jobs.common import job_parser, run_main
from shoprec.models import rules as R
from shoprec.tracking import job_run, write_report

JOB = "mine_rules"
ASSOC_RULES = "assoc_rules"
BOUGHT_TOGETHER = "bought_together"
TOP_RULES_IN_REPORT = 20

log = logging.getLogger(__name__)


def run(spark: SparkSession, cfg: Config, run_date: str) -> dict[str, int]:
    """Mine the run date's baskets; return row counts and the basket count."""
    settings = cfg.rules
    with job_run(cfg, JOB, run_date, extra_params={"run_date": run_date}) as tracking:
        lineage = {"run_id": tracking.run_id, "job": JOB, "run_date": run_date}
        events = events_as_of(spark, cfg, run_date, history_start(run_date, settings.history_days))
        baskets = R.purchase_baskets(events, settings.basket).cache()
        counts = {"baskets": baskets.count()}
        if counts["baskets"] == 0:
            log.warning("mine_rules %s: no baskets with two or more items; the rule tables will be empty", run_date)
        support = R.effective_min_support(counts["baskets"], settings.min_support, settings.min_basket_count)
        tracking.log_metrics({"effective_min_support": support})
        _, rules = R.mine_rules(baskets, support, settings.min_confidence)
        write_snapshot(rules, cfg.table_path(ASSOC_RULES), run_date, tracking.run_id, lineage)
        stored = read_snapshot(spark, cfg.table_path(ASSOC_RULES), run_date).drop("run_date").cache()
        write_snapshot(R.bought_together(stored, settings.top_k), cfg.table_path(BOUGHT_TOGETHER), run_date,
                       tracking.run_id, lineage)
        counts[ASSOC_RULES] = stored.count()
        counts[BOUGHT_TOGETHER] = read_snapshot(spark, cfg.table_path(BOUGHT_TOGETHER), run_date).count()
        top = [{"antecedent": ", ".join(r["antecedent"]), "consequent": r["consequent"][0],
                "support": round(r["support"], 5), "confidence": round(r["confidence"], 4), "lift": round(r["lift"], 3)}
               for r in stored.orderBy(F.col("lift").desc(), F.col("confidence").desc()).limit(TOP_RULES_IN_REPORT).collect()]
        write_report(tracking, {"counts": counts, "top_rules_by_lift": top}, "rules")
        tracking.log_metrics({f"rows_{k}" if k != "baskets" else k: v for k, v in counts.items()})
        stored.unpersist()
        baskets.unpersist()
        log.info("mine_rules %s: %s", run_date, counts)
        return counts


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``spark-submit jobs/mine_rules.py`` and ``shoprec run mine_rules``."""
    parser = job_parser(JOB, "Mine association rules over purchase baskets; write assoc_rules and bought_together.")

    def execute(spark: SparkSession, cfg: Config, args: argparse.Namespace) -> None:
        counts = run(spark, cfg, args.run_date)
        print(f"mine_rules {args.run_date}: {counts}")

    return run_main(JOB, parser, execute, argv)
