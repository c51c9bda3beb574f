"""A Spark standalone cluster on loopback: one master and two one-core workers, each its own
process started with pyspark's launcher (spark-class), stopped when the test session ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.services import free_port

SPARK_CLASS = Path(sys.executable).parent / "spark-class"
WORKERS = 2


def alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as answer:
            state = json.load(answer)
    except OSError:
        return -1
    return sum(1 for worker in state.get("workers", []) if worker.get("state") == "ALIVE")


@pytest.fixture(scope="session")
def standalone_cluster(tmp_path_factory):
    """``spark://127.0.0.1:<port>`` of a running master with two ALIVE workers (1 core, 3 GiB each)."""
    root = tmp_path_factory.mktemp("standalone")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_GATEWAY", "SHOPREC__"))}
    env.update({"SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOG_DIR": str(root / "logs"),
                "SPARK_WORKER_DIR": str(root / "work")})
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
