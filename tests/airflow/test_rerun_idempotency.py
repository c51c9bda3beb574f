"""Running the whole pipeline again for the same date changes no table: after the daily DAG's run,
every job is run a second time for its date (clean_events as a full rebuild of every batch), and
every table, restricted ones included, holds the same rows as before."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shoprec.catalog import TABLES
from tests.conftest import PIPELINE_JOBS, PIPELINE_RUN_DATE, comparable, read_documented

pytestmark = pytest.mark.airflow
SHOPREC = Path(sys.executable).parent / "shoprec"


def test_every_job_run_twice_for_a_date_gives_the_same_tables(spark, daily_dag_run, tmp_path):
    warehouse = daily_dag_run["warehouse"]
    before = tmp_path / "before" / "warehouse"
    shutil.copytree(warehouse, before)
    shutil.copytree(f"{warehouse}_restricted", f"{before}_restricted")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOPREC__", "PYSPARK_GATEWAY"))}
    log = tmp_path / "rerun.log"
    for job in PIPELINE_JOBS:
        extra = ["--full-rebuild"] if job == "clean_events" else []
        done = subprocess.run([str(SHOPREC), "run", job, "--conf", str(daily_dag_run["conf"]),
                               "--run-date", PIPELINE_RUN_DATE, *extra],
                              cwd=daily_dag_run["root"], env=env, capture_output=True, text=True, timeout=1800)
        with log.open("a") as out:
            out.write(done.stdout + done.stderr)
        assert done.returncode == 0, f"{job}: {done.stderr[-4000:]}"

    changed = {}
    for table in TABLES:
        first, second = comparable(read_documented(spark, before, table.name)), \
            comparable(read_documented(spark, warehouse, table.name))
        only_first, only_second = first.exceptAll(second).count(), second.exceptAll(first).count()
        if only_first or only_second:
            changed[table.name] = (only_first, only_second)
        assert first.count() > 0 or table.name in ("events_quarantine", "cold_start"), table.name
    assert changed == {}, f"rows only in the first run / only in the rerun: {changed}"
