"""The synthetic shop generator: exact size, determinism, realistic shape, and its dirt."""

from __future__ import annotations

import json
from collections import Counter

from shoprec.config import GenerateConfig
from shoprec.synthetic import build_catalogue, generate_events, generate_partition, write_events


def lines_of(cfg: GenerateConfig) -> list[str]:
    cat = build_catalogue(cfg)
    out = []
    for partition in range(cfg.partitions):
        quota = cfg.events // cfg.partitions + (1 if partition < cfg.events % cfg.partitions else 0)
        for chunk in generate_partition(cfg, cat, partition, quota):
            out.extend(chunk["value"])
    return out


def test_exact_count_and_deterministic_for_a_seed():
    cfg = GenerateConfig(events=5003, partitions=3, seed=7)
    first = lines_of(cfg)
    assert len(first) == 5003
    assert first == lines_of(cfg)
    assert first != lines_of(GenerateConfig(events=5003, partitions=3, seed=8))


def test_clean_log_has_a_shop_shape():
    cfg = GenerateConfig(events=20000, partitions=2, dirty_fraction=0.0, users=2000, items=500)
    records = [json.loads(line) for line in lines_of(cfg)]
    types = Counter(r["type"] for r in records)
    assert types["view"] > types["cart"] > types["purchase"] > 0
    assert types["search"] > 0 and types["remove_from_cart"] > 0
    assert all("q" in r and "product" not in r for r in records if r["type"] == "search")
    assert all(r["price"] > 0 for r in records if "price" in r)
    # Power-law popularity: the top 1% of items draw far more than 1% of views.
    views = Counter(r["product"] for r in records if r["type"] == "view")
    top = sum(count for _, count in views.most_common(5))
    assert top / sum(views.values()) > 0.05
    # Repeat buyers: some users purchase more than once.
    buyers = Counter(r["user"] for r in records if r["type"] == "purchase")
    assert max(buyers.values()) > 1
    # Bots are the users above cfg.users, firing bursts.
    assert any(r["user"] > cfg.users for r in records)


def test_loyal_users_view_their_own_brand_of_the_category():
    def own_brand_share(loyalty: float) -> float:
        cfg = GenerateConfig(events=20000, partitions=2, dirty_fraction=0.0, bot_users=0, brand_loyalty=loyalty)
        cat = build_catalogue(cfg)
        views = [r for r in map(json.loads, lines_of(cfg)) if r["type"] == "view"]
        own = [cat.brand_names[cat.user_brand[r["user"] - 1, cat.item_category[r["product"] - 1]]] == r["brand"]
               for r in views]
        return sum(own) / len(own)

    # The catalogue and the users' brands do not depend on the loyalty, only the sessions do.
    assert (build_catalogue(GenerateConfig(brand_loyalty=0.0)).user_brand
            == build_catalogue(GenerateConfig(brand_loyalty=1.0)).user_brand).all()
    indifferent, loyal = own_brand_share(0.0), own_brand_share(1.0)
    # Without loyalty a view is of the user's brand about as often as a category's brand share
    # (a category has up to 6 brands); with it, most views are.
    assert indifferent < 0.35 and loyal > 0.6, (indifferent, loyal)


def test_dirty_fraction_corrupts_records():
    cfg = GenerateConfig(events=20000, partitions=2, dirty_fraction=0.05)
    lines = lines_of(cfg)
    malformed = 0
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            malformed += 1
    assert 20000 * 0.05 / 7 * 0.5 < malformed < 20000 * 0.05 / 7 * 1.5
    assert len(lines) - len(set(lines)) > 0  # re-delivered events
    assert sum('"user_":' in line for line in lines) > 0
    assert sum('"price":-' in line for line in lines) > 0
    assert sum('"ts":"21' in line for line in lines) > 0


def test_spark_writes_gzipped_lines_partitioned_by_landing_date(spark, tmp_path):
    cfg = GenerateConfig(events=3000, days=3, partitions=2, start_date="2026-02-01")
    out = str(tmp_path / "raw")
    write_events(generate_events(spark, cfg), out)
    days = sorted(p.name for p in (tmp_path / "raw").iterdir() if p.name.startswith("dt="))
    assert days[:3] == ["dt=2026-02-01", "dt=2026-02-02", "dt=2026-02-03"]
    assert all(f.name.endswith(".txt.gz") for d in days for f in (tmp_path / "raw" / d).iterdir()
               if not f.name.startswith((".", "_")))
    assert spark.read.text(out).count() == 3000
    assert sorted(r.value for r in spark.read.text(out).collect()) == sorted(lines_of(cfg))
