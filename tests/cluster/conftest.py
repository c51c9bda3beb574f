"""A Spark standalone cluster on loopback: one master and two one-core workers, each its own
process started with pyspark's launcher (spark-class), stopped when the test session ends."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyspark
import pytest

from tests.conftest import PIPELINE_RUN_DATE, PROJECT, write_pipeline_dist
from tests.support.services import free_port

SPARK_CLASS = Path(sys.executable).parent / "spark-class"
# pyspark's launch scripts look for Spark through whatever `python` is first on PATH: name it.
SPARK_HOME = str(Path(pyspark.__file__).parent)
WORKERS = 2


def alive_workers(ui_port: int) -> int:
    try:
        state = master_state({"ui_port": ui_port})
    except OSError:
        return -1
    return sum(1 for worker in state.get("workers", []) if worker.get("state") == "ALIVE")


@pytest.fixture(scope="session")
def standalone_cluster(tmp_path_factory):
    """``spark://127.0.0.1:<port>`` of a running master with two ALIVE workers (1 core, 3 GiB each)."""
    root = tmp_path_factory.mktemp("standalone")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_GATEWAY", "SHOPREC__"))}
    env.update({"SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOG_DIR": str(root / "logs"),
                "SPARK_WORKER_DIR": str(root / "work"), "SPARK_HOME": SPARK_HOME, "PYSPARK_PYTHON": sys.executable})
    port, ui_port = free_port(), free_port()
    master_url = f"spark://127.0.0.1:{port}"
    processes = []

    def start(name: str, *args: str) -> None:
        log = open(root / f"{name}.log", "w")
        processes.append(subprocess.Popen([str(SPARK_CLASS), *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))

    start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
          "--webui-port", str(ui_port))
    for index in range(WORKERS):
        start(f"worker-{index}", "org.apache.spark.deploy.worker.Worker", master_url, "--host", "127.0.0.1",
              "--cores", "1", "--memory", "3g", "--webui-port", str(free_port()),
              "--work-dir", str(root / f"work-{index}"))
    try:
        deadline = time.monotonic() + 180
        while alive_workers(ui_port) < WORKERS:
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                logs = "\n".join(f.read_text()[-1500:] for f in root.glob("*.log"))
                pytest.fail(f"the standalone cluster did not come up with {WORKERS} workers:\n{logs}")
            time.sleep(1)
        yield {"master": master_url, "ui_port": ui_port, "root": root, "processes": processes}
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                os.killpg(process.pid, 15)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
        remove_executor_files(root)


def remove_executor_files(root: Path) -> None:
    """Delete what the executors left in the workers' directories except their stdout and stderr.

    Each executor of an app shipped with ``--archives`` unpacks the job environment (about 2 GiB),
    and pytest keeps the base temporary directories of earlier sessions: without this, every
    session would leave gigabytes behind and a few sessions fill the disk."""
    for executor in root.glob("work-*/app-*/*"):
        for entry in executor.iterdir():
            if entry.name in ("stdout", "stderr"):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def submit_command(master: str, dist: Path, job: str, *options: str, app_args: tuple[str, ...] = ()) -> list[str]:
    """spark-submit of one job of the pipeline-test config, client mode, as a cluster user would."""
    bin_dir = Path(sys.executable).parent
    return [
        str(bin_dir / "spark-submit"), "--master", master, "--deploy-mode", "client",
        "--driver-memory", "2g", "--driver-java-options", "-Xss16m",
        "--executor-memory", "2g", "--conf", "spark.executor.cores=1", "--conf", "spark.ui.enabled=false",
        "--py-files", str(dist / "shoprec.zip"),
        "--files", f"{dist}/conf/base.yaml,{dist}/conf/local.yaml,{dist}/conf/pipeline-test.yaml", *options,
        str(dist / "jobs" / f"{job}.py"), "--conf", str(dist / "conf" / "pipeline-test.yaml"),
        "--run-date", PIPELINE_RUN_DATE, *app_args,
    ]


def submit_env(**overrides: str) -> dict[str, str]:
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_GATEWAY", "SHOPREC__"))}
    env.update({"PATH": f"{bin_dir}:{env['PATH']}", "SPARK_HOME": SPARK_HOME, "PYSPARK_PYTHON": sys.executable,
                **overrides})
    return env


def start_submit(master: str, dist: Path, job: str, cwd: Path, log: Path, *options: str,
                 env: dict[str, str] | None = None, app_args: tuple[str, ...] = ()) -> subprocess.Popen:
    """The job's spark-submit (``options`` for spark-submit, ``app_args`` for the job) started in its
    own process group (the driver: launcher, JVM, Python)."""
    command = submit_command(master, dist, job, *options, app_args=app_args)
    out = open(log, "a")
    out.write(f"\n=== {' '.join(command)}\n")
    out.flush()
    return subprocess.Popen(command, cwd=cwd, env=env or submit_env(), stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def spark_submit(master: str, dist: Path, job: str, cwd: Path, log: Path, *options: str,
                 env: dict[str, str] | None = None, app_args: tuple[str, ...] = ()) -> int:
    """Run the job to its end; spark-submit's exit code."""
    return start_submit(master, dist, job, cwd, log, *options, env=env, app_args=app_args).wait(timeout=1800)


def master_state(cluster: dict) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{cluster['ui_port']}/json/", timeout=10) as answer:
        return json.load(answer)


# The jobs cluster_run submits to the cluster; the others' tables come from the daily DAG's local run.
CLUSTER_JOBS = ["train_ranker", "score"]


@pytest.fixture(scope="session")
def shipped_env(tmp_path_factory) -> Path:
    """``make package-env``'s archive of the job environment (scripts/package_env.sh)."""
    out = tmp_path_factory.mktemp("package_env")
    packed = subprocess.run(["bash", str(PROJECT / "scripts" / "package_env.sh"), str(out)],
                            capture_output=True, text=True, timeout=1800)
    assert packed.returncode == 0, packed.stderr[-3000:]
    return out / "shoprec-env.tar.gz"


def shipped_env_options(archive: Path) -> tuple[str, ...]:
    """spark-submit options that run the executors' Python from ``archive``, unpacked beside each."""
    return ("--archives", f"{archive}#environment", "--conf", "spark.pyspark.python=./environment/bin/python",
            "--conf", f"spark.pyspark.driver.python={sys.executable}")


@pytest.fixture(scope="session")
def cluster_run(standalone_cluster, daily_dag_run, pipeline_raw_log, shipped_env, tmp_path_factory):
    """A warehouse on the cluster's side that starts as a copy of the daily DAG's local run (its
    tables, restricted ones included, for PIPELINE_RUN_DATE), then train_ranker and score for that
    date through spark-submit on the standalone cluster, the executors' Python shipped with
    ``--archives``. The fault tests rerun the other jobs on the cluster against this warehouse, so
    their "output unchanged" is also "the cluster's rows equal the local run's"."""
    root = tmp_path_factory.mktemp("cluster_run")
    dist = write_pipeline_dist(root, pipeline_raw_log)
    local = daily_dag_run["warehouse"]
    shutil.copytree(local, root / "warehouse")
    shutil.copytree(f"{local}_restricted", root / "warehouse_restricted")
    log = root / "spark-submit.log"
    for job in CLUSTER_JOBS:
        code = spark_submit(standalone_cluster["master"], dist, job, root, log, *shipped_env_options(shipped_env))
        assert code == 0, f"{job} failed on the cluster:\n{log.read_text()[-6000:]}"
    return {"root": root, "dist": dist, "warehouse": root / "warehouse", "log": log, "local": local}
