"""score's business rules on the ranker's scores: exclusions, the category cap and the popularity fill."""

from shoprec.jobs.score import apply_business_rules

SCORED = "user_id string, item_id string, category string, score double, source string, reason string"
POPULAR = "rank int, item_id string, category string, score double"


def recommended(spark, max_per_category, top_k=5):
    # u's candidates: three shoes above a hat and a bag; u bought the bag. v has no candidates.
    scored = spark.createDataFrame([
        ("u", "shoe1", "shoes", 0.9, "als", "picked for you"), ("u", "shoe2", "shoes", 0.8, "als", "picked for you"),
        ("u", "shoe3", "shoes", 0.7, "als", "picked for you"), ("u", "hat", "hats", 0.6, "rules", "bought with x"),
        ("u", "bag", "bags", 0.95, "als", "picked for you"),
    ], SCORED)
    popular = spark.createDataFrame([(1, "shoe4", "shoes", 9.0), (2, "bag", "bags", 8.0), (3, "belt", "belts", 7.0)],
                                    POPULAR)
    purchased = spark.createDataFrame([("u", "bag")], "user_id string, item_id string")
    users = spark.createDataFrame([("u",), ("v",)], "user_id string")
    rows = apply_business_rules(scored, purchased, popular, users, top_k, max_per_category).collect()
    by_user = {}
    for r in sorted(rows, key=lambda r: (r.user_id, r["rank"])):
        by_user.setdefault(r.user_id, []).append((r["rank"], r.item_id, r.source))
    return by_user


def test_the_category_cap_skips_a_categorys_extra_items_and_fills_from_popular_items(spark):
    got = recommended(spark, max_per_category=2)
    # shoe3 and the popular shoe4 are a third shoe; the purchased bag is never shown.
    assert got["u"] == [(1, "shoe1", "als"), (2, "shoe2", "als"), (3, "hat", "rules"), (4, "belt", "popular")]
    assert got["v"] == [(1, "shoe4", "popular"), (2, "bag", "popular"), (3, "belt", "popular")]


def test_without_a_cap_the_rankers_order_stands(spark):
    got = recommended(spark, max_per_category=None)
    assert got["u"] == [(1, "shoe1", "als"), (2, "shoe2", "als"), (3, "shoe3", "als"), (4, "hat", "rules"),
                        (5, "shoe4", "popular")]
    assert got["v"] == [(1, "shoe4", "popular"), (2, "bag", "popular"), (3, "belt", "popular")]
