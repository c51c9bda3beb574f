"""generate: write a synthetic shop's raw event log (gzipped JSON lines, partitioned by landing date).

Run on a cluster::

    spark-submit --master yarn --deploy-mode client --py-files dist/shoprec.zip \\
        jobs/generate.py --conf cluster.yaml --events 50000000 --days 30 --out s3a://bucket/raw/synthetic

or locally: ``shoprec generate --events 200000 --days 7 --out var/raw/synthetic``.
Options left out come from the ``generate`` section of the config. The output replaces ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

from pyspark.sql import SparkSession

from shoprec.config import Config
from shoprec.jobs.common import job_parser, run_main
from shoprec.synthetic import generate_events, write_events

JOB = "generate"
log = logging.getLogger(__name__)


def run(spark: SparkSession, cfg: Config) -> str:
    """Generate ``cfg.generate.events`` raw lines into ``cfg.generate.out``; return the output path."""
    gen = cfg.generate
    log.info("generating %d events over %d days from %s into %s (seed %d)", gen.events, gen.days, gen.start_date, gen.out, gen.seed)
    write_events(generate_events(spark, gen), gen.out)
    return gen.out


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``spark-submit jobs/generate.py`` and ``shoprec generate``."""
    parser = job_parser(JOB, "Generate a synthetic shop's raw event log.")
    parser.add_argument("--events", type=int, help="number of raw log lines to write")
    parser.add_argument("--days", type=int, help="number of days the log spans")
    parser.add_argument("--start-date", help="first day of the log, YYYY-MM-DD")
    parser.add_argument("--out", help="output directory (local path, hdfs:// or s3a:// URI)")
    parser.add_argument("--seed", type=int, help="random seed; the same seed gives the same log")
    parser.add_argument("--dirty-fraction", type=float, help="share of records to corrupt")
    parser.add_argument("--partitions", type=int, help="parallel generator tasks")

    def execute(spark: SparkSession, cfg: Config, args: argparse.Namespace) -> None:
        overrides = {k: v for k, v in {
            "events": args.events, "days": args.days, "start_date": args.start_date, "out": args.out,
            "seed": args.seed, "dirty_fraction": args.dirty_fraction, "partitions": args.partitions,
        }.items() if v is not None}
        if "out" in overrides:
            from shoprec.config import absolute_path

            overrides["out"] = absolute_path(overrides["out"])
        cfg = dataclasses.replace(cfg, generate=dataclasses.replace(cfg.generate, **overrides))
        out = run(spark, cfg)
        print(f"generate: {cfg.generate.events} events over {cfg.generate.days} days written to {out}")

    return run_main(JOB, parser, execute, argv)
