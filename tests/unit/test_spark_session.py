"""Driver launch settings from the config are reported when spark-submit did not get them; a cache
scope releases what it cached and nothing else."""

from __future__ import annotations

from shoprec.config import SparkConfig
from shoprec.spark import CacheScope, late_launch_settings


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
