"""Driver launch settings from the config are reported when spark-submit did not get them."""

from __future__ import annotations

from shoprec.config import SparkConfig
from shoprec.spark import late_launch_settings


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
