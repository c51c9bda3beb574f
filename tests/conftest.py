"""Shared fixtures: one local Spark session and one MLflow store for the whole test run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = (PROJECT.parent / "shared" / "data").resolve()
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def shared_dataset(name: str) -> Path:
    """Path of a real dataset in ../shared/data; skip if absent, except in CI where absence fails."""
    path = SHARED_DATA / name
    if not path.exists():
        if IN_CI:
            pytest.fail(f"{path} is missing in CI: real-data tests must run there")
        pytest.skip(f"{path} is not present")
    return path


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """The test suite's one SparkSession: local[2], few shuffle partitions, no UI."""
    from shoprec.config import SparkConfig
    from shoprec.spark import build_session

    scratch = tmp_path_factory.mktemp("spark")
    session = build_session(SparkConfig(
        master="local[2]",
        app_name="shoprec-tests",
        shuffle_partitions=2,
        conf={
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.local.dir": str(scratch / "local"),
            "spark.sql.warehouse.dir": str(scratch / "warehouse"),
            "spark.driver.memory": "3g",
            "spark.default.parallelism": "2",
        },
    ))
    yield session
    session.stop()


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory) -> dict[str, str]:
    """A real MLflow SQLite store shared by the run: env overrides pointing config at it."""
    root = tmp_path_factory.mktemp("mlflow")
    return {
        "SHOPREC__MLFLOW__TRACKING_URI": f"sqlite:///{root}/mlflow.db",
        "SHOPREC__MLFLOW__ARTIFACT_LOCATION": str(root / "artifacts"),
    }


@pytest.fixture
def make_config(tmp_path, mlflow_store):
    """Build a Config from conf/local.yaml with the warehouse in tmp_path and the given overrides."""
    from shoprec.config import load_config

    def build(conf: str = "conf/local.yaml", **overrides: str):
        environ = {
            **mlflow_store,
            "SHOPREC__WAREHOUSE__ROOT": str(tmp_path / "warehouse"),
            **{f"SHOPREC__{key.upper()}": str(value) for key, value in overrides.items()},
        }
        return load_config(PROJECT / conf, environ=environ)

    return build
