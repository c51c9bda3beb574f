"""Real services for the tests, started on loopback by the project's own files: an HDFS
minicluster (Hadoop's, from Maven Central) and an S3-compatible server (moto)."""

from __future__ import annotations

import hashlib
import os
import select
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyspark

MAVEN = "https://repo1.maven.org/maven2"
JAR_CACHE = Path(os.environ.get("SHOPREC_JAR_CACHE", Path.home() / ".cache" / "shoprec" / "jars"))
SPARK_JARS = Path(pyspark.__file__).parent / "jars"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def bundled_hadoop_version() -> str:
    """The Hadoop version pyspark ships (hadoop-client-api-<version>.jar): the connectors must match it."""
    jar = next(SPARK_JARS.glob("hadoop-client-api-*.jar"))
    return jar.name[len("hadoop-client-api-"):-len(".jar")]


def maven_jar(group: str, artifact: str, version: str) -> Path:
    """A jar from Maven Central, downloaded once into the jar cache and checked against its SHA-1."""
    target = JAR_CACHE / f"{artifact}-{version}.jar"
    if target.exists():
        return target
    url = f"{MAVEN}/{group.replace('.', '/')}/{artifact}/{version}/{artifact}-{version}.jar"
    JAR_CACHE.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    with urllib.request.urlopen(url, timeout=300) as answer, open(partial, "wb") as out:
        digest = hashlib.sha1()
        while chunk := answer.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    with urllib.request.urlopen(url + ".sha1", timeout=60) as answer:
        expected = answer.read().decode().split()[0]
    if digest.hexdigest() != expected:
        partial.unlink()
        raise RuntimeError(f"{url}: SHA-1 {digest.hexdigest()} != {expected}")
    partial.rename(target)
    return target


class MiniHdfs:
    """One NameNode and one DataNode in a JVM (tests/support/MiniHdfs.java), until :meth:`stop`."""

    def __init__(self, base_dir: Path):
        jar = maven_jar("org.apache.hadoop", "hadoop-client-minicluster", bundled_hadoop_version())
        source = Path(__file__).with_name("MiniHdfs.java")
        self.log = base_dir / "minihdfs.log"
        base_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["java", "-cp", f"{SPARK_JARS}/*:{jar}", str(source), str(base_dir / "data"), str(free_port())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.log, "w"), text=True)
        self.uri = self._wait_ready(timeout=180)

    def _wait_ready(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 1.0)
            if ready:
                line = self.process.stdout.readline()
                if line.startswith("READY "):
                    return line.split()[1]
            if self.process.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"HDFS minicluster did not start: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()


class MotoS3:
    """moto's S3-compatible server on loopback, until :meth:`stop`."""

    def __init__(self, log: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = log
        server = Path(sys.executable).parent / "moto_server"
        self.process = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(self.port)],
                                        stdout=open(log, "w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2):
                    return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"moto server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
