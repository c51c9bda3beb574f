"""Running the whole pipeline again for the same date changes no table: after the daily DAG's run,
every job is run a second time for its date (clean_events as a full rebuild of every batch), and
every table, restricted ones included, holds the same rows as before.

The second run calls each job's ``run`` in the suite's Spark session, with the DAG's config and
its shuffle partitions, so it costs the jobs' work and not nine Spark and TensorFlow start-ups."""

from __future__ import annotations

import importlib
import os
import shutil

import pytest

from shoprec.catalog import TABLES
from shoprec.config import load_config
from shoprec.jobs import JOBS
from tests.conftest import PIPELINE_JOBS, PIPELINE_RUN_DATE, comparable, job_shuffle_partitions, read_documented

pytestmark = pytest.mark.airflow
# A rerun of the day's ingest may find no bad rows, the pipeline's log has no bots, and the
# cold-start table may have no cold users.
MAY_BE_EMPTY = {"events_quarantine", "events_bot", "cold_start"}


def test_every_job_run_twice_for_a_date_gives_the_same_tables(spark, daily_dag_run, tmp_path):
    warehouse = daily_dag_run["warehouse"]
    before = tmp_path / "before" / "warehouse"
    shutil.copytree(warehouse, before)
    shutil.copytree(f"{warehouse}_restricted", f"{before}_restricted")

    environ = {k: v for k, v in os.environ.items() if not k.startswith("SHOPREC__")}
    cfg = load_config(daily_dag_run["conf"], environ=environ, require_input=True)
    with job_shuffle_partitions(spark, cfg):
        for job in PIPELINE_JOBS:
            module = importlib.import_module(JOBS[job][0])
            extra = {"full_rebuild": True} if job == "clean_events" else {}
            module.run(spark, cfg, PIPELINE_RUN_DATE, **extra)

    changed = {}
    for table in TABLES:
        first = comparable(read_documented(spark, before, table.name))
        second = comparable(read_documented(spark, warehouse, table.name))
        only_first, only_second = first.exceptAll(second).count(), second.exceptAll(first).count()
        if only_first or only_second:
            changed[table.name] = (only_first, only_second)
        assert first.count() > 0 or table.name in MAY_BE_EMPTY, f"{table.name} is empty after the DAG's run"
    assert changed == {}, f"rows only in the first run / only in the rerun: {changed}"
