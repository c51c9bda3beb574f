"""train_als: tuned implicit ALS on ``interactions`` -> ``als_recs``, ``similar_items``, ``cold_start``.

Run on a cluster::

    spark-submit --master yarn --deploy-mode client \\
        --py-files dist/shoprec.zip --files conf/base.yaml,conf/cluster.yaml \\
        jobs/train_als.py --conf cluster.yaml --run-date 2026-01-07

1. Tuning: the last ``als.validation_days`` days up to the run date are held out. Every point of
   the grid (``als.ranks`` x ``als.reg_params`` x ``als.alphas``) is fitted on interactions built
   from the events before them and scored at K=10 against the users' carts and purchases in the
   window; each point is a nested MLflow run. The best by ``als.tuning_metric`` wins.
2. The winner is refitted on the run date's ``interactions`` snapshot (build_profiles), logged
   with the mlflow.spark flavour and registered as ``als.registered_model``.
3. Outputs, partitioned by run_date: ``als_recs`` (top ``als.top_k`` per user, minus
   ``als.exclude`` items), ``similar_items`` (cosine of item factors), ``als_index`` (the id <->
   factor-index maps the model needs) and ``cold_start`` — the users and items of the run date's
   profiles that ALS has no factors for, which the popularity and content candidates serve.
"""

from __future__ import annotations

import argparse
import logging

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.config import Config
from shoprec.evaluation.holdout import exclusions, time_holdout
from shoprec.io.tables import read_snapshot, write_snapshot
from shoprec.jobs.build_profiles import INTERACTIONS, ITEM_PROFILE, USER_PROFILE, events_as_of
from shoprec.jobs.common import job_parser, run_main
from shoprec.models import als as A
from shoprec.spark import CacheScope
from shoprec.tracking import JobRun, job_run, write_report

JOB = "train_als"
ALS_RECS = "als_recs"
SIMILAR_ITEMS = "similar_items"
ALS_INDEX = "als_index"
COLD_START = "cold_start"
TUNING_K = 10

log = logging.getLogger(__name__)


def cold_start_entities(profiles: DataFrame, known: DataFrame, id_col: str, entity: str) -> DataFrame:
    """The ids of ``profiles`` that ``known`` (the model's index) lacks.

    Returns:
        ``entity string ("user" or "item"), id string, reason string``.
    """
    missing = profiles.select(id_col).distinct().join(known.select(id_col), id_col, "left_anti")
    return missing.select(F.lit(entity).alias("entity"), F.col(id_col).alias("id"),
                          F.lit("no interactions in the ALS training data").alias("reason"))


def tune_on_holdout(spark: SparkSession, cfg: Config, run_date: str, tracking: JobRun,
                    events: DataFrame | None = None) -> tuple[A.AlsParams, list]:
    """Search the grid on the time-based validation window (the last ``als.validation_days`` up to
    ``run_date``); return the best point and all results.

    Args:
        events: the events to split (default: every clean event known on ``run_date``).
    """
    settings = cfg.als
    grid = A.param_grid(settings.ranks, settings.reg_params, settings.alphas, settings.max_iter)
    events = events_as_of(spark, cfg, run_date) if events is None else events
    holdout = time_holdout(events, run_date, settings.validation_days,
                           settings.relevant_event_types, cfg.profiles.interaction_weights,
                           cfg.profiles.interaction_half_life_days)
    with CacheScope() as scope:
        train = scope.cache(holdout.train_interactions)
        truth = scope.cache(holdout.truth)
        truth_users = truth.select(S.USER_ID).distinct().count()
        if len(grid) == 1 or truth_users == 0:
            log.warning("train_als %s: %s; using %s without tuning", run_date,
                        "one grid point" if len(grid) == 1 else "no held-out users with history", grid[0])
            return grid[0], []

        def record(params: A.AlsParams, metrics: dict[str, float]) -> None:
            name = f"als-rank{params.rank}-reg{params.reg_param}-alpha{params.alpha}"
            tracking.log_child_run(name, params.as_dict(), {k.replace("@", "_at_"): v for k, v in metrics.items()})
            log.info("train_als %s: %s -> %s", run_date, params, metrics)

        results = A.tune(train, truth, exclusions(train, settings.exclude), grid, TUNING_K, settings.seed,
                         A.solver_for(settings), on_trial=record, search=A.search_for(settings))
    best = A.best_params(results, f"{settings.tuning_metric}@{TUNING_K}")
    tracking.log_metrics({"validation_users": truth_users, "grid_points": len(grid)})
    return best, results


def log_model(recommender: A.AlsRecommender, cfg: Config, tracking: JobRun) -> str | None:
    """Log the fitted model with the mlflow.spark flavour and register a new version; the version."""
    if not tracking.tracked:
        return None
    import mlflow

    info = mlflow.spark.log_model(recommender.model, "als_model", registered_model_name=cfg.als.registered_model)
    return str(info.registered_model_version) if info.registered_model_version is not None else None


def run(spark: SparkSession, cfg: Config, run_date: str) -> dict[str, int]:
    """Tune, fit, recommend, log; return row counts per output table and the cold-start counts."""
    settings = cfg.als
    with job_run(cfg, JOB, run_date, extra_params={"run_date": run_date}) as tracking:
        lineage = {"run_id": tracking.run_id, "job": JOB, "run_date": run_date}
        interactions = read_snapshot(spark, cfg.table_path(INTERACTIONS), run_date).drop("run_date").cache()
        if interactions.limit(1).count() == 0:
            raise ValueError(f"{INTERACTIONS} for {run_date} is empty; nothing to train on")

        best, results = tune_on_holdout(spark, cfg, run_date, tracking)
        if results:
            write_report(tracking, {"best": best.as_dict(), "grid": [
                {**p.as_dict(), **{k: round(v, 5) for k, v in m.items()}} for p, m in results]}, "als_tuning")
            best_metrics = dict(results)[best]
            tracking.log_metrics({f"validation_{k.replace('@', '_at_')}": v for k, v in best_metrics.items()})
        tracking.log_metrics({f"best_{k}": v for k, v in best.as_dict().items()})

        recommender = A.train_recommender(interactions, best, settings.seed, A.solver_for(settings),
                                          search=A.search_for(settings))
        version = log_model(recommender, cfg, tracking)
        if version:
            tracking.set_tags({"shoprec.registered_model": f"{settings.registered_model}/{version}"})

        counts: dict[str, int] = {}

        def write(df: DataFrame, table: str) -> None:
            write_snapshot(df, cfg.table_path(table), run_date, tracking.run_id, lineage)
            counts[table] = read_snapshot(spark, cfg.table_path(table), run_date).count()

        index = recommender.users.select(F.lit("user").alias("entity"), F.col(S.USER_ID).alias("id"),
                                         F.col(A.USER_INDEX).alias("factor_index")).unionByName(
            recommender.items.select(F.lit("item").alias("entity"), F.col(S.ITEM_ID).alias("id"),
                                     F.col(A.ITEM_INDEX).alias("factor_index")))
        write(index, ALS_INDEX)
        excluded = exclusions(interactions, settings.exclude)
        recs = recommender.recommend(interactions.select(S.USER_ID), excluded, settings.top_k)
        write(recs, ALS_RECS)
        recall = A.search_recall(recommender, interactions, excluded, settings.top_k, settings.ivf_recall_users,
                                 settings.seed)
        if recall is not None:
            # What the approximate search costs in accuracy, on this run's own factors.
            tracking.log_metrics({"ivf_recall_at_k": recall})
            log.info("train_als %s: the IVF search finds %.4f of the exact top-%d (%d users sampled)",
                     run_date, recall, settings.top_k, settings.ivf_recall_users)
        write(recommender.similar_items(settings.similar_k), SIMILAR_ITEMS)

        users = read_snapshot(spark, cfg.table_path(USER_PROFILE), run_date)
        items = read_snapshot(spark, cfg.table_path(ITEM_PROFILE), run_date)
        cold = cold_start_entities(users, recommender.users, S.USER_ID, "user").unionByName(
            cold_start_entities(items, recommender.items, S.ITEM_ID, "item"))
        write(cold, COLD_START)
        cold_counts = {r["entity"]: r["count"] for r in
                       read_snapshot(spark, cfg.table_path(COLD_START), run_date).groupBy("entity").count().collect()}
        counts["cold_start_users"] = int(cold_counts.get("user", 0))
        counts["cold_start_items"] = int(cold_counts.get("item", 0))
        counts["users_without_full_recs"] = (read_snapshot(spark, cfg.table_path(ALS_RECS), run_date)
                                             .groupBy(S.USER_ID).count().where(F.col("count") < settings.top_k).count())
        interactions.unpersist()
        tracking.log_metrics({f"rows_{k}" if k in (ALS_INDEX, ALS_RECS, SIMILAR_ITEMS, COLD_START) else k: v
                              for k, v in counts.items()})
        log.info("train_als %s: best %s; %s", run_date, best, counts)
        return counts


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``spark-submit jobs/train_als.py`` and ``shoprec run train_als``."""
    parser = job_parser(JOB, "Tune and train implicit ALS; write als_recs, similar_items and cold_start.")

    def execute(spark: SparkSession, cfg: Config, args: argparse.Namespace) -> None:
        counts = run(spark, cfg, args.run_date)
        print(f"train_als {args.run_date}: {counts}")

    return run_main(JOB, parser, execute, argv)
