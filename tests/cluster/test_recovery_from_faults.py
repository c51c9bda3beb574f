"""Faults on the standalone cluster: an executor killed mid-job (in build_profiles, in
clean_events once its parse is staged, in build_training_set once its examples are staged, in
train_als's conjugate-gradient fit), a driver killed mid-write, a Horovod worker killed
mid-training. Each job is one the pipeline already ran for the date: its undisturbed output is in
``cluster_run``'s warehouse, written by the daily DAG's local run (or, for the ranker, by the
cluster). A job that comes out of a fault with that output unchanged has also given, on the
cluster, the same rows as on local[2]."""

from __future__ import annotations

import json
import os
import signal
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shoprec.catalog import BY_NAME, schema_ddl
from shoprec.config import load_config
from shoprec.jobs import train_als
from tests.cluster.conftest import master_state, spark_submit, start_submit, submit_env
from tests.conftest import PIPELINE_RUN_DATE, comparable, job_shuffle_partitions, read_documented

pytestmark = pytest.mark.cluster
# The Horovod kill comes after epoch 2: a few more keep training going until it lands.
EPOCHS = 8
PROFILE_TABLES = ["interactions", "user_profile", "item_profile", "popular_items", "content_similar_items"]


def rows_of(spark, warehouse: Path, name: str) -> list:
    df = spark.read.schema(schema_ddl(BY_NAME[name])).parquet(str(warehouse / name))
    columns = [F.round(F.col(f.name), 6).alias(f.name) if isinstance(f.dataType, T.DoubleType) else F.col(f.name)
               for f in df.schema.fields]
    return sorted(df.where(F.col("run_date") == PIPELINE_RUN_DATE).select(*columns).collect(), key=str)


def lineage(warehouse: Path, name: str) -> dict:
    return json.loads((warehouse / name / f"run_date={PIPELINE_RUN_DATE}" / "_lineage.json").read_text())


def executor_pids(app_id: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", f"CoarseGrainedExecutorBackend.*{app_id}"], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def wait_for(condition, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def running_app(cluster: dict, name: str) -> str | None:
    return next((a["id"] for a in master_state(cluster)["activeapps"] if a["name"] == name), None)


def assert_finished_on_a_replacement_executor(driver, app: str, cluster: dict, cluster_run: dict) -> None:
    """The job whose executor was killed succeeded, and the master launched another executor."""
    assert driver.wait(timeout=1800) == 0, cluster_run["log"].read_text()[-5000:]
    executors = [d for w in range(2) for d in (cluster["root"] / f"work-{w}" / app).iterdir()]
    assert len(executors) >= 3, "the master did not launch a replacement executor"


def test_an_executor_killed_after_the_parse_leaves_clean_events_output_unchanged(spark, standalone_cluster,
                                                                                   cluster_run):
    """An executor killed while clean_events writes from its staged parse: its tasks and shuffle
    output are redone from the staging, and the tables come out as an undisturbed run's."""
    warehouse = cluster_run["warehouse"]

    def tables() -> dict[str, list]:
        return {name: sorted(comparable(read_documented(spark, warehouse, name)).collect(), key=str)
                for name in ("events_clean", "events_quarantine", "user_id_map")}

    before = tables()
    driver = start_submit(standalone_cluster["master"], cluster_run["dist"], "clean_events", cluster_run["root"],
                          cluster_run["log"], app_args=("--full-rebuild",))
    app = wait_for(lambda: running_app(standalone_cluster, "shoprec-clean_events"), 120, "the application")
    # The user_id_map write starts once the parse is staged and the quarantine written.
    staging = warehouse.parent / f"{warehouse.name}_restricted" / "user_id_map" / "_staging"
    wait_for(lambda: staging.exists() or driver.poll() is not None, 600, "the user_id_map write", interval=0.05)
    assert driver.poll() is None, "the job ended before the kill"
    os.kill(executor_pids(app)[0], signal.SIGKILL)
    assert_finished_on_a_replacement_executor(driver, app, standalone_cluster, cluster_run)
    assert tables() == before


def test_an_executor_killed_after_the_examples_are_staged_leaves_the_training_set_unchanged(spark, standalone_cluster,
                                                                                          cluster_run):
    """The examples build_training_set stages are read four more times after the kill; with a
    local checkpoint they would have died with the executor that held them."""
    warehouse = cluster_run["warehouse"]
    training_set = warehouse / "training_set" / f"run_date={PIPELINE_RUN_DATE}"

    def examples() -> list:
        df = spark.read.parquet(str(training_set))
        rounded = df.withColumn("dense", F.transform("dense", lambda x: F.round(x, 4)))
        return sorted(rounded.select(*sorted(df.columns)).collect(), key=str)

    def standardisation() -> dict:
        stats = json.loads((training_set / "_feature_spec.json").read_text())["standardisation"]
        return {f"{name}.{i}": value for name, pair in stats.items() for i, value in enumerate(pair)}

    before, stats_before = examples(), standardisation()
    driver = start_submit(standalone_cluster["master"], cluster_run["dist"], "build_training_set",
                          cluster_run["root"], cluster_run["log"])
    app = wait_for(lambda: running_app(standalone_cluster, "shoprec-build_training_set"), 120, "the application")
    staging = warehouse.parent / f"{warehouse.name}_restricted" / "_staging"
    wait_for(lambda: list(staging.glob("training_examples-*/examples/_SUCCESS")) or driver.poll() is not None, 900,
             "the staged examples", interval=0.05)
    assert driver.poll() is None, "the job ended before the kill"
    os.kill(executor_pids(app)[0], signal.SIGKILL)
    assert_finished_on_a_replacement_executor(driver, app, standalone_cluster, cluster_run)
    assert examples() == before
    assert standardisation() == pytest.approx(stats_before, rel=1e-9)
    assert not list(staging.glob("training_examples-*")), "the staging outlived the job"


def test_a_driver_killed_mid_write_leaves_the_old_partition_and_a_rerun_with_an_executor_killed_repairs_it(
        spark, standalone_cluster, cluster_run):
    """build_profiles twice: its driver killed the moment it starts writing, then a rerun that
    loses an executor in its first stages, which the master replaces."""
    warehouse = cluster_run["warehouse"]
    before = {name: rows_of(spark, warehouse, name) for name in PROFILE_TABLES}
    old_lineage = lineage(warehouse, "interactions")
    driver = start_submit(standalone_cluster["master"], cluster_run["dist"], "build_profiles", cluster_run["root"],
                          cluster_run["log"])
    # The moment Spark starts writing the new interactions snapshot, the driver dies (launcher, JVM, Python).
    wait_for(lambda: (warehouse / "interactions" / "_staging").exists() or driver.poll() is not None, 600,
             "the interactions write", interval=0.05)
    assert driver.poll() is None, "the job ended before the kill"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(timeout=60)

    # Readers see the old partition, whole: the same rows and the old run's lineage.
    assert rows_of(spark, warehouse, "interactions") == before["interactions"]
    assert lineage(warehouse, "interactions") == old_lineage

    driver = start_submit(standalone_cluster["master"], cluster_run["dist"], "build_profiles", cluster_run["root"],
                          cluster_run["log"])
    app = wait_for(lambda: running_app(standalone_cluster, "shoprec-build_profiles"), 120, "the application")
    victim = wait_for(lambda: executor_pids(app)[:1], 120, "an executor")[0]
    time.sleep(8)  # into the job's first stages
    os.kill(victim, signal.SIGKILL)
    assert_finished_on_a_replacement_executor(driver, app, standalone_cluster, cluster_run)
    assert {name: rows_of(spark, warehouse, name) for name in PROFILE_TABLES} == before
    assert lineage(warehouse, "interactions") != old_lineage
    for name in PROFILE_TABLES:
        assert not (warehouse / name / "_staging").exists() and not (warehouse / name / "_commit.json").exists()


def test_a_killed_horovod_worker_fails_training_in_bounded_time_and_resume_finishes_it(standalone_cluster,
                                                                                     cluster_run):
    models = cluster_run["root"] / "models" / "ranker" / PIPELINE_RUN_DATE
    shutil.rmtree(models, ignore_errors=True)
    # Enough epochs to be mid-training when the worker dies; early stopping out of the way.
    env = submit_env(SHOPREC__RANKER__EPOCHS=str(EPOCHS), SHOPREC__RANKER__PATIENCE=str(EPOCHS))
    driver = start_submit(standalone_cluster["master"], cluster_run["dist"], "train_ranker", cluster_run["root"],
                          cluster_run["log"], env=env)
    wait_for(lambda: list(models.glob("checkpoints/state-2.json")) or driver.poll() is not None, 900,
             "the second epoch's checkpoint", interval=0.2)
    assert driver.poll() is None, "training ended before the kill"
    workers = subprocess.run(["pgrep", "-f", "horovod.spark.task"], capture_output=True, text=True).stdout.split()
    assert workers, "no Horovod worker process found"
    killed_at = time.monotonic()
    os.kill(int(workers[0]), signal.SIGKILL)
    code = driver.wait(timeout=900)
    failed_after = time.monotonic() - killed_at
    log = cluster_run["log"].read_text()
    assert code != 0 and failed_after < 300, f"exit {code} after {failed_after:.0f} s"
    assert "--resume" in log[-20000:]

    finished_epochs = len(list(models.glob("checkpoints/state-*.json")))
    code = spark_submit(standalone_cluster["master"], cluster_run["dist"], "train_ranker", cluster_run["root"],
                        cluster_run["log"], env=env, app_args=("--resume",))
    assert code == 0, cluster_run["log"].read_text()[-5000:]
    # Every epoch once: the finished ones restored from the checkpoint, the rest trained.
    assert len(json.loads((models / "history.json").read_text())) == EPOCHS and finished_epochs >= 2


def test_an_executor_killed_mid_fit_leaves_the_cg_solvers_recommendations_unchanged(spark, standalone_cluster,
                                                                                      cluster_run, tmp_path):
    """train_als with ``als.solver: cg`` on a copy of the warehouse, undisturbed in the suite's
    local Spark session and then on the cluster with an executor killed once its blocks are built:
    the blocks, messages and factors the dead executor held are recomputed, and the
    recommendations come out the same."""
    warehouse = tmp_path / "warehouse"
    shutil.copytree(cluster_run["warehouse"], warehouse)
    overrides = {"SHOPREC__WAREHOUSE__ROOT": str(warehouse), "SHOPREC__ALS__SOLVER": "cg",
                 "SHOPREC__ALS__MAX_ITER": "12"}
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SHOPREC__")}
    cfg = load_config(cluster_run["dist"] / "conf" / "pipeline-test.yaml", environ={**environ, **overrides})
    with job_shuffle_partitions(spark, cfg):
        train_als.run(spark, cfg, PIPELINE_RUN_DATE)
    undisturbed = {name: rows_of(spark, warehouse, name) for name in ("als_recs", "similar_items")}

    log = tmp_path / "train_als.log"
    driver = start_submit(standalone_cluster["master"], cluster_run["dist"], "train_als", cluster_run["root"], log,
                          env=submit_env(**overrides))
    app = wait_for(lambda: running_app(standalone_cluster, "shoprec-train_als"), 120, "the application")
    wait_for(lambda: "fit_als_cg:" in log.read_text() or driver.poll() is not None, 600, "the ALS blocks",
             interval=0.05)
    assert driver.poll() is None, "the job ended before the kill"
    os.kill(executor_pids(app)[0], signal.SIGKILL)
    assert_finished_on_a_replacement_executor(driver, app, standalone_cluster, {"log": log})
    assert {name: rows_of(spark, warehouse, name) for name in ("als_recs", "similar_items")} == undisturbed
