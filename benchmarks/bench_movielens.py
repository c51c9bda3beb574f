"""MovieLens quality benchmark on the Microsoft Recommenders protocol.

    make bench-movielens                      # ../shared/data/movielens-100k -> reports/movielens100k.json
    make bench-movielens DATA=path/to/ml-latest-small   # -> reports/movielens_ml-latest-small.json

Protocol: every rating is an interaction; each user's ratings are split at random 75/25 (seed 42);
each model recommends its top 10 per user, leaving out the user's training items; every test item
is relevant; metrics are averaged over users present in both parts.

Tuning never sees the test part: the training part is split again per user 75/25 (seed 43) into
fit and validation; the grid of conf/base.yaml (``als.ranks`` x ``als.reg_params`` x
``als.alphas``) is scored on validation nDCG@10, the winner is refitted on the whole training
part and the test part is scored once. The same grid and procedure run on any dataset given.

ALS here is shoprec's implicit ALS (``shoprec.models.als``) with each rating as one interaction of
strength 1, fitted by the config's ``als.solver`` unless ``--solver`` says otherwise (a solver other
than mllib writes ``<report>_<solver>.*``; ``--reg-params`` replaces the grid's, whose values mean
different things to the two solvers); popularity recommends the items most users rated in training.

``pipeline`` is the production path (:mod:`shoprec.jobs.build_training_set`, ``train_ranker``'s
Horovod training on the Spark executors, ``score``'s ranking and rules) on the ratings as events:
candidates from the tuned ALS (with ALS-similar items and popularity, if chosen), profile and
source features, the ranker trained on the fit part with the validation part as labels, then
candidates and features rebuilt from the whole training part, ranked by that ranker, training
items left out, top 10.
The candidate mix, the ranker's loss and whether it gets id embeddings are chosen first, inside
the training part (:func:`select_pipeline`), so the pipeline row, too, is scored on the test part
once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "lib"))

from pyspark.sql import DataFrame, SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from shoprec import schemas as S  # noqa: E402
from shoprec.config import SparkConfig, load_config  # noqa: E402
from shoprec.evaluation.ranking import ranking_metrics  # noqa: E402
from shoprec.evaluation.splits import stratified_split  # noqa: E402
from shoprec.models import als as A  # noqa: E402
from shoprec.models.popularity import recommend_popular  # noqa: E402
from shoprec.spark import build_session  # noqa: E402

DEFAULT_DATA = PROJECT.parent / "shared" / "data" / "movielens-100k"
K = 10
SPLIT_SEED = 42
VALIDATION_SEED = 43
METRICS = ("precision", "recall", "ndcg", "map")
# The pipeline's options, chosen inside the training part on each run (select_pipeline), one after
# the other in this order, each alternative tried on the best options so far; the first value of
# each is where the search starts. The fit part is split again 75/25 with INNER_SEED for the
# ranker's features and labels, and each try is scored on the validation part. The test part plays
# no role.
PIPELINE_CHOICES = {
    "candidates": ({"als": 100, "similar": 20, "popular": 30}, {"als": 100}),
    "loss": ("pointwise", "listwise"),
    "id_embeddings": (False, True),
}
INNER_SEED = 44
SOURCE_NAMES = {"als": "the tuned ALS", "similar": "ALS-similar items", "popular": "popularity"}
# Published numbers for the same protocol (Microsoft Recommenders, MovieLens 100k, top 10).
PUBLISHED = {
    "Spark ALS (explicit)": {"ndcg@10": 0.044},
    "SAR": {"ndcg@10": 0.382},
    "BPR": {"ndcg@10": 0.442},
    "LightGCN": {"ndcg@10": 0.420},
    "BiVAE": {"ndcg@10": 0.475},
}


def read_ratings(spark: SparkSession, data: Path) -> DataFrame:
    """``user_id, item_id, rating`` from ``u.data`` (tab-separated, no header) or ``ratings.csv``
    (header ``userId,movieId,rating,timestamp``), whichever the directory holds."""
    if (data / "u.data").is_file():
        raw = spark.read.csv(str(data / "u.data"), sep="\t", schema="user_id string, item_id string, rating double, ts long")
    elif (data / "ratings.csv").is_file():
        raw = (spark.read.csv(str(data / "ratings.csv"), header=True, schema="userId string, movieId string, rating double, timestamp long")
               .select(F.col("userId").alias("user_id"), F.col("movieId").alias("item_id"), "rating",
                       F.col("timestamp").alias("ts")))
    else:
        raise FileNotFoundError(f"{data} holds neither u.data nor ratings.csv")
    return raw.select(S.USER_ID, S.ITEM_ID, "rating", "ts").where(F.col(S.USER_ID).isNotNull() & F.col(S.ITEM_ID).isNotNull())


def popularity_recs(train: DataFrame, users: DataFrame, k: int) -> DataFrame:
    """Top ``k`` items by number of training users, minus each user's training items."""
    from pyspark.sql import Window

    counts = train.groupBy(S.ITEM_ID).agg(F.countDistinct(S.USER_ID).cast("double").alias("score"))
    # One global ranking of a catalogue-sized table (a few thousand rows).
    popular = counts.withColumn("rank", F.row_number().over(Window.orderBy(F.col("score").desc(), F.col(S.ITEM_ID))))
    return recommend_popular(popular, users, train.select(S.USER_ID, S.ITEM_ID), k)


def als_recs(train: DataFrame, params: A.AlsParams, seed: int, users: DataFrame, k: int, solver: A.AlsSolver) -> DataFrame:
    recommender = A.train_recommender(train.withColumn("confidence", F.lit(1.0)), params, seed, solver)
    return recommender.recommend(users, train.select(S.USER_ID, S.ITEM_ID), k)


def as_events(ratings: DataFrame) -> DataFrame:
    """Ratings as clean events: one ``rating`` event each, at its time. The stars are left out, so
    each rating is one interaction of strength 1, as in the ALS rows."""
    event_time = F.timestamp_seconds(F.col("ts"))
    columns = {S.EVENT_ID: F.concat_ws(":", S.USER_ID, S.ITEM_ID), S.USER_ID: F.col(S.USER_ID),
               S.ITEM_ID: F.col(S.ITEM_ID), S.EVENT_TYPE: F.lit("rating"), S.EVENT_TIME: event_time,
               S.SESSION_ID: F.concat_ws(":", S.USER_ID, F.to_date(event_time).cast("string")),
               S.EVENT_DATE: F.to_date(event_time)}
    fields = S.EVENTS_CLEAN.fields
    return ratings.select(*[(columns[f.name] if f.name in columns else F.lit(None)).cast(f.dataType).alias(f.name)
                            for f in fields])


def default_options(choices: dict = PIPELINE_CHOICES) -> dict:
    """The pipeline options the selection starts from: the first value of each choice."""
    return {name: values[0] for name, values in choices.items()}


def describe(options: dict) -> str:
    """``candidates=als:100+similar:20 loss=pointwise id_embeddings=false``: options as one label."""
    parts = []
    for name, value in options.items():
        if isinstance(value, dict):
            value = "+".join(f"{source}:{n}" for source, n in value.items())
        elif isinstance(value, bool):
            value = str(value).lower()
        parts.append(f"{name}={value}")
    return " ".join(parts)


def pipeline_config(cfg, best: A.AlsParams, models_root: Path, solver: str = "mllib", options: dict | None = None):
    """The production config bent to a ratings dataset: no time decay (the split is random), ALS
    candidates with the tuned parameters, no basket or catalogue sources (MovieLens has neither),
    training items excluded, top 10; the candidates, loss and id embeddings of ``options``
    (:data:`PIPELINE_CHOICES`; the defaults when none)."""
    from dataclasses import replace

    options = {**default_options(), **(options or {})}
    return replace(
        cfg,
        profiles=replace(cfg.profiles, history_days=365_000, half_life_days=1e9, interaction_half_life_days=1e9,
                         min_confidence=0.0, interaction_weights={"rating": 1.0}),
        als=replace(cfg.als, blocks=2, exclude="seen", solver=solver),
        ranker=replace(cfg.ranker, als_rank=best.rank, als_reg_param=best.reg_param, als_alpha=best.alpha,
                       candidates=options["candidates"], relevant_event_types=["rating"], models_root=str(models_root),
                       loss=options["loss"], id_embeddings=options["id_embeddings"]),
        score=replace(cfg.score, top_k=K, max_per_category=K))


def pipeline_recs(spark: SparkSession, cfg, fit: DataFrame, validation: DataFrame, train: DataFrame,
                  users: DataFrame, best: A.AlsParams, work: Path, solver: str = "mllib",
                  options: dict | None = None) -> tuple[DataFrame, dict]:
    """Top ``K`` for ``users`` from the whole pipeline: the ranker learns on ``fit`` (features) and
    ``validation`` (labels), then ranks candidates built from ``train``."""
    from shoprec.evaluation.holdout import exclusions
    from shoprec.jobs.build_training_set import als_candidate_count, features_before, write_examples
    from shoprec.jobs.score import recommend_with_ranker
    from shoprec.jobs.train_ranker import settings_for, train_on_spark
    from shoprec.spark import CacheScope

    pcfg = pipeline_config(cfg, best, work, solver, options)
    last = train.agg(F.max("ts")).first()[0]
    import datetime as dt

    cutoff = (dt.datetime.fromtimestamp(last, dt.timezone.utc).date() + dt.timedelta(days=1)).isoformat()
    training_set = str(work / "training_set")
    counts, spec = write_examples(spark, pcfg, as_events(fit), validation.select(S.USER_ID, S.ITEM_ID), cutoff,
                                  training_set, None, {"job": "bench-movielens"})
    (result,) = train_on_spark(pcfg, settings_for(pcfg, cutoff, None, False, training_set, str(work / "ranker")))
    with CacheScope() as scope:
        inputs = features_before(spark, pcfg, as_events(train), cutoff, scope)
        # As train_als writes als_recs: the config's exclusion rule ("seen" here) and candidate count.
        inputs["als_recs"] = inputs["als"].recommend(users, exclusions(inputs["interactions"], pcfg.als.exclude),
                                                     als_candidate_count(pcfg))
        recs = recommend_with_ranker(pcfg, inputs, users, result["model_path"], spec, K)
        recs = recs.select(S.USER_ID, "rank", S.ITEM_ID).localCheckpoint(eager=True)
    history = result["history"]
    return recs, {
        "training_set": counts, "best_val_auc": round(result["best_val_auc"], 4), "epochs": len(history),
        "val_auc_per_epoch": [round(h["val_auc"], 4) for h in history], "candidates": pcfg.ranker.candidates,
        "loss": pcfg.ranker.loss, "id_embeddings": pcfg.ranker.id_embeddings}


def select_pipeline(spark: SparkSession, cfg, fit: DataFrame, validation: DataFrame, validation_users: DataFrame,
                    best: A.AlsParams, als_ndcg: float, work: Path, solver: str = "mllib",
                    choices: dict = PIPELINE_CHOICES) -> dict:
    """Choose the pipeline's options inside the training part: the ranker learns on the fit part
    split again 75/25 (:data:`INNER_SEED`; features from the larger share, labels from the
    smaller), ranks candidates built from the whole fit part, and each try is scored on the
    validation part. A coordinate search over ``choices`` (:data:`PIPELINE_CHOICES` unless a
    smaller search is asked for; options not among them keep their defaults): the defaults first, then
    each alternative of each choice in turn on the best options so far, kept only when its nDCG@10
    is higher (the earlier try wins a tie).

    Returns:
        ``{"split", "als_ndcg@10", "tried": [{"options", "ndcg@10"}, ...], "options"}`` (the
        chosen options, the best of those tried).
    """
    inner_fit, inner_labels = (df.cache() for df in stratified_split(fit, 0.75, INNER_SEED))
    tried = []

    def score(options: dict) -> float:
        recs, _ = pipeline_recs(spark, cfg, inner_fit, inner_labels, fit, validation_users, best,
                                work / f"select-{len(tried)}", solver, options)
        ndcg = ranking_metrics(recs, validation, K)[f"ndcg@{K}"]
        tried.append({"options": describe(options), "ndcg@10": round(ndcg, 5)})
        print(f"inner selection, {describe(options)}: ndcg@{K} {ndcg:.4f}", flush=True)
        return ndcg

    chosen = {**default_options(), **default_options(choices)}
    chosen_ndcg = score(chosen)
    for name, values in choices.items():
        for value in values[1:]:
            option = {**chosen, name: value}
            ndcg = score(option)
            if ndcg > chosen_ndcg:
                chosen, chosen_ndcg = option, ndcg
    for df in (inner_fit, inner_labels):
        df.unpersist()
    return {"split": f"fit part 75/25 (seed {INNER_SEED}) for features/labels, scored on validation",
            "als_ndcg@10": round(als_ndcg, 5), "tried": tried, "options": chosen}


def report_name(data: Path, solver: str = "mllib") -> str:
    """``movielens100k`` for the default dataset, ``movielens_<directory name>`` for any other;
    ``_<solver>`` appended for a solver other than mllib."""
    name = "movielens100k" if data.resolve() == DEFAULT_DATA.resolve() else f"movielens_{data.name}"
    return name if solver == "mllib" else f"{name}_{solver}"


def run_benchmark(spark: SparkSession, data: Path, grid: list[A.AlsParams], seed: int, reports: Path,
                  als_solver: A.AlsSolver = A.AlsSolver(blocks=2), cfg=None, work: Path | None = None,
                  command: str | None = None, choices: dict = PIPELINE_CHOICES) -> dict:
    """Tune on validation, score the test part once, write the reports; return the test metrics.
    ALS is fitted by ``als_solver``; the pipeline row (when ``cfg`` is given) chooses its options
    among ``choices``."""
    started = time.perf_counter()
    solver = als_solver.name
    ratings = read_ratings(spark, data).cache()
    train, test = (df.cache() for df in stratified_split(ratings, 0.75, SPLIT_SEED))
    fit, validation = (df.cache() for df in stratified_split(train, 0.75, VALIDATION_SEED))
    validation_users = validation.select(S.USER_ID).distinct().cache()

    tuning = []
    for params in grid:
        metrics = ranking_metrics(als_recs(fit, params, seed, validation_users, K, als_solver), validation, K)
        tuning.append({**params.as_dict(), **{m: round(v, 5) for m, v in metrics.items()}})
        print(f"validation {params}: ndcg@10 {metrics['ndcg@10']:.4f} precision@10 {metrics['precision@10']:.4f}", flush=True)
    best = A.best_params([(p, {"ndcg@10": t["ndcg@10"]}) for p, t in zip(grid, tuning)], "ndcg@10")

    test_users = test.select(S.USER_ID).distinct().cache()
    results = {}
    candidates = [("popularity", lambda: popularity_recs(train, test_users, K)),
                  ("als", lambda: als_recs(train, best, seed, test_users, K, als_solver))]
    pipeline = {}
    if cfg is not None:
        def run_pipeline():
            selection = select_pipeline(spark, cfg, fit, validation, validation_users, best,
                                        max(t["ndcg@10"] for t in tuning), work, solver, choices)
            recs, details = pipeline_recs(spark, cfg, fit, validation, train, test_users, best, work, solver,
                                          selection["options"])
            pipeline.update(details, inner_selection=selection)
            return recs
        candidates.append(("pipeline", run_pipeline))
    for model, make in candidates:
        metrics = ranking_metrics(make(), test, K)
        results[model] = {f"{m}@{K}": round(metrics[f"{m}@{K}"], 5) for m in METRICS}
        print(f"test {model}: {results[model]}", flush=True)
    counts = {"ratings": ratings.count(), "users": ratings.select(S.USER_ID).distinct().count(),
              "items": ratings.select(S.ITEM_ID).distinct().count(), "train": train.count(), "test": test.count()}
    for df in (ratings, train, test, fit, validation, validation_users, test_users):
        df.unpersist()

    seconds = round(time.perf_counter() - started, 1)
    name = report_name(data, solver)
    reports.mkdir(parents=True, exist_ok=True)
    (reports / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")
    details = {"data": str(data), "protocol": {"split": "per-user stratified random 75/25", "seed": SPLIT_SEED,
                                               "validation": "training part split again 75/25, seed 43", "k": K},
               "counts": counts, "als_solver": dataclasses.asdict(als_solver),
               "als_selected": best.as_dict(), "tuning": tuning, "pipeline": pipeline,
               "seconds": seconds,
               "command": command or f"make bench-movielens DATA={data}"}
    (reports / f"{name}_details.json").write_text(json.dumps(details, indent=1) + "\n")
    (reports / f"{name}.md").write_text(markdown(name, results, best, counts, seconds, data, pipeline, solver,
                                                       details["command"], sorted({p.reg_param for p in grid})))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="a MovieLens directory (u.data or ratings.csv)")
    parser.add_argument("--conf", default=str(PROJECT / "conf" / "base.yaml"), help="config holding the als grid")
    parser.add_argument("--reports", default=str(PROJECT / "reports"))
    parser.add_argument("--no-pipeline", action="store_true", help="only popularity and ALS (no ranker)")
    parser.add_argument("--solver", choices=["mllib", "cg"], help="the ALS solver (default: the config's als.solver)")
    parser.add_argument("--reg-params", type=float, nargs="+", help="the grid's reg_params (default: the config's)")
    args = parser.parse_args(argv)
    cfg = load_config(args.conf)
    solver = args.solver or cfg.als.solver
    grid = A.param_grid(cfg.als.ranks, args.reg_params or cfg.als.reg_params, cfg.als.alphas, cfg.als.max_iter)
    spark = build_session(SparkConfig(master="local[2]", app_name="bench-movielens", shuffle_partitions=4, conf={
        "spark.driver.memory": "6g", "spark.ui.showConsoleProgress": "false",
        "spark.driver.extraJavaOptions": "-Xss16m"}), "bench-movielens")
    spark.sparkContext.setLogLevel("ERROR")
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="bench-movielens-"))
    try:
        command = " ".join(["python benchmarks/bench_movielens.py", *(sys.argv[1:] if argv is None else argv)])
        results = run_benchmark(spark, Path(args.data), grid, cfg.als.seed, Path(args.reports),
                                A.AlsSolver(solver, 2, cfg.als.cg_steps), cfg=None if args.no_pipeline else cfg,
                                work=work, command=command)
    finally:
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=1))
    return 0


def markdown(name: str, results: dict, best: A.AlsParams, counts: dict, seconds: float, data: Path,
             pipeline: dict | None = None, solver: str = "mllib", command: str = "", reg_params: list | None = None
             ) -> str:
    lines = [f"# {name}: top-10 quality on the Microsoft Recommenders protocol", "",
             f"Data: `{data.name}` ({counts['ratings']:,} ratings, {counts['users']:,} users, {counts['items']:,} items); "
             f"per-user random 75/25 split, seed 42; top 10 excluding training items; {seconds:.0f} s on this machine.",
             f"ALS: implicit, solver {solver}, rank {best.rank}, regParam {best.reg_param}, alpha {best.alpha}, {best.max_iter} iterations "
             f"(chosen on a validation split of the training part; regParam grid {reg_params}).", "",
             f"Command: `{command}`", "",
             "| model | precision@10 | recall@10 | nDCG@10 | MAP@10 |", "|---|---|---|---|---|"]
    for model, m in results.items():
        lines.append(f"| shoprec {model} | {m['precision@10']:.4f} | {m['recall@10']:.4f} | {m['ndcg@10']:.4f} | {m['map@10']:.4f} |")
    for model, m in PUBLISHED.items():
        lines.append(f"| published {model} | | | {m['ndcg@10']:.3f} | |")
    if pipeline:
        sources = ", ".join(f"{n} from {SOURCE_NAMES.get(source, source)}" for source, n in pipeline["candidates"].items())
        lines += ["", f"Pipeline: candidates {sources}, the ranker with {pipeline['loss']} loss and id embeddings "
                  f"{'on' if pipeline['id_embeddings'] else 'off'} (Horovod, {pipeline['epochs']} epochs) reached "
                  f"validation AUC {pipeline['best_val_auc']} on the fit/validation split of the training part."]
        selection = pipeline.get("inner_selection")
        if selection:
            lines += ["", f"Options chosen on the validation part, one after the other on an inner split of the fit "
                      f"part (ALS there: nDCG@10 {selection['als_ndcg@10']:.4f}):", "",
                      "| options tried | nDCG@10 |", "|---|---|"]
            lines += [f"| {t['options']} | {t['ndcg@10']:.4f} |" for t in selection["tried"]]
            lines += ["", f"Chosen: {describe(selection['options'])}."]
    lines += ["", "MAP@10 here divides by min(|relevant|, 10) (Spark's definition); the published tables divide by "
              "|relevant|, which gives smaller numbers, so compare nDCG and precision.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
