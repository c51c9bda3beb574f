"""clean_events on the real MovieLens 100k ratings, through both shipped MovieLens source blocks."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.jobs import clean_events
from tests.conftest import shared_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_udata_becomes_rating_events(spark, make_config):
    data = shared_dataset("movielens-100k")
    cfg = make_config(INPUT__SOURCE="movielens_udata", INPUT__PATH=data)
    summary = clean_events.run(spark, cfg, "1998-04-23")
    # The dataset's README: 100,000 ratings by 943 users on 1,682 movies, none duplicated.
    assert summary.accounting == {"rows_input": 100000, "rows_clean": 100000, "rows_quarantined": 0,
                                  "rows_duplicate": 0, "rows_filtered_bot": 0}
    events = spark.read.parquet(cfg.table_path("events_clean"))
    stats = events.agg(F.countDistinct(S.USER_ID), F.countDistinct(S.ITEM_ID), F.min(S.EVENT_TIME).cast("string"),
                       F.max(S.EVENT_TIME).cast("string"), F.min(S.RATING), F.max(S.RATING)).first()
    assert tuple(stats) == (943, 1682, "1997-09-20 03:05:10", "1998-04-22 23:10:38", 1.0, 5.0)
    assert [r[0] for r in events.select(S.EVENT_TYPE).distinct().collect()] == ["rating"]
    assert events.where(F.col(S.SESSION_ID).isNull()).count() == 0


def test_ratings_csv_with_header(spark, make_config, tmp_path):
    data = shared_dataset("movielens-100k")
    rows = (data / "u.data").read_text().splitlines()[:2000]
    (tmp_path / "ml").mkdir()
    (tmp_path / "ml" / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n" + "\n".join(line.replace("\t", ",") for line in rows) + "\n")
    (tmp_path / "ml" / "README.txt").write_text("not a ratings file\n")
    cfg = make_config(INPUT__SOURCE="movielens_ratings_csv", INPUT__PATH=tmp_path / "ml")
    summary = clean_events.run(spark, cfg, "1998-04-23")
    assert summary.files == 1
    assert summary.accounting["rows_input"] == 2000
    assert summary.accounting["rows_clean"] == 2000
