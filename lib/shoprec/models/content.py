"""Content-based item features (TF-IDF of hashed catalogue words) and similar items from them.

They serve items nobody has interacted with yet: a new item's category and brand are known from
its first view, so it gets neighbours long before ALS has factors for it.
"""

from __future__ import annotations

from pyspark.ml.feature import HashingTF, IDF
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.etl.profiles import content_tokens
from shoprec.models.als import index_ids
from shoprec.models.neighbours import SCORE, SIMILAR_INDEX, nearest_neighbours

CONTENT_FEATURES = "content_features"
TOKENS = "content_tokens"
SIMILAR_ITEM_ID = "similar_item_id"


def content_features(items: DataFrame, num_features: int, title_col: str | None = None) -> DataFrame:
    """TF-IDF vectors of each item's catalogue words (:func:`~shoprec.etl.profiles.content_tokens`),
    hashed into ``num_features`` dimensions.

    Args:
        items: one row per item with ``item_id``, ``category``, ``brand`` (and ``title_col`` if given).

    Returns:
        ``item_id string, content_tokens array<string>, content_features array<float>``.
    """
    S.require_columns(items, [S.ITEM_ID, S.CATEGORY, S.BRAND] + ([title_col] if title_col else []), "content_features")
    title = F.col(title_col) if title_col else None
    tokens = items.select(S.ITEM_ID, content_tokens(F.col(S.CATEGORY), F.col(S.BRAND), title).alias(TOKENS))
    hashed = HashingTF(inputCol=TOKENS, outputCol="_tf", numFeatures=num_features).transform(tokens)
    weighted = IDF(inputCol="_tf", outputCol="_tfidf").fit(hashed).transform(hashed)
    return weighted.select(S.ITEM_ID, TOKENS, vector_to_array("_tfidf", "float32").alias(CONTENT_FEATURES))


def content_similar_items(features: DataFrame, k: int) -> DataFrame:
    """Each item's ``k`` nearest items by cosine similarity of content features.

    Items without any catalogue words have no neighbours (their vector is zero).

    Returns:
        ``item_id string, rank int, similar_item_id string, score double``.
    """
    S.require_columns(features, [S.ITEM_ID, CONTENT_FEATURES], "content_similar_items")
    described = features.where(F.size(TOKENS) > 0) if TOKENS in features.columns else features
    index = index_ids(described, S.ITEM_ID, "id").cache()
    vectors = described.join(index, S.ITEM_ID).select("id", F.col(CONTENT_FEATURES).alias("features"))
    neighbours = nearest_neighbours(vectors, k).where(F.col(SCORE) > 0)
    similar = index.select(F.col("id").alias(SIMILAR_INDEX), F.col(S.ITEM_ID).alias(SIMILAR_ITEM_ID))
    return (neighbours.join(index, "id").join(similar, SIMILAR_INDEX)
            .select(S.ITEM_ID, "rank", SIMILAR_ITEM_ID, SCORE))


def recommend_by_content(interactions: DataFrame, similar: DataFrame, exclude: DataFrame | None, k: int,
                         seeds_per_user: int = 5) -> DataFrame:
    """Items like the ones a user cares most about: each of the user's ``seeds_per_user`` strongest
    interactions (by confidence) votes for its similar items with ``confidence x similarity``.

    Args:
        interactions: ``(user_id, item_id, confidence)``.
        similar: ``(item_id, similar_item_id, score)``, from :func:`content_similar_items` or ALS.
        exclude: ``(user_id, item_id)`` pairs not to recommend.

    Returns:
        ``user_id, rank int, item_id, score double``.
    """
    from pyspark.sql import Window

    strongest = Window.partitionBy(S.USER_ID).orderBy(F.col("confidence").desc(), F.col(S.ITEM_ID))
    seeds = (interactions.withColumn("_seed_rank", F.row_number().over(strongest))
             .where(F.col("_seed_rank") <= seeds_per_user).select(S.USER_ID, S.ITEM_ID, "confidence"))
    votes = seeds.join(similar.select(S.ITEM_ID, SIMILAR_ITEM_ID, F.col(SCORE).alias("_similarity")), S.ITEM_ID)
    scored = (votes.groupBy(S.USER_ID, F.col(SIMILAR_ITEM_ID).alias("_candidate"))
              .agg(F.sum(F.col("confidence") * F.col("_similarity")).alias(SCORE))
              .withColumnRenamed("_candidate", S.ITEM_ID))
    if exclude is not None:
        scored = scored.join(exclude.select(S.USER_ID, S.ITEM_ID).distinct(), [S.USER_ID, S.ITEM_ID], "left_anti")
    # A user's own seed items are not news to them.
    scored = scored.join(seeds.select(S.USER_ID, S.ITEM_ID), [S.USER_ID, S.ITEM_ID], "left_anti")
    order = Window.partitionBy(S.USER_ID).orderBy(F.col(SCORE).desc(), F.col(S.ITEM_ID))
    return (scored.withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= k)
            .select(S.USER_ID, "rank", S.ITEM_ID, SCORE))
