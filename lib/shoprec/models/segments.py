"""Customer segments: KMeans on standardised profile features, with readable centroids."""

from __future__ import annotations

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.clustering import KMeans
from pyspark.ml.feature import StandardScaler, VectorAssembler
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shoprec import schemas as S

SEGMENT = "segment"
# Heavy-tailed counts are log-scaled before standardising so a few whales do not own a cluster each.
SEGMENT_FEATURES = ("recency_days", "frequency", "monetary", "n_view", "active_days", "sessions",
                    "events_per_session", "view_to_purchase")
LOG_SCALED = ("frequency", "monetary", "n_view", "active_days", "sessions", "events_per_session")


def _feature_frame(profiles: DataFrame) -> DataFrame:
    columns = []
    for name in SEGMENT_FEATURES:
        value = F.coalesce(F.col(name).cast("double"), F.lit(0.0))
        columns.append((F.log1p(F.greatest(value, F.lit(0.0))) if name in LOG_SCALED else value).alias(f"_f_{name}"))
    return profiles.select("*", *columns)


def fit_segments(profiles: DataFrame, k: int, seed: int) -> PipelineModel:
    """KMeans with ``k`` clusters on standardised (and, for counts, log-scaled) profile features."""
    S.require_columns(profiles, list(SEGMENT_FEATURES), "fit_segments")
    pipeline = Pipeline(stages=[
        VectorAssembler(inputCols=[f"_f_{n}" for n in SEGMENT_FEATURES], outputCol="_raw_features"),
        StandardScaler(inputCol="_raw_features", outputCol="_features", withMean=True, withStd=True),
        KMeans(featuresCol="_features", predictionCol=SEGMENT, k=k, seed=seed, maxIter=50),
    ])
    return pipeline.fit(_feature_frame(profiles))


def assign_segments(model: PipelineModel, profiles: DataFrame) -> DataFrame:
    """``profiles`` with an added ``segment int`` column."""
    assigned = model.transform(_feature_frame(profiles))
    return assigned.select(*profiles.columns, F.col(SEGMENT).cast("int").alias(SEGMENT))


def describe_segments(segmented: DataFrame) -> list[dict]:
    """Per segment: its size and the mean and median of each feature in original units (the
    centroid a marketer can read), ordered by segment id."""
    aggregates = [F.count(F.lit(1)).alias("users")]
    for name in SEGMENT_FEATURES:
        aggregates.append(F.round(F.avg(name), 3).alias(f"mean_{name}"))
        aggregates.append(F.round(F.percentile_approx(name, 0.5), 3).alias(f"median_{name}"))
    rows = segmented.groupBy(SEGMENT).agg(*aggregates).orderBy(SEGMENT).collect()
    return [row.asDict() for row in rows]
