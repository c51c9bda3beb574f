"""What every job's ``main`` shares: argument parsing, config loading, the session's lifetime."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from typing import Callable

from shoprec.config import Config, ConfigError, load_config
from shoprec.privacy import SecretError, load_secret

log = logging.getLogger("shoprec")


def iso_date(text: str) -> str:
    """argparse type for ``YYYY-MM-DD``; returns the normalised string."""
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from err


def job_parser(job: str, description: str) -> argparse.ArgumentParser:
    """The arguments every job takes: ``--conf`` and ``--run-date``."""
    parser = argparse.ArgumentParser(prog=f"shoprec run {job}", description=description)
    parser.add_argument("--conf", default="conf/local.yaml", help="config file (default: conf/local.yaml)")
    parser.add_argument("--run-date", type=iso_date, default=None,
                        help="logical date of the run, YYYY-MM-DD (default: today, UTC)")
    return parser


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("py4j", "urllib3", "alembic", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_main(
    job: str,
    parser: argparse.ArgumentParser,
    run: Callable[..., object],
    argv: list[str] | None,
    needs_input: bool = False,
    needs_secret: bool = False,
) -> int:
    """Parse ``argv``, load and validate the config, run ``run(spark, cfg, args)``, stop the session.

    The config is validated before Spark starts, so a bad key fails in a second, not a minute;
    so is the pseudonymisation secret of a job that ``needs_secret``.
    """
    setup_logging()
    args = parser.parse_args(argv)
    if args.run_date is None:
        # The caller's date stands in for an explicit one; the job itself never reads the clock.
        args.run_date = dt.datetime.now(dt.timezone.utc).date().isoformat()
    try:
        cfg: Config = load_config(args.conf, require_input=needs_input)
        if needs_secret and cfg.privacy.pseudonymize:
            load_secret(cfg.privacy.secret_env)
    except (ConfigError, SecretError) as err:
        print(f"shoprec {job}: config error: {err}", file=sys.stderr)
        return 2
    from shoprec.spark import build_session

    spark = build_session(cfg.spark, f"shoprec-{job}")
    try:
        run(spark, cfg, args)
        from shoprec.catalog import register_tables

        register_tables(spark, cfg, job)
    finally:
        spark.stop()
    return 0
