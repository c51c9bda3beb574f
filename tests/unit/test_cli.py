"""The shoprec command: job listing, and config errors reported before Spark starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from shoprec.jobs import JOBS

PROJECT = Path(__file__).resolve().parents[2]
SHOPREC = str(Path(sys.executable).parent / "shoprec")


def shoprec(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SHOPREC, *args], cwd=PROJECT, capture_output=True, text=True, timeout=120)


def test_help_lists_every_job():
    done = shoprec("--help")
    assert done.returncode == 0
    for job in JOBS:
        assert job in done.stdout
    assert "spark-submit jobs/JOB.py" in done.stdout


def test_config_error_names_the_key_without_starting_spark(tmp_path):
    conf = tmp_path / "bad.yaml"
    conf.write_text(f"extends: {PROJECT / 'conf' / 'base.yaml'}\nclean:\n  bots:\n    max_events_per_hour: 5\n")
    done = shoprec("run", "clean_events", "--conf", str(conf), "--run-date", "2026-01-01")
    assert done.returncode == 2
    assert "unknown config key clean.bots.max_events_per_hour" in done.stderr
    assert "SparkContext" not in done.stderr and "log4j" not in done.stderr


def test_bad_run_date_and_unknown_job():
    done = shoprec("run", "clean_events", "--run-date", "01/02/2026")
    assert done.returncode == 2 and "not a date (YYYY-MM-DD)" in done.stderr
    done = shoprec("run", "train_everything")
    assert done.returncode == 2 and "unknown job 'train_everything'" in done.stderr
