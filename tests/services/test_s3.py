"""clean_events against S3 (moto's S3-compatible server on loopback) through s3a://: hadoop-aws
comes from spark.jars.packages at the Hadoop version pyspark bundles, the credentials only from
the environment, and they appear in no conf file, log or MLflow record."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import yaml
from mlflow.tracking import MlflowClient

from shoprec.jobs import clean_events
from tests.conftest import PROJECT, PSEUDONYM_SECRET_ENV, write_small_log
from tests.support.services import MotoS3, bundled_hadoop_version

pytestmark = pytest.mark.s3
DAYS = ["2026-06-10", "2026-06-11"]
BUCKET = "shop-data"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = MotoS3(tmp_path_factory.mktemp("moto") / "moto.log")
    credentials = {"AWS_ACCESS_KEY_ID": "AKIA" + secrets.token_hex(8).upper(),
                   "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30), "AWS_REGION": "us-east-1"}
    client = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                          aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"])
    client.create_bucket(Bucket=BUCKET)
    yield {"endpoint": server.endpoint, "client": client, "credentials": credentials}
    server.stop()


def test_clean_events_on_s3a(spark, s3, tmp_path, make_config):
    raw = tmp_path / "raw"
    write_small_log(spark, raw, DAYS, seed=33)
    for path in raw.rglob("*.gz"):
        s3["client"].upload_file(str(path), BUCKET, f"raw/{path.relative_to(raw)}")

    conf = tmp_path / "s3.yaml"
    conf.write_text(yaml.safe_dump({
        "extends": str(PROJECT / "conf" / "local.yaml"),
        "spark": {"master": "local[2]", "shuffle_partitions": 4, "conf": {
            "spark.driver.memory": "2g", "spark.ui.enabled": "false",
            "spark.jars.packages": f"org.apache.hadoop:hadoop-aws:{bundled_hadoop_version()}",
            "spark.hadoop.fs.s3a.endpoint": s3["endpoint"],
            "spark.hadoop.fs.s3a.endpoint.region": "us-east-1",
            "spark.hadoop.fs.s3a.path.style.access": "true",
            "spark.hadoop.fs.s3a.connection.ssl.enabled": "false"}},
        "catalog": {"register": False},
        "warehouse": {"root": f"s3a://{BUCKET}/shoprec/warehouse"},
        "input": {"source": "synthetic", "path": f"s3a://{BUCKET}/raw"},
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "artifact_location": str(tmp_path / "artifacts")},
    }))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_GATEWAY", "SHOPREC__", "AWS_"))}
    env.update(s3["credentials"])
    done = subprocess.run([str(Path(sys.executable).parent / "shoprec"), "run", "clean_events", "--conf", str(conf),
                           "--run-date", DAYS[-1]], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=1800)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-5000:]

    # The tables are on S3: fetch them and compare with the same log cleaned on local disk.
    fetched = tmp_path / "fetched"
    listing = s3["client"].get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="shoprec/warehouse/")
    keys = [o["Key"] for page in listing for o in page.get("Contents", [])]
    assert any(k.startswith("shoprec/warehouse/_ingest_log/synthetic/") for k in keys)
    for key in keys:
        if key.startswith("shoprec/warehouse/events_clean/") and key.endswith(".parquet"):
            target = fetched / key
            target.parent.mkdir(parents=True, exist_ok=True)
            s3["client"].download_file(BUCKET, key, str(target))
    on_s3 = spark.read.parquet(str(fetched / "shoprec" / "warehouse" / "events_clean"))

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("shoprec")
    run = client.search_runs([experiment.experiment_id])[0]
    assert on_s3.count() == run.data.metrics["rows_clean"] > 0

    local = make_config(INPUT__PATH=str(raw), WAREHOUSE__ROOT=str(tmp_path / "local"))
    assert clean_events.run(spark, local, DAYS[-1]).accounting["rows_clean"] == on_s3.count()

    # The credentials and the pseudonymisation secret are nowhere but in the environment.
    store = [(tmp_path / "mlflow.db").read_bytes(), conf.read_bytes(), log.encode()]
    store += [p.read_bytes() for p in (tmp_path / "artifacts").rglob("*") if p.is_file()]
    store.append(repr(run.data.params).encode() + repr(run.data.tags).encode())
    for secret in (s3["credentials"]["AWS_SECRET_ACCESS_KEY"], s3["credentials"]["AWS_ACCESS_KEY_ID"],
                   os.environ[PSEUDONYM_SECRET_ENV]):
        assert not any(secret.encode() in blob for blob in store)
    shutil.rmtree(fetched)
