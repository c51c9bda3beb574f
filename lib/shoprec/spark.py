"""The one SparkSession factory, and the scope of what a piece of work caches in it.

Under ``spark-submit`` the master, deploy mode and resources come from the submit command and
are never overridden here; ``spark.master`` from config is used only when a job is started as a
plain Python process (``shoprec run ...``), which is how the embedded local defaults work.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator

from pyspark import SparkConf, SparkContext
from pyspark.sql import DataFrame, SparkSession

from shoprec.config import SparkConfig

log = logging.getLogger(__name__)

# Settings every shoprec job relies on: UTC everywhere, and overwrite of single partitions only.
REQUIRED_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
    "spark.sql.parquet.compression.codec": "snappy",
    "spark.sql.adaptive.enabled": "true",
}

# Settings read when the driver JVM starts: under spark-submit it is running before the job reads
# its config, so these must be given to spark-submit itself (the option to use is the value).
LAUNCH_TIME_CONF = {
    "spark.driver.memory": "--driver-memory",
    "spark.driver.extraJavaOptions": "--driver-java-options",
    "spark.driver.extraClassPath": "--driver-class-path",
    "spark.jars.packages": "--packages",
}


def late_launch_settings(cfg: SparkConfig, running: dict[str, str]) -> list[str]:
    """The config's driver launch settings that the running driver did not get, one message each."""
    return [f"config sets {key}={cfg.conf[key]} but the driver runs with {running.get(key, '(unset)')}: "
            f"pass it to spark-submit ({option} or --conf {key}=...)"
            for key, option in LAUNCH_TIME_CONF.items()
            if key in cfg.conf and str(cfg.conf[key]) != running.get(key)]


def launched_by_spark_submit() -> bool:
    """True when this Python process is the driver that spark-submit started."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def build_session(cfg: SparkConfig, app_name: str | None = None) -> SparkSession:
    """Get or create the SparkSession for a job.

    Args:
        cfg: the ``spark`` section of the config.
        app_name: the job name shown in the Spark UI; defaults to ``cfg.app_name``.
    """
    builder = SparkSession.builder.appName(app_name or cfg.app_name)
    settings = {**cfg.conf, **REQUIRED_CONF}
    if launched_by_spark_submit():
        for message in late_launch_settings(cfg, submitted_conf()):
            log.warning(message)
        # Applied now they would only make the Spark UI show settings the driver does not have.
        settings = {k: v for k, v in settings.items() if k not in LAUNCH_TIME_CONF}
    else:
        # Python workers of a local session run this same interpreter (and see this package).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        if cfg.master:
            builder = builder.master(cfg.master)
    builder = builder.config("spark.sql.shuffle.partitions", str(cfg.shuffle_partitions))
    for key, value in settings.items():
        builder = builder.config(key, str(value))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    keep_gateway_sockets_from_forked_children()
    return spark


_fork_guard_registered = False
# The driver's idle Py4J connections while a fork is under way (see below).
_connections_over_fork: list = []


def keep_gateway_sockets_from_forked_children() -> None:
    """Make a process forked from the driver leave the driver's Py4J sockets alone (once per process).

    A child made with ``fork`` inherits the driver's connections to its JVM. Python drops the other
    threads' locals in a forked child, which garbage-collects their connections there, and a
    collected connection shuts its socket down: that cuts the parent's connection too, whose next
    call then fails, and Py4J reconnects and logs the failure with a traceback. Horovod forks the
    driver in every ``horovod.spark.run`` (to check how its extension was built), so without this
    each training printed a ``ConnectionResetError``. The connections are held across the fork,
    and the child forgets their sockets before letting go of them; if it calls the JVM at all,
    it opens connections of its own.
    """
    global _fork_guard_registered
    if not _fork_guard_registered:
        os.register_at_fork(before=_hold_idle_connections, after_in_parent=_connections_over_fork.clear,
                            after_in_child=_forget_held_connections)
        _fork_guard_registered = True


def _hold_idle_connections() -> None:
    context = SparkContext._active_spark_context
    gateway = getattr(context, "_gateway", None) if context is not None else None
    # Only idle connections are pooled in the deque; one in use belongs to a thread busy in the JVM.
    _connections_over_fork[:] = list(getattr(getattr(gateway, "_gateway_client", None), "deque", ()))


def _forget_held_connections() -> None:
    for connection in _connections_over_fork:
        # close() returns at once when the socket is None; the child's copies of the file
        # descriptors close with the socket objects, which leaves the parent's connections open.
        connection.socket = None
        connection.stream = None
    _connections_over_fork.clear()


# Spark packs a scan's files into about one task per core by default (at most
# spark.sql.files.maxPartitionBytes each).
FILE_SPLITS_CONF = "spark.sql.files.minPartitionNum"


@contextlib.contextmanager
def file_tasks_per_core(spark: SparkSession, tasks: int) -> Iterator[None]:
    """Scans run inside split their input into at least ``tasks`` tasks per core of the session.

    Compressed text files cannot be split within a file, and Spark packs whole files into about
    one task per core: when the work per row is heavy, one task left last keeps a single core
    busy while the others idle. Smaller tasks even that out. A ``spark.sql.files.minPartitionNum``
    the session sets already is left as it is.
    """
    if spark.conf.get(FILE_SPLITS_CONF, None) is not None:
        yield
        return
    spark.conf.set(FILE_SPLITS_CONF, str(tasks * spark.sparkContext.defaultParallelism))
    try:
        yield
    finally:
        spark.conf.unset(FILE_SPLITS_CONF)


def submitted_conf() -> dict[str, str]:
    """The settings spark-submit started the driver with (its JVM's ``spark.*`` system properties)."""
    SparkContext._ensure_initialized()
    return dict(SparkConf().getAll())


class CacheScope:
    """The DataFrames one piece of work caches, released together when it ends.

    Spark's cache is keyed by plan: a DataFrame whose plan is cached already (by the caller, or
    as another DataFrame) is used as it is and stays cached when the scope ends, so a scope never
    releases what it did not cache. Use it as a context manager, or call :meth:`release`.
    """

    def __init__(self) -> None:
        self._held: list[DataFrame] = []
        self._releases: list[Callable[[], None]] = []

    def cache(self, df: DataFrame) -> DataFrame:
        """``df`` cached (lazily, as ``DataFrame.cache``), to be released with the scope."""
        level = df.storageLevel
        if level.useMemory or level.useDisk:
            return df
        cached = df.cache()
        self._held.append(cached)
        return cached

    def on_release(self, release: Callable[[], None]) -> None:
        """Call ``release`` when the scope ends: for what the work cached that is not a
        DataFrame's own cache (a fitted model's persisted factors, say)."""
        self._releases.append(release)

    def release(self) -> None:
        """Unpersist everything this scope cached, and run what was registered with :meth:`on_release`."""
        for df in self._held:
            df.unpersist()
        self._held.clear()
        while self._releases:
            self._releases.pop()()

    def __enter__(self) -> "CacheScope":
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
