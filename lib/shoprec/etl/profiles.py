"""Pure transforms from clean events to interactions and user and item profiles.

Time decay everywhere is exponential with a half-life: an event ``t`` days before the as-of time
weighs ``0.5 ** (t / half_life_days)``. The as-of time of a run date ``d`` is ``d + 1 day``
00:00 UTC (the end of the day), so an event of that day weighs almost 1.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from shoprec import schemas as S

CONFIDENCE = "confidence"
LAST_EVENT_TIME = "last_event_time"
FIRST_EVENT_TIME = "first_event_time"
SECONDS_PER_DAY = 86_400.0

# Event types counted per (user, item) and per item.
COUNTED_TYPES = ("view", "cart", "remove_from_cart", "purchase", "rating", "search")


def as_of_time(run_date: str) -> dt.datetime:
    """The end of ``run_date`` (UTC): the instant a run's decay and recency are measured from."""
    return dt.datetime.combine(dt.date.fromisoformat(run_date) + dt.timedelta(days=1), dt.time())


def age_days(as_of: dt.datetime, time_col: str = S.EVENT_TIME) -> Column:
    """Days from ``time_col`` to ``as_of`` (fractional; never negative)."""
    seconds = F.lit(as_of).cast("timestamp").cast("double") - F.col(time_col).cast("double")
    return F.greatest(F.lit(0.0), seconds / SECONDS_PER_DAY)


def decay(age: Column, half_life_days: float) -> Column:
    """The weight of something ``age`` days old."""
    return F.pow(F.lit(0.5), age / F.lit(float(half_life_days)))


def count_of(event_type: str) -> Column:
    return F.sum((F.col(S.EVENT_TYPE) == event_type).cast("long"))


def build_interactions(events: DataFrame, weights: dict[str, float], half_life_days: float,
                       as_of: dt.datetime) -> DataFrame:
    """One row per (user, item) with an implicit-feedback confidence.

    ``confidence = Σ weights[event_type] · 0.5 ** (age_days / half_life_days)`` over the pair's
    events (a rating event weighs ``weights["rating"] · rating``). Events without an item (searches)
    and of types with no weight are ignored.

    Returns:
        ``user_id string, item_id string, confidence double, n_view long, n_cart long,
        n_remove_from_cart long, n_purchase long, n_rating long, last_rating double,
        first_event_time timestamp, last_event_time timestamp``.
    """
    S.require_columns(events, [S.USER_ID, S.ITEM_ID, S.EVENT_TYPE, S.EVENT_TIME, S.RATING], "build_interactions")
    weight = F.lit(0.0)
    for event_type, value in sorted(weights.items()):
        strength = F.lit(float(value)) * (F.coalesce(F.col(S.RATING), F.lit(1.0)) if event_type == "rating" else F.lit(1.0))
        weight = F.when(F.col(S.EVENT_TYPE) == event_type, strength).otherwise(weight)
    weighted = events.where(F.col(S.ITEM_ID).isNotNull() & F.col(S.EVENT_TYPE).isin(*weights)).withColumn(
        "_weight", weight * decay(age_days(as_of), half_life_days))
    last_rating = F.max_by(F.col(S.RATING), F.when(F.col(S.RATING).isNotNull(), F.col(S.EVENT_TIME)))
    return weighted.groupBy(S.USER_ID, S.ITEM_ID).agg(
        F.sum("_weight").alias(CONFIDENCE),
        *[count_of(t).alias(f"n_{t}") for t in COUNTED_TYPES if t != "search"],
        last_rating.alias("last_rating"),
        F.min(S.EVENT_TIME).alias(FIRST_EVENT_TIME),
        F.max(S.EVENT_TIME).alias(LAST_EVENT_TIME),
    )


def merge_interactions(previous: DataFrame, previous_as_of: dt.datetime, new: DataFrame, as_of: dt.datetime,
                       half_life_days: float, min_confidence: float) -> DataFrame:
    """Roll an interactions snapshot forward: decay it to ``as_of`` and add the new events' rows.

    Exact for exponential decay: ``Σ w·0.5^(age/h)`` measured at ``as_of`` equals the previous
    sum times ``0.5^(Δdays/h)`` plus the new events' sum, when every event is in exactly one of
    the two inputs. Pairs whose confidence falls below ``min_confidence`` are dropped.

    Args:
        previous: an interactions snapshot taken at ``previous_as_of``.
        new: :func:`build_interactions` of the events not in ``previous``, measured at ``as_of``.

    Returns:
        The columns of :func:`build_interactions`.
    """
    elapsed = (as_of - previous_as_of).total_seconds() / SECONDS_PER_DAY
    if elapsed < 0:
        raise ValueError(f"merge_interactions: previous snapshot ({previous_as_of}) is after {as_of}")
    factor = 0.5 ** (elapsed / half_life_days)
    counts = [f"n_{t}" for t in COUNTED_TYPES if t != "search"]
    both = previous.withColumn(CONFIDENCE, F.col(CONFIDENCE) * F.lit(factor)).unionByName(new)
    merged = both.groupBy(S.USER_ID, S.ITEM_ID).agg(
        F.sum(CONFIDENCE).alias(CONFIDENCE),
        *[F.sum(c).alias(c) for c in counts],
        F.max_by("last_rating", F.when(F.col("last_rating").isNotNull(), F.col(LAST_EVENT_TIME))).alias("last_rating"),
        F.min(FIRST_EVENT_TIME).alias(FIRST_EVENT_TIME),
        F.max(LAST_EVENT_TIME).alias(LAST_EVENT_TIME),
    )
    return merged.where(F.col(CONFIDENCE) >= min_confidence)


def _top_shares(events: DataFrame, key: str, top_n: int, name: str) -> DataFrame:
    """Per user, the ``top_n`` values of ``key`` by share of the user's item events."""
    per_value = (events.where(F.col(key).isNotNull() & F.col(S.ITEM_ID).isNotNull())
                 .groupBy(S.USER_ID, key).agg(F.count(F.lit(1)).alias("_n")))
    total = Window.partitionBy(S.USER_ID)
    order = Window.partitionBy(S.USER_ID).orderBy(F.col("_n").desc(), F.col(key))
    ranked = (per_value.withColumn("_share", F.col("_n") / F.sum("_n").over(total))
              .withColumn("_rank", F.row_number().over(order)).where(F.col("_rank") <= top_n))
    return ranked.groupBy(S.USER_ID).agg(
        F.transform(F.sort_array(F.collect_list(F.struct("_rank", key, "_share"))),
                    lambda s: F.struct(s[key].alias("value"), F.round(s["_share"], 4).alias("share"))).alias(name))


def user_profile(events: DataFrame, as_of: dt.datetime, top_n: int, price_bands: list[float]) -> DataFrame:
    """One row per user: RFM, activity, conversion, favourites, price band and session statistics.

    Args:
        events: clean events of the profile's history window.
        as_of: the instant recency is measured to.
        top_n: how many favourite categories and brands to keep.
        price_bands: ascending price boundaries; band ``i`` holds prices in
            ``[price_bands[i-1], price_bands[i])`` (band 0 below the first boundary).

    Returns:
        ``user_id string, recency_days double, frequency long (purchase events), monetary double
        (Σ price · quantity of purchases), n_view … n_search long, view_to_cart double,
        cart_to_purchase double, view_to_purchase double, active_days long, sessions long,
        events_per_session double, avg_session_minutes double, avg_purchase_price double,
        price_band int, favourite_categories array<struct<value,share>>,
        favourite_brands array<struct<value,share>>, first_event_time, last_event_time``.
    """
    S.require_columns(events, [S.USER_ID, S.EVENT_TYPE, S.EVENT_TIME, S.SESSION_ID, S.PRICE, S.QUANTITY,
                               S.CATEGORY, S.BRAND], "user_profile")
    purchase = F.col(S.EVENT_TYPE) == "purchase"
    basic = events.groupBy(S.USER_ID).agg(
        F.max(S.EVENT_TIME).alias(LAST_EVENT_TIME),
        F.min(S.EVENT_TIME).alias(FIRST_EVENT_TIME),
        F.max(F.when(purchase, F.col(S.EVENT_TIME))).alias("_last_purchase"),
        count_of("purchase").alias("frequency"),
        F.sum(F.when(purchase, F.col(S.PRICE) * F.coalesce(F.col(S.QUANTITY), F.lit(1)))).alias("monetary"),
        *[count_of(t).alias(f"n_{t}") for t in COUNTED_TYPES],
        F.countDistinct(F.to_date(S.EVENT_TIME)).alias("active_days"),
        F.countDistinct(S.SESSION_ID).alias("sessions"),
        F.avg(F.when(purchase, F.col(S.PRICE))).alias("avg_purchase_price"),
        F.percentile_approx(F.when(F.col(S.PRICE).isNotNull() & F.col(S.EVENT_TYPE).isin("view", "cart", "purchase"),
                                   F.col(S.PRICE)), 0.5).alias("_median_price"),
    )
    sessions = (events.groupBy(S.USER_ID, S.SESSION_ID)
                .agg(F.count(F.lit(1)).alias("_n"),
                     ((F.max(S.EVENT_TIME).cast("double") - F.min(S.EVENT_TIME).cast("double")) / 60).alias("_minutes"))
                .groupBy(S.USER_ID)
                .agg(F.avg("_n").alias("events_per_session"), F.avg("_minutes").alias("avg_session_minutes")))

    def ratio(numerator: str, denominator: str) -> Column:
        return F.when(F.col(denominator) > 0, F.col(numerator) / F.col(denominator))

    reference_price = F.coalesce(F.col("avg_purchase_price"), F.col("_median_price"))
    band = F.lit(0)
    for i, boundary in enumerate(price_bands):
        band = F.when(reference_price >= F.lit(float(boundary)), F.lit(i + 1)).otherwise(band)
    recency_from = F.coalesce(F.col("_last_purchase"), F.col(LAST_EVENT_TIME))
    profile = (basic
               .withColumn("recency_days", (F.lit(as_of).cast("timestamp").cast("double") - recency_from.cast("double"))
                           / SECONDS_PER_DAY)
               .withColumn("monetary", F.coalesce(F.col("monetary"), F.lit(0.0)))
               .withColumn("view_to_cart", ratio("n_cart", "n_view"))
               .withColumn("cart_to_purchase", ratio("n_purchase", "n_cart"))
               .withColumn("view_to_purchase", ratio("n_purchase", "n_view"))
               .withColumn("price_band", F.when(reference_price.isNotNull(), band))
               .join(sessions, S.USER_ID, "left")
               .join(_top_shares(events, S.CATEGORY, top_n, "favourite_categories"), S.USER_ID, "left")
               .join(_top_shares(events, S.BRAND, top_n, "favourite_brands"), S.USER_ID, "left"))
    return profile.select(
        S.USER_ID, "recency_days", "frequency", "monetary", *[f"n_{t}" for t in COUNTED_TYPES],
        "view_to_cart", "cart_to_purchase", "view_to_purchase", "active_days", "sessions",
        "events_per_session", "avg_session_minutes", "avg_purchase_price", "price_band",
        "favourite_categories", "favourite_brands", FIRST_EVENT_TIME, LAST_EVENT_TIME)


def item_profile(events: DataFrame, as_of: dt.datetime, windows_days: list[int], half_life_days: float) -> DataFrame:
    """One row per item: windowed and decayed funnel counts, conversion, price and catalogue data.

    Returns:
        ``item_id string, category string, brand string, views_<w>d / carts_<w>d / purchases_<w>d
        long for each window w, views_decayed / carts_decayed / purchases_decayed / ratings_decayed
        double, view_to_cart double, view_to_purchase double (lifetime of the history window),
        distinct_buyers long, distinct_viewers long, price_min / price_avg / price_max / price_last double,
        rating_avg double (mean explicit rating; null without ratings), first_event_time, last_event_time``.
    """
    S.require_columns(events, [S.ITEM_ID, S.USER_ID, S.EVENT_TYPE, S.EVENT_TIME, S.PRICE, S.CATEGORY, S.BRAND,
                               S.RATING], "item_profile")
    item_events = events.where(F.col(S.ITEM_ID).isNotNull()).withColumn("_age", age_days(as_of))
    windowed = []
    for days in windows_days:
        within = F.col("_age") <= F.lit(float(days))
        for event_type, name in (("view", "views"), ("cart", "carts"), ("purchase", "purchases")):
            windowed.append(F.sum((within & (F.col(S.EVENT_TYPE) == event_type)).cast("long")).alias(f"{name}_{days}d"))
    weight = decay(F.col("_age"), half_life_days)
    decayed = [F.sum(F.when(F.col(S.EVENT_TYPE) == t, weight).otherwise(0.0)).alias(f"{name}_decayed")
               for t, name in (("view", "views"), ("cart", "carts"), ("purchase", "purchases"), ("rating", "ratings"))]
    priced = F.col(S.PRICE).isNotNull() & F.col(S.EVENT_TYPE).isin("view", "cart", "purchase")
    profile = item_events.groupBy(S.ITEM_ID).agg(
        # The most recent non-null category and brand: catalogues get re-categorised.
        F.max_by(S.CATEGORY, F.when(F.col(S.CATEGORY).isNotNull(), F.col(S.EVENT_TIME))).alias(S.CATEGORY),
        F.max_by(S.BRAND, F.when(F.col(S.BRAND).isNotNull(), F.col(S.EVENT_TIME))).alias(S.BRAND),
        *windowed, *decayed,
        count_of("view").alias("_views"), count_of("cart").alias("_carts"), count_of("purchase").alias("_purchases"),
        F.countDistinct(F.when(F.col(S.EVENT_TYPE) == "purchase", F.col(S.USER_ID))).alias("distinct_buyers"),
        F.countDistinct(F.when(F.col(S.EVENT_TYPE) == "view", F.col(S.USER_ID))).alias("distinct_viewers"),
        F.min(F.when(priced, F.col(S.PRICE))).alias("price_min"),
        F.avg(F.when(priced, F.col(S.PRICE))).alias("price_avg"),
        F.max(F.when(priced, F.col(S.PRICE))).alias("price_max"),
        F.max_by(F.col(S.PRICE), F.when(priced, F.col(S.EVENT_TIME))).alias("price_last"),
        F.avg(F.when(F.col(S.EVENT_TYPE) == "rating", F.col(S.RATING))).alias("rating_avg"),
        F.min(S.EVENT_TIME).alias(FIRST_EVENT_TIME),
        F.max(S.EVENT_TIME).alias(LAST_EVENT_TIME),
    )
    return (profile
            .withColumn("view_to_cart", F.when(F.col("_views") > 0, F.col("_carts") / F.col("_views")))
            .withColumn("view_to_purchase", F.when(F.col("_views") > 0, F.col("_purchases") / F.col("_views")))
            .drop("_views", "_carts", "_purchases"))


def content_tokens(category: Column, brand: Column, title: Column | None = None) -> Column:
    """Words describing an item: each level of a dotted/slashed category path (``electronics``,
    ``electronics.audio``), ``brand:<brand>``, and title words when the source has titles."""
    levels = F.split(F.coalesce(F.lower(category), F.lit("")), r"[./>]")
    prefixes = F.transform(F.sequence(F.lit(1), F.greatest(F.size(levels), F.lit(1))),
                           lambda n: F.concat(F.lit("category:"), F.array_join(F.slice(levels, 1, n), ".")))
    tokens = F.concat(
        F.filter(prefixes, lambda t: t != F.lit("category:")),
        F.when(brand.isNotNull(), F.array(F.concat(F.lit("brand:"), F.lower(brand)))).otherwise(F.array().cast("array<string>")),
    )
    if title is not None:
        words = F.filter(F.split(F.lower(F.coalesce(title, F.lit(""))), r"[^\p{L}\p{N}]+"), lambda w: F.length(w) > 1)
        tokens = F.concat(tokens, words)
    return tokens
