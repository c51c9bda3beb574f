"""Driver launch settings from the config are reported when spark-submit did not get them; a cache
scope releases what it cached and nothing else; scans split finer inside ``file_tasks_per_core``;
a process forked from the driver leaves the driver's connections to its JVM open."""

from __future__ import annotations

import gc
import gzip
import multiprocessing
import threading
import weakref

from shoprec.config import SparkConfig
from shoprec.spark import FILE_SPLITS_CONF, CacheScope, file_tasks_per_core, late_launch_settings


def test_launch_settings_missing_from_spark_submit_are_named_with_the_option_to_use():
    cfg = SparkConfig(master="local[2]", app_name="t", shuffle_partitions=2, conf={
        "spark.driver.memory": "6g", "spark.driver.extraJavaOptions": "-Xss16m",
        "spark.executor.memory": "8g"})
    messages = late_launch_settings(cfg, {"spark.driver.memory": "1g"})
    assert len(messages) == 2
    java, memory = sorted(messages)
    assert "spark.driver.extraJavaOptions=-Xss16m" in java and "--driver-java-options" in java
    assert "runs with 1g" in memory and "--driver-memory" in memory


def test_launch_settings_given_to_spark_submit_are_not_reported():
    cfg = SparkConfig(master="local[2]", app_name="t", shuffle_partitions=2,
                      conf={"spark.driver.memory": "6g", "spark.executor.memory": "8g"})
    assert late_launch_settings(cfg, {"spark.driver.memory": "6g"}) == []


def is_cached(df) -> bool:
    level = df.storageLevel
    return level.useMemory or level.useDisk


def test_a_cache_scope_releases_only_what_it_cached(spark):
    callers = spark.range(50).withColumnRenamed("id", "n").cache()
    own = spark.range(70).withColumnRenamed("id", "m")
    with CacheScope() as scope:
        # The same plan as the caller's: Spark's cache already holds it.
        assert is_cached(scope.cache(spark.range(50).withColumnRenamed("id", "n")))
        held = scope.cache(own)
        assert is_cached(held) and held.count() == 70
    assert not is_cached(own)
    assert is_cached(callers), "the scope released a cache entry its caller made"
    callers.unpersist()


def test_a_cache_scope_runs_what_was_registered_for_its_end_once():
    released = []
    scope = CacheScope()
    scope.on_release(lambda: released.append("factors"))
    scope.on_release(lambda: released.append("indices"))
    assert released == []
    scope.release()
    scope.release()
    assert sorted(released) == ["factors", "indices"]


def gzipped_lines(tmp_path, files: int) -> str:
    for n in range(files):
        with gzip.open(tmp_path / f"part-{n:02d}.txt.gz", "wt") as out:
            out.write("".join(f"{n},{line}\n" for line in range(100)))
    return str(tmp_path)


def test_scans_inside_file_tasks_per_core_split_finer_and_the_setting_goes_after(spark, tmp_path):
    path = gzipped_lines(tmp_path, 12)
    cores = spark.sparkContext.defaultParallelism
    assert spark.conf.get(FILE_SPLITS_CONF, None) is None
    default_tasks = spark.read.text(path).rdd.getNumPartitions()
    with file_tasks_per_core(spark, 4):
        finer = spark.read.text(path)
        # Spark packs small files by size plus an opening cost of 4 MB each: on the suite's two cores,
        # two of these files a task at 4 x 2 tasks' worth of bytes, against six a task by default.
        assert finer.rdd.getNumPartitions() >= 12 // 2 > default_tasks
        assert spark.conf.get(FILE_SPLITS_CONF) == str(4 * cores)
        assert finer.count() == 1200
    assert spark.conf.get(FILE_SPLITS_CONF, None) is None
    assert spark.read.text(path).rdd.getNumPartitions() == default_tasks


def test_file_tasks_per_core_leaves_a_split_setting_the_session_made(spark, tmp_path):
    path = gzipped_lines(tmp_path, 12)
    spark.conf.set(FILE_SPLITS_CONF, "3")
    try:
        with file_tasks_per_core(spark, 4):
            assert spark.conf.get(FILE_SPLITS_CONF) == "3"
            tasks_inside = spark.read.text(path).rdd.getNumPartitions()
        assert spark.conf.get(FILE_SPLITS_CONF) == "3"
        assert spark.read.text(path).rdd.getNumPartitions() == tasks_inside
    finally:
        spark.conf.unset(FILE_SPLITS_CONF)


def test_a_child_forked_from_the_driver_leaves_the_drivers_jvm_connections_open(spark):
    # What Horovod's extension check does in every horovod.spark.run: fork the driver while other
    # threads hold connections to the JVM. The child drops those threads' connections.
    client = spark.sparkContext._gateway._gateway_client
    jvm = spark.sparkContext._jvm
    connections, called, forked = {}, threading.Event(), threading.Event()

    def thread_with_a_connection():
        jvm.java.lang.System.nanoTime()
        # Weakly: a strong reference here would keep the child from collecting the connection.
        connections["before"] = weakref.ref(client.get_thread_connection())
        called.set()
        forked.wait(60)
        jvm.java.lang.System.nanoTime()
        connections["after"] = client.get_thread_connection()

    holder = threading.Thread(target=thread_with_a_connection)
    holder.start()
    assert called.wait(60)
    child = multiprocessing.get_context("fork").Process(target=gc.collect)
    child.start()
    child.join(60)
    forked.set()
    holder.join(60)
    assert child.exitcode == 0
    # The same connection served the call after the fork: it was not cut and replaced.
    assert connections["after"] is connections["before"]()
    assert connections["after"].socket is not None
