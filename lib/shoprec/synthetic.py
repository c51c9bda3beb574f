"""A synthetic shop's raw event log, generated in parallel by Spark.

The shop has a catalogue of items in categories and brands with category price ranges; item
popularity follows a power law, and so does user activity (a few heavy, repeat buyers, a long
tail of occasional visitors). Each visit is a session: sometimes a search first, then views
mostly within one category (often one of the user's favourites) and, in most sessions, of the
user's brand in that category where the shop has it (brand loyalty), then, for some, a cart, and a
purchase or a removal from the cart; two buyers in five also cart and buy the item's companion
from another category (a phone and its case), which gives association rules something to find.
A few bot users fire hundreds of views in minutes.

A configurable fraction of records is dirty, the way real feeds are: malformed JSON, missing user
or item ids, negative prices, unknown event types, clock-skewed timestamps and events delivered
twice. About one timestamp in ten carries a +02:00 offset instead of ``Z``.

Output: gzipped JSON lines, ``<out>/dt=YYYY-MM-DD/part-*.txt.gz``, exactly ``events`` lines in
all. The content depends only on the seed and the config, not on the cluster.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession

from shoprec.config import GenerateConfig

CATEGORY_NAMES = (
    ("electronics.smartphone", 350.0), ("electronics.audio.headphone", 60.0), ("electronics.video.tv", 520.0),
    ("electronics.clocks", 120.0), ("computers.notebook", 800.0), ("computers.peripherals.mouse", 25.0),
    ("appliances.kitchen.kettle", 35.0), ("appliances.kitchen.refrigerators", 650.0),
    ("appliances.environment.vacuum", 180.0), ("apparel.shoes", 70.0), ("apparel.jeans", 45.0),
    ("furniture.living_room.sofa", 540.0), ("furniture.bedroom.bed", 420.0), ("kids.toys", 22.0),
    ("sport.bicycle", 390.0), ("sport.fitness.dumbbells", 40.0), ("beauty.skincare", 18.0),
    ("beauty.fragrance", 55.0), ("auto.accessories.videoregister", 75.0), ("construction.tools.drill", 95.0),
    ("country_yard.lawn_mower", 260.0), ("stationery.cartrige", 30.0), ("accessories.bag", 48.0),
    ("medicine.tools.tonometer", 42.0),
)
SYLLABLES = ("ka", "zo", "mi", "ra", "te", "lu", "vo", "sen", "tri", "no", "qua", "bel", "dex", "fi", "gor", "hy")
SECONDS_PER_DAY = 86_400
LINES_PER_CHUNK = 200_000
# A loyal session's item is the first of this many popularity draws that is of the user's brand.
BRAND_TRIES = 8


@dataclass(frozen=True)
class Catalogue:
    """Items, their categories, brands, prices and popularity; users' tastes and activity."""

    category_names: list[str]
    brand_names: list[str]
    item_category: np.ndarray
    item_brand: np.ndarray
    item_price: np.ndarray
    item_cum_weight: np.ndarray  # per category, cumulative popularity offset by category index
    category_first_item: np.ndarray
    category_weight: np.ndarray
    user_weight: np.ndarray
    user_favourite: np.ndarray
    item_companion: np.ndarray
    user_brand: np.ndarray  # (users, categories): each user's brand in each category


def build_catalogue(cfg: GenerateConfig) -> Catalogue:
    """Draw the shop's catalogue and users from the seed (small: lives on the driver)."""
    rng = np.random.default_rng([cfg.seed, 0])
    n_cat = min(cfg.categories, len(CATEGORY_NAMES))
    categories = [CATEGORY_NAMES[i] for i in range(n_cat)]
    brands = ["".join(rng.choice(SYLLABLES, size=rng.integers(2, 4))) for _ in range(cfg.brands)]
    brands = [f"{b}{i}" if brands.index(b) != i else b for i, b in enumerate(brands)]

    category_weight = 1.0 / np.arange(1, n_cat + 1) ** 0.8
    category_weight = rng.permutation(category_weight / category_weight.sum())
    item_category = np.sort(rng.choice(n_cat, size=cfg.items, p=category_weight))
    # Every category gets a few brands; an item takes one of its category's brands.
    category_brands = [rng.choice(cfg.brands, size=min(cfg.brands, 6), replace=False) for _ in range(n_cat)]
    item_brand = np.array([rng.choice(category_brands[c]) for c in item_category])
    median = np.array([categories[c][1] for c in item_category])
    item_price = np.round(median * rng.lognormal(0.0, 0.45, size=cfg.items), 2)

    popularity = 1.0 / np.arange(1, cfg.items + 1) ** 1.05
    popularity = rng.permutation(popularity)
    cum = np.empty(cfg.items)
    first = np.searchsorted(item_category, np.arange(n_cat + 1))
    for c in range(n_cat):
        lo, hi = first[c], first[c + 1]
        if hi > lo:
            weights = popularity[lo:hi] / popularity[lo:hi].sum()
            cum[lo:hi] = c + np.cumsum(weights)
            cum[hi - 1] = c + 1.0
    user_weight = 1.0 / np.arange(1, cfg.users + 1) ** 0.7
    user_weight = rng.permutation(user_weight / user_weight.sum())
    user_favourite = rng.choice(n_cat, size=cfg.users, p=category_weight)
    # Categories without items cannot be browsed.
    has_items = np.diff(first) > 0
    category_weight = np.where(has_items, category_weight, 0.0)
    category_weight = category_weight / category_weight.sum()
    user_favourite = np.where(has_items[user_favourite], user_favourite, int(np.argmax(category_weight)))
    # Each item has a companion from another category (a phone and its case) that buyers often add.
    stocked = np.flatnonzero(has_items)
    companion_category = stocked[(np.searchsorted(stocked, item_category) + 1) % len(stocked)]
    draw = np.searchsorted(cum, companion_category + rng.random(cfg.items), side="right")
    item_companion = np.clip(draw, first[companion_category], first[companion_category + 1] - 1)
    # Drawn last, so that the catalogue above is the same whatever the loyalty. In the smallest
    # integer type that holds a brand: the table goes to every generator task (at 50M events, 500k
    # users by 24 categories: 12 MB, against 96 MB as int64).
    brand_choices = np.array(category_brands).astype(np.min_scalar_type(cfg.brands))
    user_brand = brand_choices[np.arange(n_cat), rng.integers(0, brand_choices.shape[1], size=(cfg.users, n_cat))]
    return Catalogue(
        category_names=[name for name, _ in categories], brand_names=brands,
        item_category=item_category, item_brand=item_brand, item_price=item_price,
        item_cum_weight=cum, category_first_item=first, category_weight=category_weight,
        user_weight=user_weight, user_favourite=user_favourite, item_companion=item_companion,
        user_brand=user_brand,
    )


def _sessions(rng: np.random.Generator, cat: Catalogue, cfg: GenerateConfig, n_sessions: int, start: int) -> pd.DataFrame:
    """Clean events for ``n_sessions`` human sessions, in session order."""
    users = rng.choice(len(cat.user_weight), size=n_sessions, p=cat.user_weight)
    n_views = np.minimum(rng.geometric(0.3, size=n_sessions), 25)
    searches = rng.random(n_sessions) < 0.2
    carts = rng.random(n_sessions) < 0.22
    purchases = carts & (rng.random(n_sessions) < 0.55)
    removals = carts & ~purchases & (rng.random(n_sessions) < 0.35)
    # Some buyers also cart and buy the item's companion in the same session.
    companions = purchases & (rng.random(n_sessions) < 0.4)
    category = np.where(rng.random(n_sessions) < 0.7, cat.user_favourite[users],
                        rng.choice(len(cat.category_weight), size=n_sessions, p=cat.category_weight))
    length = searches + n_views + carts + purchases + removals + 2 * companions
    total = int(length.sum())
    session = np.repeat(np.arange(n_sessions), length)
    offset = np.cumsum(length) - length
    pos = np.arange(total) - offset[session]
    view_pos = pos - searches[session]
    after_views = view_pos - n_views[session]
    kind = np.where(searches[session] & (pos == 0), "search",
           np.where((view_pos >= 0) & (after_views < 0), "view",
           np.where(after_views == 0, "cart",
           np.where(after_views == 1, np.where(purchases[session], "purchase", "remove_from_cart"),
           np.where(after_views == 2, "cart", "purchase")))))

    session_category = category[session]
    items = np.searchsorted(cat.item_cum_weight, session_category + rng.random(total), side="right")
    items = np.clip(items, cat.category_first_item[session_category], cat.category_first_item[session_category + 1] - 1)
    # Brand loyalty: in a loyal session each item is the first of BRAND_TRIES popularity draws that
    # is of the user's brand in the category (the first draw when none is: the shop may not stock it).
    loyal = np.flatnonzero((rng.random(n_sessions) < cfg.brand_loyalty)[session])
    loyal_category = session_category[loyal]
    tries = np.searchsorted(cat.item_cum_weight, loyal_category[:, None] + rng.random((len(loyal), BRAND_TRIES)),
                            side="right")
    tries = np.clip(tries, cat.category_first_item[loyal_category][:, None],
                    cat.category_first_item[loyal_category + 1][:, None] - 1)
    hit = cat.item_brand[tries] == cat.user_brand[users[session[loyal]], loyal_category][:, None]
    items[loyal] = tries[np.arange(len(loyal)), np.where(hit.any(axis=1), hit.argmax(axis=1), 0)]
    # Cart, purchase and removal are of the session's last viewed item.
    last_view = offset + searches + n_views - 1
    items = np.where(after_views >= 0, items[last_view[session]], items)
    items = np.where(after_views >= 2, cat.item_companion[items], items)

    day = rng.integers(0, cfg.days, size=n_sessions)
    # Visits peak in the evening: a wrapped normal around 19:00 UTC.
    second = (rng.normal(19 * 3600, 4 * 3600, size=n_sessions) % SECONDS_PER_DAY).astype(np.int64)
    gaps = rng.exponential(45.0, size=total).astype(np.int64) + 1
    gaps[offset] = 0
    elapsed = np.cumsum(gaps)
    elapsed = elapsed - elapsed[offset][session]
    epoch = start + (day * SECONDS_PER_DAY + second)[session] + elapsed

    price = np.round(cat.item_price[items] * rng.uniform(0.95, 1.05, size=total), 2)
    # A session's purchases form one order, named by the buyer and the session's start.
    order_key = np.char.add(np.char.add((users[session] + 1).astype(str), "-"), epoch[offset][session].astype(str))
    order = np.where(kind == "purchase", order_key, "")
    quantity = np.where(np.isin(kind, ("cart", "purchase", "remove_from_cart")),
                        1 + (rng.random(total) < 0.1), 1)
    brand = cat.item_brand[items]
    leaf = pd.Series([c.rsplit(".", 1)[-1].replace("_", " ") for c in cat.category_names])
    leaf_words = leaf.to_numpy(dtype=object)[session_category]
    brand_words = np.array(cat.brand_names, dtype=object)[brand]
    query = np.where(rng.random(total) < 0.5, brand_words + " " + leaf_words, leaf_words)
    return pd.DataFrame({
        "user": users[session] + 1, "item": items + 1, "kind": kind, "epoch": epoch,
        "price": price, "quantity": quantity, "category": cat.item_category[items], "brand": brand,
        "query": query, "order": order,
    })


def _bot_events(rng: np.random.Generator, cat: Catalogue, cfg: GenerateConfig, n_events: int, start: int) -> pd.DataFrame:
    """Views fired by bot users in bursts of up to 300, three a second, across the catalogue."""
    n_bursts = max(1, n_events // 300)
    burst = rng.integers(0, n_bursts, size=n_events)
    burst_user = cfg.users + 1 + rng.integers(0, max(cfg.bot_users, 1), size=n_bursts)
    burst_start = rng.integers(0, cfg.days, size=n_bursts) * SECONDS_PER_DAY + rng.integers(0, SECONDS_PER_DAY - 600, size=n_bursts)
    burst_start -= burst_start % 60
    duration = np.maximum(np.bincount(burst, minlength=n_bursts) // 3, 1)
    items = rng.integers(0, len(cat.item_category), size=n_events)
    return pd.DataFrame({
        "user": burst_user[burst], "item": items + 1, "kind": "view",
        "epoch": start + burst_start[burst] + (rng.random(n_events) * duration[burst]).astype(np.int64),
        "price": cat.item_price[items], "quantity": 1, "category": cat.item_category[items],
        "brand": cat.item_brand[items], "query": "",
    })


def _to_lines(rng: np.random.Generator, cat: Catalogue, events: pd.DataFrame, start: int) -> pd.DataFrame:
    """Render events as JSON lines with their landing date."""
    n = len(events)
    ids = pd.Series(rng.integers(0, 2**63 - 1, size=n, dtype=np.int64)).map("{:016x}".format)
    ids = ids + pd.Series(rng.integers(0, 2**63 - 1, size=n, dtype=np.int64)).map("{:016x}".format)
    moment = pd.to_datetime(events["epoch"], unit="s", utc=True)
    zulu = moment.dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    shifted = (moment + pd.Timedelta(hours=2)).dt.strftime("%Y-%m-%dT%H:%M:%S+02:00")
    ts = pd.Series(np.where(rng.random(n) < 0.1, shifted, zulu))
    is_search = (events["kind"] == "search").to_numpy()
    category = pd.Series(np.array(cat.category_names)[events["category"].to_numpy()])
    brand = pd.Series(np.array(cat.brand_names)[events["brand"].to_numpy()])
    # Category and brand come in mixed case and padded, as shop feeds often do.
    shout = rng.random(n) < 0.05
    category = pd.Series(np.where(shout, " " + category.str.upper() + " ", category))
    body = (
        '{"id":"' + ids + '","ts":"' + ts + '","type":"' + events["kind"].astype(str)
        + '","user":' + events["user"].astype(str)
    )
    product = pd.Series(np.where(is_search, "", ',"product":' + events["item"].astype(str)
                                 + ',"price":' + events["price"].map("{:.2f}".format)
                                 + ',"qty":' + events["quantity"].astype(str)
                                 + ',"category":"' + category + '","brand":"' + brand + '"'))
    query = pd.Series(np.where(is_search, ',"q":"' + events["query"].astype(str) + '"', ""))
    order = events["order"].fillna("").astype(str) if "order" in events else pd.Series([""] * n)
    order = pd.Series(np.where(order.to_numpy() != "", ',"order":"' + order + '"', ""))
    lines = body + product + query + order + "}"
    landing = pd.to_datetime(events["epoch"], unit="s", utc=True).dt.strftime("%Y-%m-%d")
    return pd.DataFrame({"value": lines.to_numpy(), "dt": landing.to_numpy()})


def _dirty(rng: np.random.Generator, lines: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """Corrupt about ``fraction`` of the lines in the ways real feeds go wrong; same line count."""
    n = len(lines)
    values = lines["value"].to_numpy(dtype=object).copy()
    chosen = np.flatnonzero(rng.random(n) < fraction)
    kinds = rng.integers(0, 7, size=len(chosen))
    for index, kind in zip(chosen, kinds):
        line = values[index]
        if kind == 0:  # truncated / malformed JSON
            values[index] = line[: int(rng.integers(1, max(len(line) - 1, 2)))]
        elif kind == 1:  # missing user id
            values[index] = line.replace('"user":', '"user_":', 1)
        elif kind == 2 and '"price":' in line:  # negative price
            values[index] = line.replace('"price":', '"price":-', 1)
        elif kind == 3:  # clock skew: decades ahead
            values[index] = line.replace('"ts":"20', '"ts":"21', 1)
        elif kind == 4:  # unknown event type
            values[index] = line.replace('"type":"', '"type":"x_', 1)
        elif kind == 5 and '"product":' in line:  # missing item id
            values[index] = line.replace('"product":', '"sku_":', 1)
        elif kind == 6 and index > 0:  # the previous event delivered twice
            values[index] = values[index - 1]
    # A re-delivered line lands with the original's date.
    landing = lines["dt"].to_numpy(dtype=object).copy()
    twice = chosen[(kinds == 6) & (chosen > 0)]
    landing[twice] = landing[twice - 1]
    return pd.DataFrame({"value": values, "dt": landing})


def generate_partition(cfg: GenerateConfig, cat: Catalogue, partition: int, n_lines: int) -> Iterator[pd.DataFrame]:
    """Yield chunks of exactly ``n_lines`` raw log lines for one generator partition."""
    rng = np.random.default_rng([cfg.seed, 1, partition])
    start = int(dt.datetime.fromisoformat(cfg.start_date).replace(tzinfo=dt.timezone.utc).timestamp())
    bot_share = 0.01 if cfg.bot_users > 0 else 0.0
    remaining = n_lines
    while remaining > 0:
        want = min(remaining, LINES_PER_CHUNK)
        n_bot = int(rng.binomial(want, bot_share))
        humans = _sessions(rng, cat, cfg, max(1, (want - n_bot) // 4 + 1), start)
        while len(humans) < want - n_bot:
            humans = pd.concat([humans, _sessions(rng, cat, cfg, max(1, (want - n_bot - len(humans)) // 3 + 1), start)])
        events = pd.concat([humans.iloc[: want - n_bot], _bot_events(rng, cat, cfg, n_bot, start)], ignore_index=True)
        yield _dirty(rng, _to_lines(rng, cat, events, start), cfg.dirty_fraction)
        remaining -= want


def generate_events(spark: SparkSession, cfg: GenerateConfig) -> DataFrame:
    """The synthetic raw log as a DataFrame of ``value`` (string, one JSON line) and ``dt`` (landing date string).

    Exactly ``cfg.events`` rows, produced by ``cfg.partitions`` parallel tasks.
    """
    cat = build_catalogue(cfg)
    parts = max(1, cfg.partitions)
    quotas = [cfg.events // parts + (1 if p < cfg.events % parts else 0) for p in range(parts)]

    def produce(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            for partition in batch["id"]:
                yield from generate_partition(cfg, cat, int(partition), quotas[int(partition)])

    return spark.range(0, parts, numPartitions=parts).mapInPandas(produce, "value string, dt string")


def write_events(events: DataFrame, out: str) -> None:
    """Write the raw log as gzipped JSON lines partitioned by landing date, replacing ``out``."""
    events.write.mode("overwrite").partitionBy("dt").option("compression", "gzip").text(out)
