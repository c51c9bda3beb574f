"""clean_events on a real HDFS (Hadoop's minicluster on loopback): raw logs read from and tables
written to hdfs://, incrementally, with the same rows as the same log cleaned on local disk."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.io.fs import HadoopFS
from shoprec.jobs import clean_events
from tests.conftest import write_small_log
from tests.support.services import MiniHdfs

pytestmark = pytest.mark.hdfs
DAYS = ["2026-06-01", "2026-06-02"]


@pytest.fixture(scope="module")
def hdfs(tmp_path_factory):
    cluster = MiniHdfs(tmp_path_factory.mktemp("minihdfs"))
    yield cluster.uri
    cluster.stop()


@pytest.fixture(scope="module")
def local_raw(spark, tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("hdfs_raw")
    write_small_log(spark, raw, DAYS, seed=21)
    return raw


def upload(spark, local: Path, remote: str) -> None:
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(remote)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    fs.copyFromLocalFile(False, True, jvm.org.apache.hadoop.fs.Path(str(local)), path)


def test_clean_events_reads_and_writes_hdfs(spark, make_config, hdfs, local_raw, tmp_path):
    first_day = local_raw / f"dt={DAYS[0]}"
    upload(spark, first_day, f"{hdfs}/raw/dt={DAYS[0]}")
    cfg = make_config(INPUT__PATH=f"{hdfs}/raw", WAREHOUSE__ROOT=f"{hdfs}/shoprec/warehouse")

    first = clean_events.run(spark, cfg, DAYS[0])
    assert first.batches == [DAYS[0]]
    accounting = first.accounting
    assert accounting["rows_input"] == sum(accounting[k] for k in accounting if k != "rows_input") > 0
    clean = spark.read.parquet(cfg.table_path("events_clean"))
    assert cfg.table_path("events_clean").startswith("hdfs://")
    assert clean.count() == accounting["rows_clean"]
    fs = HadoopFS(spark)
    assert fs.exists(f"{hdfs}/shoprec/warehouse/_ingest_log/synthetic/batch={DAYS[0]}.json")

    # Incremental on HDFS: a new landing day is the only batch processed; nothing new, nothing done.
    upload(spark, local_raw / f"dt={DAYS[1]}", f"{hdfs}/raw/dt={DAYS[1]}")
    assert clean_events.run(spark, cfg, DAYS[1]).batches == [DAYS[1]]
    assert clean_events.run(spark, cfg, DAYS[1]).batches == []

    # The same log landing the same way on local disk gives the same rows.
    landing = tmp_path / "landing"
    on_disk = make_config(INPUT__PATH=str(landing), WAREHOUSE__ROOT=str(tmp_path / "warehouse"))
    for day in DAYS:
        shutil.copytree(local_raw / f"dt={day}", landing / f"dt={day}")
        clean_events.run(spark, on_disk, day)
    data_columns = [c for c in S.EVENTS_CLEAN.fieldNames() if c not in (S.INGEST_RUN_ID, S.SOURCE_FILE)]
    on_hdfs = spark.read.parquet(cfg.table_path("events_clean")).select(*data_columns)
    local = spark.read.parquet(on_disk.table_path("events_clean")).select(*data_columns)
    assert on_hdfs.count() == local.count()
    assert on_hdfs.exceptAll(local).count() == 0 and local.exceptAll(on_hdfs).count() == 0
    files = spark.read.parquet(cfg.table_path("events_clean")).select(F.col(S.SOURCE_FILE)).distinct()
    assert all(r[0].startswith(hdfs) for r in files.collect())
