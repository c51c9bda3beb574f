"""build_training_set: candidates with features and labels, sharded for Horovod workers.

Run on a cluster::

    spark-submit --master yarn --deploy-mode client \\
        --py-files dist/shoprec.zip --files conf/base.yaml,conf/cluster.yaml \\
        jobs/build_training_set.py --conf cluster.yaml --run-date 2026-01-07

The last ``ranker.label_days`` days up to the run date are the label window. Everything the
examples are made of — interactions, profiles, segments, category and brand affinities, and every
candidate source (ALS, bought-together rules, ALS-similar and content-similar items, popularity)
— is rebuilt here from the events *before* the window, so no feature sees a label. For each user
with history who carted or bought something in the window, the candidates (up to
``ranker.candidates[source]`` per source) plus ``ranker.negatives_per_user`` random catalogue
items are labelled 1 if the user then carted/bought them, else 0.

Output: ``training_set/run_date=D/split=train/shard=K`` (K < ``ranker.workers``, one per Horovod
worker, whole users per shard) and ``split=validation`` (``ranker.validation_percent`` of users),
each row ``user_id, item_id, <categorical buckets>, dense array<float>, label``, plus
``_feature_spec.json`` beside them (feature order, hash buckets, standardisation statistics,
cut-off) which training and scoring read.

The search ranker's examples (``search.learned``): every search of the label window that the
searcher followed with an item event in its session (``search.followup_event_types``, before the
session's next search), its text matches against the catalogue before the window (as
search_rerank finds them), with the same features plus ``text_score`` and ``text_rank``, labelled
1 for the items acted on. Written the same way to ``search_training_set/run_date=D``, with
``search.validation_percent`` of the searchers held out for validation (spec
``group: search_id``, and ``reference_order: text_rank``: the order without a model, which
training scores on the validation searches too), unless the window holds fewer than
``search.min_searches`` such searches.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
from typing import NamedTuple

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.config import Config
from shoprec.etl import profiles as P
from shoprec.evaluation.holdout import cutoff_date, exclusions, time_holdout
from shoprec.io.fs import HadoopFS
from shoprec.io.staging import Staging, staging_root
from shoprec.io.tables import write_partitions
from shoprec.jobs.build_profiles import events_as_of
from shoprec.jobs.common import job_parser, run_main
from shoprec.models import als as A
from shoprec.models import rules as R
from shoprec.models.content import content_features, content_similar_items
from shoprec.models import search as Q
from shoprec.models.popularity import ALL, SCOPE, popular_items
from shoprec.models.ranker import features as X
from shoprec.models.segments import assign_segments, fit_segments
from shoprec.spark import CacheScope
from shoprec.tracking import job_run

JOB = "build_training_set"
TRAINING_SET = "training_set"
SEARCH_TRAINING_SET = "search_training_set"
FEATURE_SPEC = "_feature_spec.json"

log = logging.getLogger(__name__)


def features_before(spark: SparkSession, cfg: Config, before: DataFrame, cutoff: str,
                    scope: CacheScope) -> dict[str, DataFrame]:
    """Every input of the examples, built from ``before`` (the events before ``cutoff``) only;
    the ones read many times (interactions, profiles, baskets) cached in ``scope``."""
    profiles, ranker = cfg.profiles, cfg.ranker
    as_of = dt.datetime.combine(dt.date.fromisoformat(cutoff), dt.time())
    first_day = (dt.date.fromisoformat(cutoff) - dt.timedelta(days=profiles.history_days)).isoformat()
    window = before.where(F.col(S.EVENT_DATE) >= F.lit(first_day).cast("date"))
    interactions = scope.cache(P.build_interactions(before, profiles.interaction_weights,
                                                    profiles.interaction_half_life_days, as_of)
                               .where(F.col(P.CONFIDENCE) >= profiles.min_confidence))
    users = scope.cache(P.user_profile(window, as_of, profiles.top_n, profiles.price_bands))
    users = assign_segments(fit_segments(users, min(profiles.segments, max(users.count(), 1)), profiles.seed), users)
    items = scope.cache(P.item_profile(window, as_of, profiles.windows_days, profiles.half_life_days))

    params = A.AlsParams(ranker.als_rank, ranker.als_reg_param, ranker.als_alpha, cfg.als.max_iter)
    als = A.train_recommender(interactions, params, cfg.als.seed, A.solver_for(cfg.als), scope=scope,
                              search=A.search_for(cfg.als))
    limits = ranker.candidates
    by_category, by_brand = X.affinities(window, as_of)
    inputs = {
        "interactions": interactions, "user_profile": users, "item_profile": items, "als": als,
        "category_affinity": by_category, "brand_affinity": by_brand,
        # The fill list of the business rules: always there, whatever the popular candidates' limit.
        "popular": popular_items(items, profiles.interaction_weights,
                                 max(limits.get("popular", 0), 1)).where(F.col(SCOPE) == ALL),
        # Sources switched off (limit 0) are not built: a source without the data for them (no
        # baskets, no catalogue words) then costs nothing.
        "bought_together": None, "similar_items": None, "content_similar": None,
    }
    if limits.get("rules"):
        baskets = scope.cache(R.purchase_baskets(before, cfg.rules.basket))
        support = R.effective_min_support(baskets.count(), cfg.rules.min_support, cfg.rules.min_basket_count)
        _, rules = R.mine_rules(baskets, support, cfg.rules.min_confidence)
        inputs["bought_together"] = R.bought_together(rules, limits["rules"])
    if limits.get("similar"):
        inputs["similar_items"] = als.similar_items(limits["similar"])
    if limits.get("content"):
        inputs["content_similar"] = content_similar_items(content_features(items, profiles.content_features),
                                                          limits["content"])
    return inputs


class SearchLabels(NamedTuple):
    """The label window's searches that their searchers followed up (``search_id, user_id,
    query``), the items they then acted on (``search_id, item_id``), and where the search ranker's
    examples go."""

    searches: DataFrame
    followups: DataFrame
    path: str


def als_candidate_count(cfg: Config) -> int:
    """How many ALS recommendations to ask for per user: ``ranker.candidates.als``, but at least
    one, since ALS refuses a count of zero (a zero limit then drops the source in ``candidates``)."""
    return max(cfg.ranker.candidates.get("als", 0), 1)


def als_recs_for(cfg: Config, inputs: dict[str, DataFrame], users: DataFrame) -> DataFrame:
    """The ALS candidates of ``users`` from the model in ``inputs`` (fitted on the events before
    the cut-off), as train_als writes them to ``als_recs``: :func:`als_candidate_count` per user,
    without the items ``als.exclude`` leaves out.

    Returns:
        ``user_id string, rank int, item_id string, score double``.
    """
    return inputs["als"].recommend(users, exclusions(inputs["interactions"], cfg.als.exclude), als_candidate_count(cfg))


def examples_for(cfg: Config, inputs: dict[str, DataFrame], users: DataFrame, truth: DataFrame | None) -> DataFrame:
    """Candidates (plus sampled negatives) for ``users`` with raw features, labelled from ``truth``."""
    ranker = cfg.ranker
    cands = X.candidates_from(users, inputs, als_recs_for(cfg, inputs, users), ranker.seeds_per_user,
                              ranker.candidates)
    negatives = X.sampled_negatives(users, inputs["item_profile"].select(S.ITEM_ID), ranker.negatives_per_user,
                                    ranker.seed)
    if negatives is not None:
        cands = cands.unionByName(negatives.join(cands.select(S.USER_ID, S.ITEM_ID), [S.USER_ID, S.ITEM_ID], "left_anti"))
    excluded = exclusions(inputs["interactions"], cfg.als.exclude)
    if excluded is not None:
        cands = cands.join(excluded, [S.USER_ID, S.ITEM_ID], "left_anti")
    examples = X.assemble(cands, inputs["user_profile"], inputs["item_profile"], inputs["category_affinity"],
                          inputs["brand_affinity"])
    return X.with_labels(examples, truth) if truth is not None else examples


def write_training_set(spark: SparkSession, cfg: Config, events: DataFrame, last_day: str, path: str,
                       run_id: str | None, lineage: dict, search_path: str | None = None) -> tuple[dict, dict]:
    """Label the last ``ranker.label_days`` days up to ``last_day`` of ``events``, build the examples
    from the events before them, and write the shards and the feature spec under ``path``; with
    ``search_path`` (and ``search.learned``), the search ranker's examples too
    (:func:`write_search_examples`).

    Returns:
        The counts (positives/negatives per split, users, reachable positives; ``search_*`` for the
        search examples) and the feature spec.
    """
    ranker = cfg.ranker
    cutoff = cutoff_date(last_day, ranker.label_days)
    holdout = time_holdout(events, last_day, ranker.label_days, ranker.relevant_event_types,
                           cfg.profiles.interaction_weights, cfg.profiles.interaction_half_life_days)
    searches = None
    if search_path and cfg.search.learned:
        searches = SearchLabels(*Q.followed_searches(events, cutoff, cfg.search.followup_event_types), search_path)
    return write_examples(spark, cfg, holdout.train_events, holdout.truth, cutoff, path, run_id, lineage,
                          {"run_date": last_day}, searches)


def write_examples(spark: SparkSession, cfg: Config, before: DataFrame, truth: DataFrame, cutoff: str, path: str,
                   run_id: str | None, lineage: dict, spec_fields: dict | None = None,
                   searches: SearchLabels | None = None) -> tuple[dict, dict]:
    """Examples for the users in ``truth``, with features from ``before`` (the events before
    ``cutoff``) and labels from ``truth`` (``user_id, item_id`` pairs), written as Horovod shards
    and a validation split under ``path`` with the feature spec (plus ``spec_fields``); with
    ``searches``, the search ranker's examples from the same features
    (:func:`write_search_examples`). The counts and the spec."""
    ranker = cfg.ranker
    with CacheScope() as scope, Staging(spark, staging_root(cfg, "training_examples", path)) as staging:
        truth = scope.cache(truth)
        users = scope.cache(truth.select(S.USER_ID).distinct())
        if users.count() == 0:
            raise ValueError(f"training set with cut-off {cutoff}: no user with history before it has a label "
                             f"({'/'.join(ranker.relevant_event_types)} event in the label window)")
        inputs = features_before(spark, cfg, before, cutoff, scope)
        # Staged with its lineage cut: the plan behind it (five candidate sources, profiles, ALS,
        # FP-Growth) is deep enough to overflow the driver's stack when planned again, and it is
        # read four times below.
        examples = staging.keep(X.assign_shards(examples_for(cfg, inputs, users, truth), ranker.workers,
                                                ranker.validation_percent, ranker.seed), "examples")
        stats = X.standardisation(examples.where(F.col("split") == "train"))
        columns = [S.USER_ID, S.ITEM_ID, *X.CATEGORICAL, "dense", X.LABEL, "split", "shard"]
        shards = X.standardise(examples, stats).select(*columns)
        write_partitions(shards.repartition("split", "shard"), path, ["split", "shard"],
                         {"split": ["train", "validation"]}, run_id, {**lineage, "cutoff": cutoff})
        categorical = {name: buckets for name, buckets in X.CATEGORICAL.items()
                       if ranker.id_embeddings or name not in X.ID_BUCKETS}
        spec = {**(spec_fields or {}), "cutoff": cutoff, "categorical": categorical, "dense": X.dense_features(),
                "standardisation": stats, "workers": ranker.workers, "run_id": run_id}
        HadoopFS(spark).write_text(f"{path}/{FEATURE_SPEC}", json.dumps(spec, indent=1))

        counts = {f"{r['split']}_{'positive' if r[X.LABEL] else 'negative'}": r["count"]
                  for r in examples.groupBy("split", X.LABEL).count().collect()}
        counts["users"] = users.count()
        counts["candidates_with_label_1"] = examples.where((F.col(X.LABEL) == 1) & (F.col("n_sources") > 0)).count()
        counts["positives_reachable_share"] = counts["candidates_with_label_1"] / max(truth.count(), 1)
        if searches is not None:
            searches = searches._replace(searches=scope.cache(searches.searches))
            counts.update(write_search_examples(spark, cfg, inputs, searches, cutoff, run_id,
                                                {**lineage, "cutoff": cutoff}, spec_fields or {}, staging))
    return counts, spec


def search_examples_for(cfg: Config, inputs: dict[str, DataFrame], searches: DataFrame,
                        followups: DataFrame) -> DataFrame:
    """Each search's text matches (as search_rerank finds them) with the search ranker's features
    from ``inputs`` (:func:`~shoprec.models.ranker.features.search_features`), labelled 1 where
    the searcher acted on the item after the search (``followups``).

    Returns:
        ``search_id``, the :func:`~shoprec.models.ranker.features.search_features` columns and
        ``label double``.
    """
    ranker = cfg.ranker
    searchers = searches.select(S.USER_ID).distinct()
    cands = X.candidates_from(searchers, inputs, als_recs_for(cfg, inputs, searchers), ranker.seeds_per_user,
                              ranker.candidates)
    matches = Q.catalogue_matches(cfg, searches, inputs["item_profile"])
    features = X.search_features(matches, cands, inputs["user_profile"], inputs["item_profile"],
                                 inputs["category_affinity"], inputs["brand_affinity"])
    return X.with_labels(features, followups, key=Q.SEARCH_ID)


def write_search_examples(spark: SparkSession, cfg: Config, inputs: dict[str, DataFrame], labels: SearchLabels,
                          cutoff: str, run_id: str | None, lineage: dict, spec_fields: dict,
                          staging: Staging) -> dict:
    """The search ranker's examples (:func:`search_examples_for` of ``labels``) written under
    ``labels.path`` as the ranker's are (shards by user, a validation split of
    ``search.validation_percent`` of the searchers, whole) with their feature spec, whose
    ``group`` is ``search_id``: training and its validation nDCG take each search's matches as one
    list. With fewer than ``search.min_searches`` followed searches, or no followed-up match to
    learn from, nothing is written and an earlier set at ``labels.path`` is removed (search_rerank
    then keeps the fused order).

    Returns:
        ``search_searches`` and, when written, ``search_<split>_<positive|negative>`` and
        ``search_followups_matched_share`` (the follow-ups found among the matches).
    """
    ranker = cfg.ranker
    searches, followups, path = labels
    n_searches = searches.count()
    if n_searches < cfg.search.min_searches:
        HadoopFS(spark).delete(path)
        log.info("search examples: %d followed searches from %s on, fewer than search.min_searches (%d); "
                 "none written", n_searches, cutoff, cfg.search.min_searches)
        return {"search_searches": n_searches}
    examples = staging.keep(X.assign_shards(search_examples_for(cfg, inputs, searches, followups), ranker.workers,
                                            cfg.search.validation_percent, ranker.seed), "search_examples")
    counts = {f"search_{r['split']}_{'positive' if r[X.LABEL] else 'negative'}": r["count"]
              for r in examples.groupBy("split", X.LABEL).count().collect()}
    counts["search_searches"] = n_searches
    if not counts.get("search_train_positive"):
        HadoopFS(spark).delete(path)
        log.info("search examples: no match of a training search was followed up; none written")
        return counts
    dense = X.dense_features(search=True)
    stats = X.standardisation(examples.where(F.col("split") == "train"), dense)
    columns = [S.USER_ID, Q.SEARCH_ID, S.ITEM_ID, *X.CATEGORICAL, "dense", X.LABEL, "split", "shard"]
    shards = X.standardise(examples, stats).select(*columns)
    write_partitions(shards.repartition("split", "shard"), path, ["split", "shard"],
                     {"split": ["train", "validation"]}, run_id, lineage)
    categorical = {name: buckets for name, buckets in X.CATEGORICAL.items()
                   if ranker.id_embeddings or name not in X.ID_BUCKETS}
    # reference_order: the order without a model (ascending text rank), which training measures on
    # the validation searches beside the model's, so that the model is served only where it wins.
    spec = {**spec_fields, "cutoff": cutoff, "categorical": categorical, "dense": dense, "group": Q.SEARCH_ID,
            "reference_order": Q.TEXT_RANK, "standardisation": stats, "workers": ranker.workers, "run_id": run_id}
    HadoopFS(spark).write_text(f"{path}/{FEATURE_SPEC}", json.dumps(spec, indent=1))
    matched = counts.get("search_train_positive", 0) + counts.get("search_validation_positive", 0)
    return {**counts, "search_followups_matched_share": matched / max(followups.count(), 1)}


def run(spark: SparkSession, cfg: Config, run_date: str) -> dict:
    """Build and write the sharded training sets for ``run_date``; return their counts."""
    with job_run(cfg, JOB, run_date, extra_params={"run_date": run_date}) as tracking:
        path = f"{cfg.table_path(TRAINING_SET)}/run_date={run_date}"
        search_path = f"{cfg.table_path(SEARCH_TRAINING_SET)}/run_date={run_date}"
        lineage = {"run_id": tracking.run_id, "job": JOB, "run_date": run_date}
        counts, spec = write_training_set(spark, cfg, events_as_of(spark, cfg, run_date), run_date, path,
                                          tracking.run_id, lineage, search_path)
        tracking.log_dict(spec, "feature_spec.json")
        tracking.log_metrics(counts)
        log.info("build_training_set %s (cut-off %s): %s", run_date, spec["cutoff"], counts)
        return counts


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``spark-submit jobs/build_training_set.py`` and ``shoprec run build_training_set``."""
    parser = job_parser(JOB, "Build the ranker's sharded, labelled training set from candidates and features.")

    def execute(spark: SparkSession, cfg: Config, args: argparse.Namespace) -> None:
        print(f"build_training_set {args.run_date}: {run(spark, cfg, args.run_date)}")

    return run_main(JOB, parser, execute, argv)
