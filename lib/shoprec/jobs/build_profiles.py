"""build_profiles: ``events_clean`` -> interactions, user and item profiles, cold-start candidates.

Run on a cluster::

    spark-submit --master yarn --deploy-mode client \\
        --py-files dist/shoprec.zip --files conf/base.yaml,conf/cluster.yaml \\
        jobs/build_profiles.py --conf cluster.yaml --run-date 2026-01-07

Every table is a snapshot partitioned by ``run_date``; a rerun replaces that date's partition.
The run date's view of the data is the events of ingest batches up to and including it.

* ``interactions`` is **incremental**: the newest earlier snapshot is decayed to this run's as-of
  time and the events of the batches ingested since are added (exact for exponential decay).
  With no earlier snapshot, or with ``--full-rebuild``, it is computed from every event. Run a
  full rebuild after re-cleaning (backfilling) batches older than the previous snapshot.
* ``user_profile``, ``item_profile``, ``popular_items`` and ``content_similar_items`` are
  **recomputed** each run from the last ``profiles.history_days`` days of events.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.config import Config
from shoprec.etl import profiles as P
from shoprec.io.tables import read_snapshot, read_table, snapshot_dates, write_snapshot
from shoprec.jobs.common import job_parser, run_main
from shoprec.models.content import content_features, content_similar_items
from shoprec.models.popularity import popular_items
from shoprec.models.segments import assign_segments, describe_segments, fit_segments
from shoprec.tracking import job_run, write_report

JOB = "build_profiles"
EVENTS_TABLE = "events_clean"
INTERACTIONS = "interactions"
USER_PROFILE = "user_profile"
ITEM_PROFILE = "item_profile"
POPULAR_ITEMS = "popular_items"
CONTENT_SIMILAR = "content_similar_items"

log = logging.getLogger(__name__)


def events_as_of(spark: SparkSession, cfg: Config, run_date: str, first_date: str | None = None) -> DataFrame:
    """Clean events known on ``run_date``: ingested in batches up to it and dated up to it
    (from ``first_date`` on, if given)."""
    events = read_table(spark, cfg.table_path(EVENTS_TABLE), S.EVENTS_CLEAN)
    known = (F.col(S.INGEST_BATCH) <= F.lit(run_date).cast("date")) & (F.col(S.EVENT_DATE) <= F.lit(run_date).cast("date"))
    if first_date is not None:
        known &= F.col(S.EVENT_DATE) >= F.lit(first_date).cast("date")
    return events.where(known)


def history_start(run_date: str, days: int) -> str:
    """The first day of a ``days``-long window ending on ``run_date``."""
    return (dt.date.fromisoformat(run_date) - dt.timedelta(days=days - 1)).isoformat()


def updated_interactions(spark: SparkSession, cfg: Config, run_date: str, full_rebuild: bool) -> tuple[DataFrame, str]:
    """The interactions snapshot for ``run_date`` and how it was made (``"full"`` or
    ``"incremental from <date>"``)."""
    settings = cfg.profiles
    as_of = P.as_of_time(run_date)
    path = cfg.table_path(INTERACTIONS)
    earlier = [d for d in snapshot_dates(spark, path) if d < run_date]
    events = read_table(spark, cfg.table_path(EVENTS_TABLE), S.EVENTS_CLEAN).where(
        F.col(S.INGEST_BATCH) <= F.lit(run_date).cast("date"))
    if full_rebuild or not earlier:
        fresh = P.build_interactions(events, settings.interaction_weights, settings.interaction_half_life_days, as_of)
        return fresh.where(F.col(P.CONFIDENCE) >= settings.min_confidence), "full"
    previous_date = earlier[-1]
    previous = read_snapshot(spark, path, previous_date).drop("run_date")
    # Every event is in exactly one ingest batch, so the batches since the previous snapshot are exactly what it lacks.
    new_events = events.where(F.col(S.INGEST_BATCH) > F.lit(previous_date).cast("date"))
    new = P.build_interactions(new_events, settings.interaction_weights, settings.interaction_half_life_days, as_of)
    merged = P.merge_interactions(previous, P.as_of_time(previous_date), new, as_of,
                                  settings.interaction_half_life_days, settings.min_confidence)
    return merged, f"incremental from {previous_date}"


def run(spark: SparkSession, cfg: Config, run_date: str, full_rebuild: bool = False) -> dict[str, int]:
    """Build every profile table for ``run_date``; return row counts per table."""
    settings = cfg.profiles
    as_of = P.as_of_time(run_date)
    with job_run(cfg, JOB, run_date, extra_params={"run_date": run_date, "full_rebuild": full_rebuild}) as tracking:
        lineage = {"run_id": tracking.run_id, "job": JOB, "run_date": run_date}
        counts: dict[str, int] = {}

        def write(df: DataFrame, table: str) -> DataFrame:
            write_snapshot(df, cfg.table_path(table), run_date, tracking.run_id, lineage)
            written = read_snapshot(spark, cfg.table_path(table), run_date)
            counts[table] = written.count()
            return written

        window = events_as_of(spark, cfg, run_date, history_start(run_date, settings.history_days))
        if window.limit(1).count() == 0:
            raise ValueError(f"{EVENTS_TABLE} holds no events for the {settings.history_days} days up to {run_date}; "
                             "run clean_events first")

        interactions, mode = updated_interactions(spark, cfg, run_date, full_rebuild)
        tracking.set_tags({"shoprec.interactions_mode": mode})
        write(interactions, INTERACTIONS)

        profiles = P.user_profile(window, as_of, settings.top_n, settings.price_bands).cache()
        n_users = profiles.count()
        k = min(settings.segments, n_users)
        segment_model = fit_segments(profiles, k, settings.seed)
        segmented = assign_segments(segment_model, profiles)
        written_users = write(segmented, USER_PROFILE)
        profiles.unpersist()
        segment_table = describe_segments(written_users)
        write_report(tracking, {"k": k, "segments": segment_table}, "segments")
        tracking.log_dict({"centroids_standardised": [c.tolist() for c in segment_model.stages[-1].clusterCenters()]},
                          "segment_centroids.json")

        items = P.item_profile(window, as_of, settings.windows_days, settings.half_life_days)
        tokens = P.content_tokens(F.col(S.CATEGORY), F.col(S.BRAND)).alias("content_tokens")
        written_items = write(items.select("*", tokens), ITEM_PROFILE).cache()
        write(popular_items(written_items, settings.interaction_weights, settings.popular_k), POPULAR_ITEMS)
        features = content_features(written_items, settings.content_features)
        write(content_similar_items(features, settings.content_similar_k), CONTENT_SIMILAR)
        written_items.unpersist()

        tracking.log_metrics({f"rows_{table}": rows for table, rows in counts.items()} | {"segments_k": k})
        log.info("build_profiles %s (interactions %s): %s", run_date, mode, counts)
        return counts


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``spark-submit jobs/build_profiles.py`` and ``shoprec run build_profiles``."""
    parser = job_parser(JOB, "Build interactions, user/item profiles, popular and content-similar items.")
    parser.add_argument("--full-rebuild", action="store_true",
                        help="recompute interactions from every event instead of rolling the last snapshot forward")

    def execute(spark: SparkSession, cfg: Config, args: argparse.Namespace) -> None:
        counts = run(spark, cfg, args.run_date, full_rebuild=args.full_rebuild)
        print(f"build_profiles {args.run_date}: {counts}")

    return run_main(JOB, parser, execute, argv)
