"""The whole pipeline through spark-submit on a Spark standalone cluster (a master and two workers
on loopback), the ranker trained by Horovod across both workers; its tables match those of the
same input run by the daily DAG on local[2]."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shoprec.catalog import TABLES
from tests.cluster.conftest import JOBS, master_state, spark_submit
from tests.conftest import PROJECT, comparable, read_documented

pytestmark = pytest.mark.cluster
# Tables whose content does not depend on where tasks run: compared row for row (doubles to 6
# places). ALS is seeded and its blocks fixed, so its factors, and the candidates and features
# built from them, are too. The ranker's outputs (recommendations, search_results, eval_metrics)
# depend on thread timing in TensorFlow: compared by size.
DETERMINISTIC = ["events_clean", "events_quarantine", "user_id_map", "interactions", "user_profile", "item_profile",
                 "popular_items", "content_similar_items", "als_recs", "similar_items", "als_index", "cold_start",
                 "assoc_rules", "bought_together", "training_set"]


def test_every_job_ran_on_the_cluster_and_the_ranker_on_both_workers(standalone_cluster, cluster_run):
    apps = master_state(standalone_cluster)["completedapps"]
    assert {f"shoprec-{job}" for job in JOBS} <= {a["name"] for a in apps}
    ranker = next(a for a in apps if a["name"] == "shoprec-train_ranker")
    # horovod.spark.run held one task slot per Horovod process: an executor on each worker.
    for index in range(2):
        executors = standalone_cluster["root"] / f"work-{index}" / ranker["id"]
        assert executors.is_dir() and any(executors.iterdir()), f"worker {index} ran no train_ranker executor"


def test_cluster_tables_match_the_local_run(spark, cluster_run, daily_dag_run):
    local, cluster = daily_dag_run["warehouse"], cluster_run["warehouse"]

    def read(warehouse: Path, name: str):
        return read_documented(spark, warehouse, name)

    for table in TABLES:
        rows = read(cluster, table.name).count()
        assert rows == read(local, table.name).count(), table.name
        assert rows > 0 or table.name in ("events_quarantine", "cold_start"), table.name  # none in a clean log
    for name in DETERMINISTIC:
        on_cluster, on_local = comparable(read(cluster, name)), comparable(read(local, name))
        assert on_cluster.exceptAll(on_local).count() == 0 and on_local.exceptAll(on_cluster).count() == 0, name


def test_the_ranker_trains_in_a_shipped_environment(standalone_cluster, cluster_run, tmp_path):
    """make package-env's archive, shipped with --archives and unpacked by Spark beside each
    executor, is the Python the Horovod workers run in."""
    packed = subprocess.run(["bash", str(PROJECT / "scripts" / "package_env.sh"), str(tmp_path)],
                            capture_output=True, text=True, timeout=1800)
    assert packed.returncode == 0, packed.stderr[-3000:]
    code = spark_submit(standalone_cluster["master"], cluster_run["dist"], "train_ranker", cluster_run["root"],
                        cluster_run["log"], "--archives", f"{tmp_path}/shoprec-env.tar.gz#environment",
                        "--conf", "spark.pyspark.python=./environment/bin/python",
                        "--conf", f"spark.pyspark.driver.python={sys.executable}")
    assert code == 0, cluster_run["log"].read_text()[-6000:]
    app = max((a for a in master_state(standalone_cluster)["completedapps"] if a["name"] == "shoprec-train_ranker"),
              key=lambda a: a["starttime"])
    for index in range(2):
        unpacked = list((standalone_cluster["root"] / f"work-{index}" / app["id"]).glob("*/environment/bin/python"))
        assert unpacked, f"worker {index}: no unpacked environment for the executor"
