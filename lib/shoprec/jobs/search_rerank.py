"""search_rerank: personal search results, text matches ordered for the user -> ``search_results``.

Run on a cluster (after score's inputs exist for the run date: build_profiles, train_als,
mine_rules, train_ranker)::

    spark-submit --master yarn --deploy-mode client \\
        --py-files dist/shoprec.zip --files conf/base.yaml,conf/cluster.yaml \\
        jobs/search_rerank.py --conf cluster.yaml --run-date 2026-01-07 [--searches s3a://.../searches/]

The searches are the ``search`` events of the last ``search.days`` days up to the run date in
``events_clean`` (each distinct user and query once: results ready for when they search again),
or any Parquet table with ``user_id`` and ``query`` columns given with ``--searches``. Each query
is matched to the catalogue by text (:mod:`shoprec.models.search`: IDF-weighted words of category
path, brand and title; ``search.min_match``, ``search.max_matches``), then the user's matches are
ordered by the newest search ranker trained on or before the run date (train_ranker trains it
on the searches of its label window and what the searchers then did: :func:`learned_order`), with
the same features as ``score`` (a match the user's candidate sources also proposed keeps those
sources' scores and ranks) plus the match's text score and text rank, when that search ranker
beat the text order on its validation searches; when it did not, the text order serves. Without a
search ranker (``search.learned`` off, or too few followed searches to train one), the matches are
scored by the newest ranker and ordered by the fusion of its order with the text order
(``search.ranker_weight``: 0 is the text order; :func:`fused_order`). The MLflow param
``args.search_model`` says which order served, and why. Writes ``search_results`` (run_date partition):
``user_id, query, rank, item_id, score, text_score`` with the top ``search.top_k`` per search.
Purchased items stay in search results: someone searching for them may rebuy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.config import Config
from shoprec.io.tables import read_snapshot, write_snapshot
from shoprec.jobs.build_profiles import events_as_of
from shoprec.jobs.build_training_set import SEARCH_TRAINING_SET
from shoprec.jobs.common import job_parser, run_main
from shoprec.jobs.score import inputs_as_of, latest_model, load_spec, score_with_model
from shoprec.jobs.train_ranker import SEARCH_VALIDATION
from shoprec.models import search as Q
from shoprec.models.ranker import features as X
from shoprec.spark import CacheScope
from shoprec.tracking import job_run

JOB = "search_rerank"
SEARCH_RESULTS = "search_results"

log = logging.getLogger(__name__)


def search_key(user: F.Column, query: F.Column) -> F.Column:
    """One id per (user, normalised query): the same words in any case and spacing are one search."""
    return F.sha2(F.concat_ws("\u0001", user, F.array_join(Q.words(query), " ")), 256)


def recent_searches(events: DataFrame, run_date: str, days: int) -> DataFrame:
    """The search events with a query of the last ``days`` days up to ``run_date``, each (user,
    query) once: the pairs to have results ready for when those users search again.

    Returns:
        ``search_id, user_id, query`` (the query as last typed).
    """
    first_day = (dt.date.fromisoformat(run_date) - dt.timedelta(days=days - 1)).isoformat()
    window = events.where((F.col(S.EVENT_TYPE) == "search")
                          & F.col(S.EVENT_DATE).between(F.lit(first_day).cast("date"), F.lit(run_date).cast("date"))
                          & (F.size(Q.words(F.col(S.QUERY))) > 0))
    keyed = window.withColumn(Q.SEARCH_ID, search_key(F.col(S.USER_ID), F.col(S.QUERY)))
    return keyed.groupBy(Q.SEARCH_ID, S.USER_ID).agg(F.max_by(S.QUERY, S.EVENT_TIME).alias(S.QUERY))


# Reciprocal rank fusion's damping constant (Cormack et al. 2009): a match's share from each order
# is weight / (RRF_K + its rank there), so no single first place outweighs agreement lower down.
RRF_K = 60


def searcher_candidates(cfg: Config, inputs: dict[str, DataFrame], matches: DataFrame) -> DataFrame:
    """The candidate sources' proposals for the users who searched (:func:`~shoprec.models.ranker.features.candidates`)."""
    users = matches.select(S.USER_ID).distinct()
    return X.candidates_from(users, inputs, inputs["als_recs"], cfg.ranker.seeds_per_user, cfg.ranker.candidates)


def score_matches(inputs: dict[str, DataFrame], matches: DataFrame, candidates: DataFrame, model_dir: str,
                  spec: dict) -> DataFrame:
    """Each match scored by the ranker for the user who searched.

    Args:
        inputs: as for :func:`~shoprec.jobs.score.rank_candidates`.
        matches: :func:`~shoprec.models.search.match_items` rows with ``user_id``.
        candidates: the searchers' :func:`searcher_candidates`.

    Returns:
        the columns of ``matches`` plus ``score double`` (the ranker's probability).
    """
    pairs = matches.select(S.USER_ID, S.ITEM_ID).distinct()
    features = pairs.join(candidates, [S.USER_ID, S.ITEM_ID], "left").withColumn(
        "n_sources", F.coalesce(F.col("n_sources"), F.lit(0)))
    examples = X.standardise(X.assemble(features, inputs["user_profile"], inputs["item_profile"],
                                        inputs["category_affinity"], inputs["brand_affinity"]),
                             {k: tuple(v) for k, v in spec["standardisation"].items()})
    scored = score_with_model(examples, model_dir, list(spec["categorical"])).select(S.USER_ID, S.ITEM_ID, "score")
    return matches.join(scored, [S.USER_ID, S.ITEM_ID])


def score_matches_for_search(inputs: dict[str, DataFrame], matches: DataFrame, candidates: DataFrame,
                             model_dir: str, spec: dict) -> DataFrame:
    """Each match scored by the search ranker (trained on searches and their follow-ups): the
    ranker's features of the (user, item) plus the match's ``text_score`` and ``text_rank``
    (:func:`~shoprec.models.ranker.features.search_features`).

    Args:
        inputs: as for :func:`score_matches`.
        matches: :func:`~shoprec.models.search.match_items` rows with ``search_id, user_id``.
        candidates: the searchers' :func:`searcher_candidates`.
        spec: the feature spec of the search ranker's training set.

    Returns:
        the columns of ``matches`` plus ``score double`` (the search ranker's probability).
    """
    features = X.search_features(matches, candidates, inputs["user_profile"], inputs["item_profile"],
                                 inputs["category_affinity"], inputs["brand_affinity"])
    examples = X.standardise(features, {k: tuple(v) for k, v in spec["standardisation"].items()})
    scored = score_with_model(examples, model_dir, list(spec["categorical"])).select(Q.SEARCH_ID, S.ITEM_ID, "score")
    return matches.join(scored, [Q.SEARCH_ID, S.ITEM_ID])


def learned_order(scored: DataFrame, top_k: int) -> DataFrame:
    """Each search's matches by the search ranker's score (ties: the text order).

    Returns:
        the columns of ``scored`` plus ``rank int`` (1..``top_k``).
    """
    order = Window.partitionBy(Q.SEARCH_ID).orderBy(F.col("score").desc(), F.col(Q.TEXT_RANK))
    return scored.withColumn("rank", F.row_number().over(order).cast("int")).where(F.col("rank") <= top_k)


def fused_order(scored: DataFrame, ranker_weight: float, top_k: int) -> DataFrame:
    """Each search's matches in the order that fuses the ranker's with the text order.

    A match's fused score is ``ranker_weight / (RRF_K + ranker rank) + (1 - ranker_weight) /
    (RRF_K + text_rank)``: 1.0 is the ranker's order (its score, then ``text_score``, then the text
    order), 0.0 the text order (``text_score``, then popularity). Ties go to the text order.

    Returns:
        the columns of ``scored`` plus ``rank int`` (1..``top_k``).
    """
    if not 0.0 <= ranker_weight <= 1.0:
        raise ValueError(f"search.ranker_weight must be within [0, 1], got {ranker_weight}")
    by_ranker = Window.partitionBy(Q.SEARCH_ID).orderBy(F.col("score").desc(), F.col(Q.TEXT_SCORE).desc(),
                                                        F.col(Q.TEXT_RANK))
    fused = (F.lit(ranker_weight) / (RRF_K + F.col("_ranker_rank"))
             + F.lit(1.0 - ranker_weight) / (RRF_K + F.col(Q.TEXT_RANK)))
    order = Window.partitionBy(Q.SEARCH_ID).orderBy(F.col("_fused").desc(), F.col(Q.TEXT_RANK))
    return (scored.withColumn("_ranker_rank", F.row_number().over(by_ranker)).withColumn("_fused", fused)
            .withColumn("rank", F.row_number().over(order).cast("int")).where(F.col("rank") <= top_k)
            .drop("_ranker_rank", "_fused"))


@dataclass(frozen=True)
class SearchOrder:
    """How search_rerank orders a day's matches: by a search ranker (``model``, its directory),
    else by :func:`fused_order` at ``ranker_weight`` (0.0: the text order); ``why`` is logged as
    the MLflow param ``args.search_model``."""

    model: Path | None
    ranker_weight: float
    why: str


def rerank(cfg: Config, inputs: dict[str, DataFrame], matches: DataFrame, model_dir: str, spec: dict,
           top_k: int, search_model: tuple[str, dict] | None, ranker_weight: float) -> DataFrame:
    """Order each search's matches for the user who searched: with a search ranker
    (``search_model``: its saved model and feature spec), :func:`score_matches_for_search` then
    :func:`learned_order`; without one, :func:`score_matches` with the ranker then
    :func:`fused_order` with ``ranker_weight`` (:class:`SearchOrder` says which).

    Returns:
        the columns of ``matches`` plus ``score double`` and ``rank int`` (1..``top_k``).
    """
    candidates = searcher_candidates(cfg, inputs, matches)
    if search_model is not None:
        return learned_order(score_matches_for_search(inputs, matches, candidates, *search_model), top_k)
    return fused_order(score_matches(inputs, matches, candidates, model_dir, spec), ranker_weight, top_k)


def search_order(cfg: Config, run_date: str) -> SearchOrder:
    """How to order ``run_date``'s matches: by the newest search ranker trained on or before it
    when it beat the text order on its validation searches (train_ranker's ``validation.json``);
    by the text order when it did not (the order it was measured against, and found better); by
    the fused order at ``search.ranker_weight`` when there is none or ``search.learned`` is off."""
    fused = cfg.search.ranker_weight
    if not cfg.search.learned:
        return SearchOrder(None, fused, "none: search.learned is off; the fused order")
    try:
        root = latest_model(cfg, run_date, "search_ranker")
    except FileNotFoundError:
        return SearchOrder(None, fused, "none: no search ranker trained; the fused order")
    verdict_path = root / SEARCH_VALIDATION
    # A model saved before its verdict was recorded is served, as it was then.
    verdict = json.loads(verdict_path.read_text()) if verdict_path.exists() else {"served": True}
    if not verdict["served"]:
        return SearchOrder(None, 0.0, (
            f"none: {root} scored below the text order on its validation searches (nDCG@10 "
            f"{verdict['best_val_ndcg']:.4f} against {verdict['reference_val_ndcg']:.4f}); the text order"))
    return SearchOrder(root, fused, str(root))


def read_searches(spark: SparkSession, path: str) -> DataFrame:
    """A Parquet table of searches: ``user_id`` and ``query`` (other columns are ignored)."""
    table = spark.read.parquet(path)
    S.require_columns(table, [S.USER_ID, S.QUERY], f"search_rerank --searches {path}")
    rows = table.select(F.col(S.USER_ID).cast("string").alias(S.USER_ID), F.col(S.QUERY).cast("string").alias(S.QUERY))
    rows = rows.where(F.col(S.USER_ID).isNotNull() & (F.size(Q.words(F.col(S.QUERY))) > 0))
    keyed = rows.withColumn(Q.SEARCH_ID, search_key(F.col(S.USER_ID), F.col(S.QUERY)))
    return keyed.groupBy(Q.SEARCH_ID, S.USER_ID).agg(F.min(S.QUERY).alias(S.QUERY))


def run(spark: SparkSession, cfg: Config, run_date: str, searches_path: str | None = None) -> dict:
    """Match and rerank the run date's (or the given) searches; write ``search_results``."""
    model_root = latest_model(cfg, run_date)
    spec = load_spec(cfg, model_root)
    order = search_order(cfg, run_date)
    search_root = order.model
    search_model = (str(search_root / "model"), load_spec(cfg, search_root, SEARCH_TRAINING_SET)) if search_root else None
    params = {"run_date": run_date, "model": str(model_root), "searches": searches_path or "events_clean",
              "search_model": order.why}
    with job_run(cfg, JOB, run_date, extra_params=params) as tracking, CacheScope() as scope:
        inputs = inputs_as_of(spark, cfg, run_date)
        searches = scope.cache(read_searches(spark, searches_path) if searches_path
                               else recent_searches(events_as_of(spark, cfg, run_date), run_date, cfg.search.days))
        # Cached: rerank reads the matches twice (the pairs to score, then the order), and each
        # read would match every query against the catalogue's words again.
        matches = scope.cache(Q.catalogue_matches(cfg, searches, inputs["item_profile"]))
        results = rerank(cfg, inputs, matches, str(Path(model_root) / "model"), spec, cfg.search.top_k, search_model,
                         order.ranker_weight)
        lineage = {"run_id": tracking.run_id, "job": JOB, "run_date": run_date,
                   "model": str(search_root if search_root else model_root)}
        write_snapshot(results.select(S.USER_ID, S.QUERY, "rank", S.ITEM_ID, "score", Q.TEXT_SCORE),
                       cfg.table_path(SEARCH_RESULTS), run_date, tracking.run_id, lineage)
        written = read_snapshot(spark, cfg.table_path(SEARCH_RESULTS), run_date)
        n_searches = searches.count()
        answered = written.select(S.USER_ID, S.QUERY).distinct().count()
        counts = {"searches": n_searches, "searches_with_results": answered,
                  "searches_without_match": n_searches - answered, "rows": written.count()}
        tracking.log_metrics(counts)
        log.info("search_rerank %s with %s: %s", run_date, model_root, counts)
        return counts


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``spark-submit jobs/search_rerank.py`` and ``shoprec run search_rerank``."""
    parser = job_parser(JOB, "Match searches to items by text and order the matches with the ranker per user.")
    parser.add_argument("--searches", help="Parquet table of user_id, query (default: the recent search events)")

    def execute(spark: SparkSession, cfg: Config, args: argparse.Namespace) -> None:
        print(f"search_rerank {args.run_date}: {run(spark, cfg, args.run_date, args.searches)}")

    return run_main(JOB, parser, execute, argv)
