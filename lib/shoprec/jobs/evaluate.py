"""evaluate: every recommender, trained only on what came before a held-out window, scored on it.

Run on a cluster::

    spark-submit --master yarn --deploy-mode client \\
        --py-files dist/shoprec.zip --files conf/base.yaml,conf/cluster.yaml \\
        jobs/evaluate.py --conf cluster.yaml --run-date 2026-01-07

The last ``evaluate.holdout_days`` days up to the run date are held out. Popularity, ALS,
association rules, content similarity and the whole pipeline (every candidate source ranked by a
ranker trained with Horovod, then the business rules of ``score``; and, as ``pipeline_uncapped``,
the same ranking without the category cap; and the search ranker, when the label window has
enough followed searches) are each rebuilt here from the
events before the cut-off (ALS tuned, and the ranker labelled, on windows carved out of those
events, never the held-out one),
asked for their top K for every user with history and a cart or purchase in the window, and
scored on those carts and purchases. Items the user bought before the cut-off are excluded, as
in production. Users with no history before the cut-off cannot be scored this way; they are
counted (``new_users_in_window``). Writes ``eval_metrics`` (run_date, model, metric, k, value) and logs the
comparison table and plots (metric bars, precision/recall against K) to MLflow, with the
seconds of each stage (``seconds_<stage>``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shutil

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.config import Config
from shoprec.etl import profiles as P
from shoprec.evaluation.compare import comparison_table, compare_recommenders, plot_metric_bars, plot_precision_recall
from shoprec.evaluation.holdout import exclusions, time_holdout
from shoprec.evaluation.ranking import ranking_metrics_at
from shoprec.io.staging import Staging, staging_root
from shoprec.io.tables import write_snapshot
from shoprec.jobs.build_profiles import events_as_of
from shoprec.jobs.build_training_set import FEATURE_SPEC, als_recs_for, features_before, write_training_set
from shoprec.jobs.common import job_parser, run_main
from shoprec.jobs.score import rank_candidates, ranked_recommendations
from shoprec.jobs.search_rerank import (fused_order, learned_order, score_matches, score_matches_for_search,
                                        searcher_candidates)
from shoprec.jobs.train_als import tune_on_holdout
from shoprec.jobs.train_ranker import search_verdict, settings_for, train_on_spark
from shoprec.models import als as A
from shoprec.models import rules as R
from shoprec.models import search as Q
from shoprec.models.content import content_features, content_similar_items, recommend_by_content
from shoprec.models.popularity import ALL, SCOPE, popular_items, recommend_popular
from shoprec.models.ranker.train import local_path
from shoprec.spark import CacheScope
from shoprec.tracking import StageClock, defined_metrics, job_run, write_report

JOB = "evaluate"
EVAL_METRICS = "eval_metrics"

log = logging.getLogger(__name__)


def backtest_recommendations(spark: SparkSession, cfg: Config, train_events: DataFrame,
                             train_interactions: DataFrame, users: DataFrame, cutoff: str, depth: int,
                             tracking, clock: StageClock, staging: Staging,
                             scope: CacheScope) -> tuple[dict[str, DataFrame], dict]:
    """Each recommender's top ``depth`` for ``users``, every one built from ``train_events`` only,
    and the backtest ranker (see :func:`backtest_pipeline`). Recommendations other than the
    pipeline's are lazy: their cost shows in the clock's ``compare`` stage. What they read more
    than once is cached in ``scope``, which must outlive them."""
    profiles = cfg.profiles
    as_of = dt.datetime.combine(dt.date.fromisoformat(cutoff), dt.time())
    excluded = exclusions(train_interactions, cfg.als.exclude)
    items = scope.cache(P.item_profile(train_events, as_of, profiles.windows_days, profiles.half_life_days))

    popular = popular_items(items, profiles.interaction_weights, depth + cfg.als.max_excluded)
    recs = {"popularity": recommend_popular(popular.where(F.col(SCOPE) == ALL), users, excluded, depth)}

    day_before = (dt.date.fromisoformat(cutoff) - dt.timedelta(days=1)).isoformat()
    best, _ = tune_on_holdout(spark, cfg, day_before, tracking, events=train_events)
    clock.lap("als_tuning")
    tracking.log_metrics({f"als_{k}": v for k, v in best.as_dict().items()})
    als = A.train_recommender(train_interactions, best, cfg.als.seed, A.solver_for(cfg.als), scope=scope,
                              search=A.search_for(cfg.als))
    recs["als"] = als.recommend(users, excluded, depth)

    baskets = scope.cache(R.purchase_baskets(train_events, cfg.rules.basket))
    support = R.effective_min_support(baskets.count(), cfg.rules.min_support, cfg.rules.min_basket_count)
    _, rules = R.mine_rules(baskets, support, cfg.rules.min_confidence)
    history = train_interactions.where((F.col("n_purchase") > 0) | (F.col("n_cart") > 0))
    recs["rules"] = R.recommend_from_rules(rules, history.join(users, S.USER_ID), excluded, depth)

    similar = content_similar_items(content_features(items, profiles.content_features), profiles.content_similar_k)
    recs["content"] = recommend_by_content(train_interactions.join(users, S.USER_ID), similar, excluded, depth)
    clock.lap("baselines")
    pipeline, ranker = backtest_pipeline(spark, cfg, train_events, users, cutoff, depth, tracking, clock, staging,
                                         scope)
    return {**recs, **pipeline}, ranker


def backtest_pipeline(spark: SparkSession, cfg: Config, train_events: DataFrame, users: DataFrame, cutoff: str,
                      depth: int, tracking, clock: StageClock, staging: Staging,
                      scope: CacheScope) -> tuple[dict[str, DataFrame], dict]:
    """The production pipeline (every candidate source, the ranker, the business rules) rebuilt
    from ``train_events`` only: the ranker learns from labels in the last ``ranker.label_days``
    before ``cutoff`` and features before those, then ranks candidates built from all of
    ``train_events``. Its training set and model go to ``ranker.models_root/backtest/<cutoff>``.

    Returns:
        The recommendations, ``pipeline`` (the business rules of ``score``) and
        ``pipeline_uncapped`` (the same without the category cap, ``score.max_per_category``: what
        the cap costs or gains), and the ranker with what it needs to score more pairs
        (``inputs``, ``model_path``, ``spec``).
    """
    root = f"{cfg.ranker.models_root.rstrip('/')}/backtest/{cutoff}"
    last_day = (dt.date.fromisoformat(cutoff) - dt.timedelta(days=1)).isoformat()
    training_set, search_training_set = f"{root}/training_set", f"{root}/search_training_set"
    counts, spec = write_training_set(spark, cfg, train_events, last_day, training_set, tracking.run_id,
                                      {"run_id": tracking.run_id, "job": JOB, "purpose": "backtest"},
                                      search_training_set)
    tracking.log_metrics({f"pipeline_{k}": v for k, v in counts.items()})
    clock.lap("pipeline_training_set")
    # A rerun trains afresh, never from old checkpoints.
    for model in ("ranker", "search_ranker"):
        shutil.rmtree(local_path(f"{root}/{model}"), ignore_errors=True)
    settings = [settings_for(cfg, last_day, None, False, training_set, f"{root}/ranker")]
    search_spec_path = local_path(f"{search_training_set}/{FEATURE_SPEC}")
    if search_spec_path.exists():  # build_training_set wrote search examples: the search ranker too
        settings.append(settings_for(cfg, last_day, None, False, search_training_set, f"{root}/search_ranker"))
    result, *searched = train_on_spark(cfg, *settings)
    tracking.log_metrics(defined_metrics({**{f"pipeline_{k}": result[k] for k in ("best_val_auc", "best_val_ndcg",
                                                                                 "best_epoch")},
                                          "pipeline_epochs": len(result["history"])}))
    search_model = None
    if searched:
        tracking.log_metrics(defined_metrics({
            **{f"search_ranker_{k}": searched[0][k]
               for k in ("best_val_auc", "best_val_ndcg", "reference_val_ndcg", "best_epoch")},
            # search_rerank's choice: the learned order (search_learned) only where it beat the text
            # order on the validation searches; the text order (search_text) otherwise.
            "search_ranker_served": int(search_verdict(searched[0])["served"])}))
        search_model = (searched[0]["model_path"], json.loads(search_spec_path.read_text()))
    clock.lap("pipeline_ranker")

    inputs = features_before(spark, cfg, train_events, cutoff, scope)
    # Built once, as production reads them from tables: the pipeline's ranking and the search
    # backtest both use them, and each use of a lazy one would build it again.
    for name in ("category_affinity", "brand_affinity", "popular", "bought_together", "similar_items",
                 "content_similar"):
        if inputs[name] is not None:
            inputs[name] = staging.keep(inputs[name], name)
    inputs["als_recs"] = als_candidates(cfg, inputs, users, staging, "als_recs")
    clock.lap("pipeline_features")
    # Staged: the plan behind it is deep enough to overflow the driver's stack when planned again,
    # and both orders below read it (the model's pass over the candidates is made once).
    scored = staging.keep(rank_candidates(cfg, inputs, users, result["model_path"], spec).select(
        S.USER_ID, S.ITEM_ID, S.CATEGORY, "score", "source", "reason"), "pipeline_scored")
    recs = {name: staging.keep(ranked_recommendations(cfg, inputs, scored, users, depth, cap).select(
                S.USER_ID, "rank", S.ITEM_ID, "score"), f"{name}_recommendations")
            for name, cap in (("pipeline", cfg.score.max_per_category), ("pipeline_uncapped", None))}
    clock.lap("pipeline_recommend")
    return recs, {"inputs": inputs, "model_path": result["model_path"], "spec": spec, "search_model": search_model}


def als_candidates(cfg: Config, inputs: dict[str, DataFrame], users: DataFrame, staging: Staging,
                   name: str) -> DataFrame:
    """The ALS candidates of ``users`` (as ``train_als`` writes them to ``als_recs``), built once
    and staged as ``name``."""
    return staging.keep(als_recs_for(cfg, inputs, users), name)


def backtest_search(cfg: Config, events: DataFrame, cutoff: str, ranker: dict, tracking,
                    staging: Staging) -> list[dict]:
    """search_rerank on the held-out window's searches that were followed by an item event: the
    backtest's search ranker's order (``search_learned``, when the backtest trained one: what
    search_rerank serves when that model beat the text order on its validation searches, metric
    ``search_ranker_served``; the text order otherwise) and the fused order (``search_ranker``:
    ``search.ranker_weight``, what it serves without a search ranker) against the text order alone
    (``search_text``: text score, then popularity) and the fused orders of
    ``evaluate.search_ranker_weights`` (``search_fused_<weight>``), each averaged over every such
    search (no match scores zero)."""
    settings = cfg.evaluate
    with CacheScope() as scope:
        searches, followups = Q.followed_searches(events, cutoff, cfg.search.followup_event_types)
        searches, followups = scope.cache(searches), scope.cache(followups)
        n_searches = searches.count()
        tracking.log_metrics({"held_out_searches": n_searches})
        if n_searches == 0:
            log.info("evaluate: no search in the held-out window was followed by an item event; search not evaluated")
            return []
        # Searchers need not be among the held-out users the pipeline's ALS candidates were built for.
        inputs = {**ranker["inputs"], "als_recs": als_candidates(cfg, ranker["inputs"],
                                                                 searches.select(S.USER_ID).distinct(),
                                                                 staging, "searchers_als_recs")}
        matches = scope.cache(Q.catalogue_matches(cfg, searches, inputs["item_profile"]))
        depth = max([settings.k, *settings.ks])
        # Cached: both rankers score the matches with the searchers' candidates.
        candidates = scope.cache(searcher_candidates(cfg, inputs, matches))
        # Scored once: every order below is a fusion of the same scores with the text order.
        scored = scope.cache(score_matches(inputs, matches, candidates, ranker["model_path"], ranker["spec"]))
        orders = {"search_text": matches.where(F.col(Q.TEXT_RANK) <= depth).withColumnRenamed(Q.TEXT_RANK, "rank")}
        if ranker["search_model"] is not None:
            orders["search_learned"] = learned_order(
                score_matches_for_search(inputs, matches, candidates, *ranker["search_model"]), depth)
        orders["search_ranker"] = fused_order(scored, cfg.search.ranker_weight, depth)
        orders.update({f"search_fused_{weight:g}": fused_order(scored, weight, depth)
                       for weight in settings.search_ranker_weights})
        rows = []
        for model, ranked in orders.items():
            # Cached: the metrics read it more than once, and the ranker's order costs a model pass.
            with CacheScope() as ranked_scope:
                ranked = ranked_scope.cache(ranked.select(Q.SEARCH_ID, S.ITEM_ID, "rank"))
                at = ranking_metrics_at(ranked, followups, [settings.k, *settings.ks], user_col=Q.SEARCH_ID,
                                        require_recommendations=False)
            rows += [{"model": model, "metric": m.split("@")[0], "k": k, "value": float(v)}
                     for k, metrics in at.items() for m, v in metrics.items() if "@" in m]
    return rows


def run(spark: SparkSession, cfg: Config, run_date: str) -> list[dict]:
    """Backtest every recommender on the held-out window; return the metric rows written."""
    settings = cfg.evaluate
    depth = max([settings.k, *settings.ks])
    with job_run(cfg, JOB, run_date, extra_params={"run_date": run_date}) as tracking, CacheScope() as scope:
        clock = StageClock()
        lineage = {"run_id": tracking.run_id, "job": JOB, "run_date": run_date}
        # One read of the events serves the hold-out, the new-user count and the search backtest.
        events = events_as_of(spark, cfg, run_date)
        holdout = time_holdout(events, run_date, settings.holdout_days,
                               settings.relevant_event_types, cfg.profiles.interaction_weights,
                               cfg.profiles.interaction_half_life_days)
        train_events = scope.cache(holdout.train_events)
        train_interactions = scope.cache(holdout.train_interactions)
        truth = scope.cache(holdout.truth)
        users = scope.cache(truth.select(S.USER_ID).distinct())
        n_users = users.count()
        tracking.set_tags({"shoprec.cutoff": holdout.cutoff})
        # Users whose first relevant event falls in the window have no history to learn from: the
        # popularity candidates serve them in production; here they are counted, not scored.
        window_users = (events
                        .where((F.col(S.EVENT_TIME) >= F.lit(holdout.cutoff).cast("timestamp"))
                               & F.col(S.EVENT_TYPE).isin(*settings.relevant_event_types))
                        .select(S.USER_ID).distinct())
        new_users = window_users.join(train_interactions.select(S.USER_ID).distinct(), S.USER_ID, "left_anti").count()
        tracking.log_metrics({"held_out_users": n_users, "new_users_in_window": new_users})
        clock.lap("holdout")
        if n_users == 0:
            raise ValueError(f"evaluate {run_date}: no user with history before {holdout.cutoff} has a "
                             f"{'/'.join(settings.relevant_event_types)} event in the held-out window")
        # The backtest's intermediate results, staged on shared storage (they outlive an executor).
        with Staging(spark, staging_root(cfg, JOB, run_date)) as staging:
            recs, ranker = backtest_recommendations(spark, cfg, train_events, train_interactions, users,
                                                    holdout.cutoff, depth, tracking, clock, staging, scope)
            catalogue = train_events.where(F.col(S.ITEM_ID).isNotNull()).groupBy(S.ITEM_ID).agg(
                F.max_by(S.CATEGORY, F.when(F.col(S.CATEGORY).isNotNull(), F.col(S.EVENT_TIME))).alias(S.CATEGORY))
            rows = compare_recommenders(recs, truth, train_interactions.select(S.USER_ID, S.ITEM_ID), catalogue,
                                        settings.k, settings.ks)
            clock.lap("compare")
            search_rows = backtest_search(cfg, events, holdout.cutoff, ranker, tracking, staging)
            clock.lap("search")
        table = spark.createDataFrame([(r["model"], r["metric"], r["k"], r["value"]) for r in rows + search_rows],
                                      "model string, metric string, k int, value double")
        write_snapshot(table, cfg.table_path(EVAL_METRICS), run_date, tracking.run_id, lineage)

        summary = comparison_table(rows, settings.k)
        write_report(tracking, {"cutoff": holdout.cutoff, "held_out_users": n_users, "new_users_in_window": new_users,
                                "comparison": summary, "search": comparison_table(search_rows, settings.k)},
                     "comparison")
        tracking.log_metrics({f"{r['model']}_{r['metric']}_at_{r['k']}": r["value"] for r in rows + search_rows})
        tracking.log_figure(plot_metric_bars(rows, settings.k), "metric_bars.png")
        tracking.log_figure(plot_precision_recall(rows), "precision_recall_at_k.png")
        clock.lap("report")
        tracking.log_metrics(clock.seconds)
        log.info("evaluate %s: stage seconds %s", run_date, clock.seconds)
        log.info("evaluate %s: cut-off %s, %d held-out users; %s", run_date, holdout.cutoff, n_users, summary)
        return rows + search_rows


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``spark-submit jobs/evaluate.py`` and ``shoprec run evaluate``."""
    parser = job_parser(JOB, "Backtest every recommender on a held-out window; write eval_metrics.")

    def execute(spark: SparkSession, cfg: Config, args: argparse.Namespace) -> None:
        rows = run(spark, cfg, args.run_date)
        for row in comparison_table(rows, cfg.evaluate.k):
            print(row)

    return run_main(JOB, parser, execute, argv)
