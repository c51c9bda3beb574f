"""Interactions, user and item profiles, content tokens: exact values on small inline events."""

import datetime as dt

import pytest

from shoprec.etl import profiles as P

AS_OF = dt.datetime(2026, 1, 11)
EVENT_COLUMNS = "user_id string, item_id string, event_type string, event_time timestamp, session_id string, " \
                "price double, quantity int, category string, brand string, rating double"


def ts(day: int, hour: int = 12, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 1, day, hour, minute)


@pytest.fixture(scope="module")
def events(spark):
    rows = [
        ("u1", "a", "view", ts(10), "s1", 10.0, None, "shoes", "acme", None),
        ("u1", "a", "cart", ts(10, 12, 5), "s1", 10.0, 1, "shoes", "acme", None),
        ("u1", "a", "purchase", ts(10, 12, 10), "s1", 10.0, 2, "shoes", "acme", None),
        ("u1", "b", "view", ts(1), "s0", 200.0, None, "hats", "zeta", None),
        ("u1", None, "search", ts(1), "s0", None, None, None, None, None),
        ("u2", "b", "view", ts(10, 23, 0), "s2", 220.0, None, "hats", "zeta", None),
        ("u2", "b", "view", ts(10, 23, 30), "s2", 220.0, None, "hats", "zeta", None),
        ("u3", "c", "rating", ts(10), "s3", None, None, None, None, 4.0),
    ]
    return spark.createDataFrame(rows, EVENT_COLUMNS)


def test_interactions_weigh_event_types_and_decay(events):
    weights = {"view": 1.0, "cart": 4.0, "purchase": 10.0, "rating": 1.0}
    rows = {(r.user_id, r.item_id): r for r in P.build_interactions(events, weights, 10.0, AS_OF).collect()}
    assert set(rows) == {("u1", "a"), ("u1", "b"), ("u2", "b"), ("u3", "c")}
    # u1/a: three events ~0.5 day old; u1/b: one view exactly 9.5 days old.
    age_a = [(AS_OF - t).total_seconds() / 86400 for t in (ts(10), ts(10, 12, 5), ts(10, 12, 10))]
    expected_a = sum(w * 0.5 ** (age / 10) for w, age in zip((1.0, 4.0, 10.0), age_a))
    assert rows[("u1", "a")].confidence == pytest.approx(expected_a)
    assert rows[("u1", "b")].confidence == pytest.approx(0.5 ** 0.95)
    assert (rows[("u1", "a")].n_view, rows[("u1", "a")].n_cart, rows[("u1", "a")].n_purchase) == (1, 1, 1)
    assert rows[("u2", "b")].n_view == 2
    # A rating weighs its stars.
    assert rows[("u3", "c")].confidence == pytest.approx(4.0 * 0.5 ** (0.5 / 10))
    assert rows[("u3", "c")].last_rating == 4.0


def test_merging_a_later_day_equals_building_from_everything(spark, events):
    weights = {"view": 1.0, "cart": 4.0, "purchase": 10.0}
    early = events.where(events.event_time < ts(10))
    late = events.where(events.event_time >= ts(10))
    previous_as_of = dt.datetime(2026, 1, 8)
    snapshot = P.build_interactions(early, weights, 7.0, previous_as_of)
    merged = P.merge_interactions(snapshot, previous_as_of, P.build_interactions(late, weights, 7.0, AS_OF),
                                  AS_OF, 7.0, min_confidence=0.0)
    full = {(r.user_id, r.item_id): r for r in P.build_interactions(events, weights, 7.0, AS_OF).collect()}
    got = {(r.user_id, r.item_id): r for r in merged.collect()}
    assert set(got) == set(full)
    for key, row in full.items():
        assert got[key].confidence == pytest.approx(row.confidence, rel=1e-12)
        assert got[key].n_view == row.n_view
        assert got[key].first_event_time == row.first_event_time
        assert got[key].last_event_time == row.last_event_time


def test_merge_drops_pairs_that_decayed_below_the_floor(spark, events):
    weights = {"view": 1.0}
    old = P.build_interactions(events.where(events.item_id == "b"), weights, 1.0, dt.datetime(2026, 1, 2))
    empty = P.build_interactions(events.limit(0), weights, 1.0, AS_OF)
    merged = P.merge_interactions(old, dt.datetime(2026, 1, 2), empty, AS_OF, 1.0, min_confidence=0.01)
    assert merged.count() == 0  # nine half-lives later every pair is below 0.01


def test_user_profile_rfm_conversion_and_favourites(events):
    profile = {r.user_id: r for r in P.user_profile(events, AS_OF, top_n=2, price_bands=[50.0, 150.0]).collect()}
    u1 = profile["u1"]
    assert u1.frequency == 1
    assert u1.monetary == pytest.approx(20.0)  # price 10 x quantity 2
    assert u1.recency_days == pytest.approx((AS_OF - ts(10, 12, 10)).total_seconds() / 86400)
    assert (u1.n_view, u1.n_cart, u1.n_purchase, u1.n_search) == (2, 1, 1, 1)
    assert u1.view_to_cart == pytest.approx(0.5)
    assert u1.cart_to_purchase == pytest.approx(1.0)
    assert u1.active_days == 2
    assert u1.sessions == 2
    assert u1.price_band == 0  # average purchase price 10 < 50
    assert [(f.value, f.share) for f in u1.favourite_categories] == [("shoes", 0.75), ("hats", 0.25)]
    assert [f.value for f in u1.favourite_brands] == ["acme", "zeta"]
    u2 = profile["u2"]
    assert u2.frequency == 0 and u2.monetary == 0.0
    assert u2.price_band == 2  # no purchases: median viewed price 220 >= 150
    assert u2.avg_session_minutes == pytest.approx(30.0)
    assert u2.view_to_cart == 0.0


def test_item_profile_windows_and_prices(events):
    items = {r.item_id: r for r in P.item_profile(events, AS_OF, windows_days=[1, 30], half_life_days=7.0).collect()}
    assert set(items) == {"a", "b", "c"}
    b = items["b"]
    assert (b.views_1d, b.views_30d) == (2, 3)
    assert b.distinct_viewers == 2
    assert (b.price_min, b.price_max, b.price_last) == (200.0, 220.0, 220.0)
    assert b.category == "hats" and b.brand == "zeta"
    a = items["a"]
    assert (a.purchases_1d, a.distinct_buyers) == (1, 1)
    assert a.view_to_purchase == pytest.approx(1.0)


def test_content_tokens_expand_category_paths(spark):
    df = spark.createDataFrame([("Electronics.Audio.Headphone", "Sony"), (None, None)], "category string, brand string")
    from pyspark.sql import functions as F

    tokens = [r[0] for r in df.select(P.content_tokens(F.col("category"), F.col("brand"))).collect()]
    assert tokens[0] == ["category:electronics", "category:electronics.audio", "category:electronics.audio.headphone",
                         "brand:sony"]
    assert tokens[1] == []
