"""Profiles, ALS and rules on the real REES46 clickstream sample, checked against csv-module counts."""

from __future__ import annotations

import csv
from collections import defaultdict

import pytest
from pyspark.sql import functions as F

from shoprec.config import load_config
from shoprec.io.tables import read_snapshot
from shoprec.jobs import build_profiles, clean_events, mine_rules, train_als
from tests.conftest import PROJECT, expected_pseudonym, shared_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RUN_DATE = "2019-10-01"


def independent_figures(path) -> dict:
    """Per-user purchase counts and spend of the complete, distinct rows, by plain Python; users
    by the pseudonym the tables carry."""
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    header, data = rows[0], rows[1:]
    col = {name: i for i, name in enumerate(header)}
    distinct = list(dict.fromkeys(tuple(r) for r in data if len(r) == len(header)))
    purchases, spend, items_bought = defaultdict(int), defaultdict(float), defaultdict(set)
    for r in distinct:
        if r[col["event_type"]] == "purchase":
            user = expected_pseudonym(r[col["user_id"]])
            purchases[user] += 1
            spend[user] += float(r[col["price"]])
            items_bought[user].add(r[col["product_id"]])
    return {"users": len({r[col["user_id"]] for r in distinct}),
            "items": len({r[col["product_id"]] for r in distinct}),
            "purchases": purchases, "spend": spend, "items_bought": items_bought}


def test_profiles_als_and_rules_on_rees46(spark, tmp_path, mlflow_store):
    data_dir = shared_dataset("rees46-ecommerce-oct2019-sample")
    expected = independent_figures(data_dir / "2019-Oct-sample.csv")
    cfg = load_config(PROJECT / "conf" / "local.yaml", environ={
        **mlflow_store,
        "SHOPREC__WAREHOUSE__ROOT": str(tmp_path / "warehouse"),
        "SHOPREC__INPUT__SOURCE": "rees46",
        "SHOPREC__INPUT__PATH": str(data_dir),
        "SHOPREC__ALS__RANKS": "[8]", "SHOPREC__ALS__REG_PARAMS": "[0.1]", "SHOPREC__ALS__ALPHAS": "[5.0]",
        "SHOPREC__ALS__MAX_ITER": "5", "SHOPREC__ALS__TOP_K": "5", "SHOPREC__ALS__BLOCKS": "2",
        "SHOPREC__ALS__REGISTERED_MODEL": "shoprec-als-rees46",
        "SHOPREC__PROFILES__CONTENT_FEATURES": "128",
        "SHOPREC__RULES__BASKET": "user_day", "SHOPREC__RULES__MIN_BASKET_COUNT": "2",
    })
    clean_events.run(spark, cfg, RUN_DATE)
    counts = build_profiles.run(spark, cfg, RUN_DATE)

    users = read_snapshot(spark, cfg.table_path("user_profile"), RUN_DATE)
    assert counts["user_profile"] == users.count() == expected["users"]
    buyers = {r.user_id: r for r in users.where(F.col("frequency") > 0).collect()}
    assert {u: r.frequency for u, r in buyers.items()} == dict(expected["purchases"])
    for user, spend in expected["spend"].items():
        assert buyers[user].monetary == pytest.approx(spend)
    items = read_snapshot(spark, cfg.table_path("item_profile"), RUN_DATE)
    assert items.count() == expected["items"]
    # REES46 categories are dotted paths: content tokens carry every level.
    tokens = items.where(F.col("category") == "electronics.smartphone").first().content_tokens
    assert {"category:electronics", "category:electronics.smartphone"} <= set(tokens)

    als_counts = train_als.run(spark, cfg, RUN_DATE)
    recs = read_snapshot(spark, cfg.table_path("als_recs"), RUN_DATE)
    assert recs.count() == als_counts["als_recs"] > 0
    bought = [(u, i) for u, its in expected["items_bought"].items() for i in its]
    bought_df = spark.createDataFrame(bought, "user_id string, item_id string")
    assert recs.join(bought_df, ["user_id", "item_id"]).count() == 0

    rule_counts = mine_rules.run(spark, cfg, RUN_DATE)
    multi_item_days = sum(1 for its in expected["items_bought"].values() if len(its) >= 2)
    assert rule_counts["baskets"] == multi_item_days
    assert read_snapshot(spark, cfg.table_path("assoc_rules"), RUN_DATE).count() == rule_counts["assoc_rules"]
