"""The whole pipeline through spark-submit on a Spark standalone cluster (a master and two workers
on loopback), the ranker trained by Horovod across both workers; its tables match those of the
same input run by the daily DAG on local[2]."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shoprec.catalog import BY_NAME, TABLES
from tests.conftest import PIPELINE_RUN_DATE, write_pipeline_dist

pytestmark = pytest.mark.cluster
JOBS = ["clean_events", "build_profiles", "train_als", "mine_rules", "build_training_set", "train_ranker",
        "score", "search_rerank", "evaluate"]
# Tables whose content does not depend on where tasks run: compared row for row. The others (ALS
# factors, the ranker's scores) depend on floating-point order and thread timing: compared by size.
DETERMINISTIC = ["events_clean", "events_quarantine", "interactions", "item_profile", "popular_items",
                 "content_similar_items", "assoc_rules", "bought_together", "cold_start"]
# Columns that name the run, not the data.
RUN_COLUMNS = {"ingest_run_id"}


def spark_submit(master: str, dist: Path, job: str, cwd: Path, log: Path) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_GATEWAY", "SHOPREC__"))}
    env.update({"PATH": f"{bin_dir}:{env['PATH']}", "PYSPARK_PYTHON": sys.executable})
    command = [
        str(bin_dir / "spark-submit"), "--master", master, "--deploy-mode", "client",
        "--driver-memory", "2g", "--driver-java-options", "-Xss16m",
        "--executor-memory", "2g", "--conf", "spark.executor.cores=1", "--conf", "spark.ui.enabled=false",
        "--py-files", str(dist / "shoprec.zip"),
        "--files", f"{dist}/conf/base.yaml,{dist}/conf/local.yaml,{dist}/conf/pipeline-test.yaml",
        str(dist / "jobs" / f"{job}.py"), "--conf", str(dist / "conf" / "pipeline-test.yaml"),
        "--run-date", PIPELINE_RUN_DATE,
    ]
    with open(log, "a") as out:
        out.write(f"\n=== {' '.join(command)}\n")
        out.flush()
        return subprocess.run(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=1800)


@pytest.fixture(scope="module")
def cluster_run(standalone_cluster, pipeline_raw_log, tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster_run")
    dist = write_pipeline_dist(root, pipeline_raw_log)
    log = root / "spark-submit.log"
    for job in JOBS:
        done = spark_submit(standalone_cluster["master"], dist, job, root, log)
        assert done.returncode == 0, f"{job} failed on the cluster:\n{log.read_text()[-6000:]}"
    return {"warehouse": root / "warehouse", "log": log}


def comparable(df):
    """Rows as a set-comparable frame: run ids out, doubles rounded, arrays of structs kept."""
    columns = []
    for field in df.schema.fields:
        if field.name in RUN_COLUMNS:
            continue
        column = F.col(field.name)
        if isinstance(field.dataType, T.DoubleType):
            column = F.round(column, 9)
        columns.append(column.alias(field.name))
    return df.select(*columns)


def test_every_job_ran_on_the_cluster_and_the_ranker_on_both_workers(standalone_cluster, cluster_run):
    with urllib.request.urlopen(f"http://127.0.0.1:{standalone_cluster['ui_port']}/json/", timeout=10) as answer:
        apps = json.load(answer)["completedapps"]
    assert {f"shoprec-{job}" for job in JOBS} <= {a["name"] for a in apps}
    ranker = next(a for a in apps if a["name"] == "shoprec-train_ranker")
    # horovod.spark.run held one task slot per Horovod process: an executor on each worker.
    for index in range(2):
        executors = standalone_cluster["root"] / f"work-{index}" / ranker["id"]
        assert executors.is_dir() and any(executors.iterdir()), f"worker {index} ran no train_ranker executor"


def test_cluster_tables_match_the_local_run(spark, cluster_run, daily_dag_run):
    local, cluster = daily_dag_run["warehouse"], cluster_run["warehouse"]
    for table in TABLES:
        on_cluster = spark.read.parquet(str(cluster / table.name))
        on_local = spark.read.parquet(str(local / table.name))
        assert on_cluster.count() == on_local.count() > 0, table.name
    for name in DETERMINISTIC:
        on_cluster = comparable(spark.read.parquet(str(cluster / name)))
        on_local = comparable(spark.read.parquet(str(local / name)))
        assert on_cluster.exceptAll(on_local).count() == 0 and on_local.exceptAll(on_cluster).count() == 0, name
    assert set(BY_NAME) >= set(DETERMINISTIC)
