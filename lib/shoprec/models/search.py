"""Text matching of search queries to catalogue items, the first stage of personalised search.

An item is described by the words of its catalogue data: every level of its category path
(``electronics.audio.headphones`` gives ``electronics``, ``audio``, ``headphones``), its brand and,
where the source has them, title words. A query matches an item by the IDF-weighted share of the
query's words found in the item's words (``text_score`` in [0, 1]); rarer words weigh more, so
"sony headphones" prefers Sony headphones to any Sony item. The matches are then ordered per user
by the ranker (:func:`shoprec.jobs.search_rerank.rerank`).
"""

from __future__ import annotations

import math

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.config import Config
from shoprec.models.popularity import popularity_score

TOKEN = "token"
TEXT_SCORE = "text_score"
# A match's place in its search's text order (1 = the best text match).
TEXT_RANK = "text_rank"
SEARCH_ID = "search_id"
QUERY_KEY = "_query_key"   # the sorted distinct words of a query: its matches depend on nothing else


def words(text: Column) -> Column:
    """Lower-cased words of ``text`` (letters and digits; category separators and punctuation split
    words), without one-character words and without repeats."""
    parts = F.split(F.lower(F.coalesce(text, F.lit(""))), r"[^\p{L}\p{N}]+")
    return F.array_distinct(F.filter(parts, lambda w: F.length(w) > 1))


def item_words(items: DataFrame, title_col: str | None = None) -> DataFrame:
    """One row per (item, word) of each item's category path, brand and optional title.

    Returns:
        ``item_id string, token string``.
    """
    S.require_columns(items, [S.ITEM_ID, S.CATEGORY, S.BRAND] + ([title_col] if title_col else []), "item_words")
    text = F.concat_ws(" ", F.col(S.CATEGORY), F.col(S.BRAND), *([F.col(title_col)] if title_col else []))
    return (items.select(S.ITEM_ID, F.explode(words(text)).alias(TOKEN)).distinct())


def match_items(searches: DataFrame, items: DataFrame, min_match: float, max_matches: int,
                popularity: DataFrame | None = None) -> DataFrame:
    """Catalogue items matching each search's query.

    Args:
        searches: ``search_id, query`` rows (other columns are carried along).
        items: :func:`item_words` rows.
        min_match: an item matches when its ``text_score`` is at least ``min_match`` times the best
            ``text_score`` any item reaches for that search: 1.0 keeps only the best-matching items
            (every query word, when some item has them all), lower values admit partial matches.
        max_matches: at most this many matches per search: the best ``text_score`` first, then the
            most popular, then the smaller item id.
        popularity: optional ``item_id, score`` for ordering items of equal ``text_score``.

    Returns:
        the columns of ``searches`` plus ``item_id string, text_score double``; a search none of
        whose query words any item has gets no rows.
    """
    # The matches depend on the query's words only, not on who searched: each distinct set of words
    # is matched once and its matches joined back to every search with it. Users repeat the same
    # few queries, so the text join grows with the distinct queries, not with the searches.
    keyed = searches.withColumn(QUERY_KEY, F.array_join(F.array_sort(words(F.col(S.QUERY))), " "))
    queries = keyed.select(QUERY_KEY).where(F.col(QUERY_KEY) != "").distinct()
    n_items = items.select(S.ITEM_ID).distinct().count()
    idf = items.groupBy(TOKEN).agg((F.log(F.lit(float(n_items + 1)) / (F.count(F.lit(1)) + 1)) + 1).alias("_idf"))
    query_words = queries.select(QUERY_KEY, F.explode(F.split(QUERY_KEY, " ")).alias(TOKEN))
    # A query word no item has still counts in the query's weight, as the rarest word would.
    weighted = (query_words.join(F.broadcast(idf), TOKEN, "left")
                .withColumn("_idf", F.coalesce("_idf", F.lit(math.log(n_items + 1) + 1))))
    totals = weighted.groupBy(QUERY_KEY).agg(F.sum("_idf").alias("_total"))
    per_query = Window.partitionBy(QUERY_KEY)
    matched = (weighted.join(items, TOKEN).groupBy(QUERY_KEY, S.ITEM_ID).agg(F.sum("_idf").alias("_matched"))
               .join(totals, QUERY_KEY)
               .withColumn(TEXT_SCORE, F.col("_matched") / F.col("_total"))
               .withColumn("_best", F.max(TEXT_SCORE).over(per_query))
               .where(F.col(TEXT_SCORE) >= F.lit(float(min_match)) * F.col("_best") - 1e-9))
    if popularity is not None:
        matched = matched.join(popularity.select(S.ITEM_ID, F.col("score").alias("_popularity")), S.ITEM_ID, "left")
    else:
        matched = matched.withColumn("_popularity", F.lit(None).cast("double"))
    order = per_query.orderBy(F.col(TEXT_SCORE).desc(), F.col("_popularity").desc_nulls_last(), F.col(S.ITEM_ID))
    best = (matched.withColumn("_n", F.row_number().over(order)).where(F.col("_n") <= max_matches)
            .select(QUERY_KEY, S.ITEM_ID, TEXT_SCORE, F.col("_n").alias(TEXT_RANK)))
    return keyed.join(best, QUERY_KEY).drop(QUERY_KEY)


def catalogue_matches(cfg: Config, searches: DataFrame, item_profile: DataFrame) -> DataFrame:
    """:func:`match_items` against the words of ``item_profile``'s items (``search.min_match``,
    ``search.max_matches``), equal text scores ordered by popularity (scored as the popularity
    candidates are): the matches search_rerank answers a search with, which the search ranker's
    training set and evaluate rebuild the same way.

    Returns:
        as :func:`match_items`.
    """
    popularity = item_profile.select(S.ITEM_ID, popularity_score(cfg.profiles.interaction_weights).alias("score"))
    return match_items(searches, item_words(item_profile), cfg.search.min_match, cfg.search.max_matches, popularity)


def followed_searches(events: DataFrame, since: str, followup_types: list[str]) -> tuple[DataFrame, DataFrame]:
    """Searches from ``since`` on and what the searcher then did with items in the same session,
    up to the session's next search: the searches' relevant items, for labels and for evaluation.

    Returns:
        ``(searches, followups)``: ``search_id (the event id), user_id, query`` and
        ``search_id, item_id`` (only searches with at least one follow-up).
    """
    searches = events.where((F.col(S.EVENT_TYPE) == "search") & (F.col(S.EVENT_TIME) >= F.lit(since).cast("timestamp"))
                            & (F.size(words(F.col(S.QUERY))) > 0) & F.col(S.SESSION_ID).isNotNull())
    next_search = Window.partitionBy(S.USER_ID, S.SESSION_ID).orderBy(S.EVENT_TIME, S.EVENT_ID)
    searches = searches.select(F.col(S.EVENT_ID).alias(SEARCH_ID), S.USER_ID, S.QUERY, S.SESSION_ID,
                               F.col(S.EVENT_TIME).alias("_at"), F.lead(S.EVENT_TIME).over(next_search).alias("_until"))
    acted = events.where(F.col(S.EVENT_TYPE).isin(*followup_types) & F.col(S.ITEM_ID).isNotNull()).select(
        S.USER_ID, S.SESSION_ID, S.ITEM_ID, F.col(S.EVENT_TIME).alias("_t"))
    followups = (searches.join(acted, [S.USER_ID, S.SESSION_ID])
                 .where((F.col("_t") > F.col("_at")) & (F.col("_until").isNull() | (F.col("_t") < F.col("_until"))))
                 .select(SEARCH_ID, S.ITEM_ID).distinct())
    followed = searches.join(followups.select(SEARCH_ID).distinct(), SEARCH_ID).select(SEARCH_ID, S.USER_ID, S.QUERY)
    return followed, followups
