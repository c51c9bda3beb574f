"""The pipeline's Horovod and TensorFlow jobs through spark-submit on a Spark standalone cluster (a
master and two workers on loopback), with the executors' Python shipped as ``make package-env``'s
archive: the ranker is trained across both workers, and score's recommendations equal those of the
daily DAG's run of the same input on local[2]. Packing the environment again reuses the archive."""

from __future__ import annotations

import filecmp
import subprocess

from pyspark.sql import functions as F
import pytest

from tests.cluster.conftest import CLUSTER_JOBS, master_state
from tests.conftest import PIPELINE_RUN_DATE, PROJECT, comparable, read_documented

pytestmark = pytest.mark.cluster


def test_the_ranker_trains_on_both_workers_in_the_shipped_environment(standalone_cluster, cluster_run):
    apps = master_state(standalone_cluster)["completedapps"]
    assert {f"shoprec-{job}" for job in CLUSTER_JOBS} <= {a["name"] for a in apps}
    ranker = min((a for a in apps if a["name"] == "shoprec-train_ranker"), key=lambda a: a["starttime"])
    # horovod.spark.run held one task slot per Horovod process: an executor on each worker, each
    # running the Python that --archives unpacked beside it.
    for index in range(2):
        executors = standalone_cluster["root"] / f"work-{index}" / ranker["id"]
        assert executors.is_dir() and any(executors.iterdir()), f"worker {index} ran no train_ranker executor"
        assert list(executors.glob("*/environment/bin/python")), f"worker {index}: no unpacked environment"


def test_the_cluster_scores_the_same_recommendations_as_the_local_run(spark, cluster_run):
    """Training is deterministic for a given number of Horovod workers (two here and on local[2]),
    so the ranker trained on the cluster scores exactly the local run's recommendations."""

    def recommendations(warehouse):
        df = read_documented(spark, warehouse, "recommendations").where(F.col("run_date") == PIPELINE_RUN_DATE)
        return comparable(df)

    on_cluster, on_local = recommendations(cluster_run["warehouse"]), recommendations(cluster_run["local"])
    assert on_cluster.count() > 0 and on_cluster.count() == on_local.count()
    assert on_cluster.exceptAll(on_local).count() == 0 and on_local.exceptAll(on_cluster).count() == 0


def test_packing_the_environment_again_reuses_the_archive_built_for_the_same_requirements(shipped_env, tmp_path):
    again = subprocess.run(["bash", str(PROJECT / "scripts" / "package_env.sh"), str(tmp_path)],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "built before from the same requirements" in again.stdout
    assert filecmp.cmp(shipped_env, tmp_path / "shoprec-env.tar.gz", shallow=False)
