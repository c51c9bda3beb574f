"""Implicit-feedback matrix factorisation with Spark MLlib's ALS, and what is built from its factors.

ALS needs integer ids; shop ids are strings of any shape, so users and items are first given dense
integer indices (:func:`index_ids`) and mapped back afterwards. Confidence follows Hu, Koren &
Volinsky (2008): ``c_ui = 1 + alpha * r_ui`` with ``r_ui`` the interaction's strength.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shoprec import schemas as S
from shoprec.config import AlsConfig
from shoprec.evaluation.ranking import RANK
from shoprec.models.neighbours import TargetSearch, nearest_neighbours, top_unexcluded
from shoprec.spark import CacheScope

USER_INDEX = "user_index"
ITEM_INDEX = "item_index"
STRENGTH = "confidence"
SCORE = "score"
SIMILAR_ITEM_ID = "similar_item_id"


@dataclass(frozen=True)
class AlsParams:
    """One point of the ALS hyperparameter space."""

    rank: int = 64
    reg_param: float = 0.05
    alpha: float = 10.0
    max_iter: int = 15

    def as_dict(self) -> dict[str, float]:
        return {"rank": self.rank, "reg_param": self.reg_param, "alpha": self.alpha, "max_iter": self.max_iter}


@dataclass(frozen=True)
class AlsSolver:
    """How the factors are solved: ``mllib`` (Spark MLlib's ALS, an exact solve per row, the
    regulariser scaled by the row's number of ratings) or ``cg`` (:mod:`shoprec.models.als_cg`:
    ``cg_steps`` conjugate-gradient steps per row, implicit's plain regulariser), each on
    ``blocks`` blocks per side (None: the cluster's default parallelism)."""

    name: str = "mllib"
    blocks: int | None = None
    cg_steps: int = 3


def solver_for(settings: AlsConfig) -> AlsSolver:
    """The solver the ``als`` section of the config asks for."""
    return AlsSolver(settings.solver, settings.blocks or None, settings.cg_steps)


def search_for(settings: AlsConfig) -> TargetSearch:
    """How the ``als`` section of the config asks top-K lists and similar items to be found."""
    return TargetSearch(settings.top_k_search, settings.ivf_lists, settings.ivf_probes, settings.seed)


def param_grid(ranks: list[int], reg_params: list[float], alphas: list[float], max_iter: int) -> list[AlsParams]:
    """Every combination of the given values, in a fixed order."""
    return [AlsParams(r, g, a, max_iter) for r, g, a in itertools.product(ranks, reg_params, alphas)]


def index_ids(df: DataFrame, id_col: str, index_col: str) -> DataFrame:
    """Dense 0-based integer indices for the distinct values of ``id_col``, in sorted id order.

    Returns:
        ``(id_col, index_col int)``, one row per distinct non-null id.
    """
    S.require_columns(df, [id_col], "index_ids")
    spark = df.sparkSession
    ids = df.select(id_col).where(F.col(id_col).isNotNull()).distinct().orderBy(id_col)
    schema = T.StructType([ids.schema[id_col], T.StructField(index_col, T.IntegerType(), False)])
    return spark.createDataFrame(ids.rdd.map(lambda row: row[0]).zipWithIndex(), schema)


def fit_als(indexed: DataFrame, params: AlsParams, seed: int, checkpoint_interval: int = 10,
            solver: AlsSolver = AlsSolver()) -> ALSModel:
    """Fit implicit ALS on ``(user_index, item_index, confidence)`` rows with ``solver``."""
    S.require_columns(indexed, [USER_INDEX, ITEM_INDEX, STRENGTH], "fit_als")
    blocks = solver.blocks
    if solver.name == "cg":
        from shoprec.models.als_cg import fit_als_cg

        return fit_als_cg(indexed, params.rank, params.reg_param, params.alpha, params.max_iter, seed,
                          blocks or indexed.sparkSession.sparkContext.defaultParallelism, solver.cg_steps,
                          USER_INDEX, ITEM_INDEX, STRENGTH)
    als = ALS(
        rank=params.rank, regParam=params.reg_param, alpha=params.alpha, maxIter=params.max_iter,
        implicitPrefs=True, userCol=USER_INDEX, itemCol=ITEM_INDEX, ratingCol=STRENGTH,
        nonnegative=False, coldStartStrategy="drop", seed=seed, checkpointInterval=checkpoint_interval,
    )
    if blocks:
        als.setNumUserBlocks(blocks).setNumItemBlocks(blocks)
    return als.fit(indexed)


def recommend_unseen(model: ALSModel, users: DataFrame, exclude: DataFrame | None, k: int,
                     search: TargetSearch = TargetSearch()) -> DataFrame:
    """Each user's top ``k`` items by ALS score, leaving out the items in ``exclude``: exact,
    however many items a user has to leave out (or, with an ``ivf`` ``search``, the top ``k``
    among the items of the index lists most promising for the user: see :mod:`shoprec.models.ivf`).

    The item factors are broadcast once; each user's factors meet the list of their excluded
    items, every item is scored, the excluded ones are masked and the best ``k`` kept
    (:func:`~shoprec.models.neighbours.top_unexcluded`). Asking MLlib for each user's best
    ``k + n`` instead would cost the same for a user who bought one item as for one who bought
    hundreds, and would still come up short for a user with more than ``n`` exclusions.
    Users the model does not know get nothing.

    Args:
        model: a fitted model.
        users: ``(user_index)`` rows of the users to recommend for.
        exclude: ``(user_index, item_index)`` pairs not to recommend (already bought or seen).
        k: recommendations per user.

    Returns:
        ``(user_index int, rank int, item_index int, score double)``, rank 1 = best.
    """
    wanted = users.select(USER_INDEX).distinct()
    factors = model.userFactors.select(F.col("id").alias(USER_INDEX), "features").join(wanted, USER_INDEX)
    excluded_col = None
    if exclude is not None:
        excluded_col = "_excluded"
        lists = exclude.groupBy(USER_INDEX).agg(F.collect_list(ITEM_INDEX).alias(excluded_col))
        factors = factors.join(lists, USER_INDEX, "left")
    return top_unexcluded(factors, model.itemFactors, k, excluded_col, id_col=USER_INDEX, target_col=ITEM_INDEX,
                          search=search)


def similar_items(model: ALSModel, k: int, search: TargetSearch = TargetSearch()) -> DataFrame:
    """Each item's ``k`` nearest items by cosine similarity of its ALS factors (exact unless
    ``search`` says otherwise).

    Returns:
        ``(item_index int, rank int, similar_index int, score double)``.
    """
    return nearest_neighbours(model.itemFactors, k, search).withColumnRenamed("id", ITEM_INDEX)


@dataclass
class AlsRecommender:
    """A fitted ALS model with the id <-> index maps that make it speak shop ids, and how its
    top-K lists are searched."""

    model: ALSModel
    users: DataFrame
    items: DataFrame
    params: AlsParams
    search: TargetSearch = TargetSearch()

    def recommend(self, users: DataFrame, exclude: DataFrame | None, k: int,
                  search: TargetSearch | None = None) -> DataFrame:
        """Top ``k`` per user of ``users`` (``user_id`` rows) the model knows, minus ``exclude``
        ``(user_id, item_id)`` pairs, found as ``search`` says (default: the recommender's own).

        Returns:
            ``user_id, rank int, item_id, score double``.
        """
        known = users.select(S.USER_ID).distinct().join(self.users, S.USER_ID)
        excluded = None
        if exclude is not None:
            excluded = (exclude.select(S.USER_ID, S.ITEM_ID).join(self.users, S.USER_ID)
                        .join(self.items, S.ITEM_ID).select(USER_INDEX, ITEM_INDEX))
        ranked = recommend_unseen(self.model, known, excluded, k, search or self.search)
        return (ranked.join(self.users, USER_INDEX).join(self.items, ITEM_INDEX)
                .select(S.USER_ID, RANK, S.ITEM_ID, SCORE))

    def release(self) -> None:
        """Free what fitting cached: the id indices and the model's factors. Nothing built from
        this recommender can be computed afterwards without fitting again."""
        self.users.unpersist()
        self.items.unpersist()
        release_factors(self.model)

    def similar_items(self, k: int) -> DataFrame:
        """Each item's ``k`` most similar items by cosine of ALS item factors.

        Returns:
            ``item_id, rank int, similar_item_id, score double``.
        """
        similar = self.items.select(F.col(ITEM_INDEX).alias("similar_index"), F.col(S.ITEM_ID).alias(SIMILAR_ITEM_ID))
        return (similar_items(self.model, k, self.search).join(self.items, ITEM_INDEX).join(similar, "similar_index")
                .select(S.ITEM_ID, RANK, SIMILAR_ITEM_ID, SCORE))


def search_recall(recommender: AlsRecommender, users: DataFrame, exclude: DataFrame | None, k: int,
                  sample_users: int, seed: int) -> float | None:
    """The share of the exact top ``k`` that the recommender's own search finds, over a sample of
    ``sample_users`` of ``users`` (drawn by a hash of the id and ``seed``, so the same users each
    run); None when the search is exact or no user is sampled."""
    if recommender.search.method == "exact" or sample_users <= 0:
        return None
    with CacheScope() as scope:
        sample = scope.cache(users.select(S.USER_ID).distinct()
                             .orderBy(F.xxhash64(S.USER_ID, F.lit(seed)), S.USER_ID).limit(sample_users))
        exact = scope.cache(recommender.recommend(sample, exclude, k, TargetSearch()).select(S.USER_ID, S.ITEM_ID))
        found = recommender.recommend(sample, exclude, k).select(S.USER_ID, S.ITEM_ID)
        wanted = exact.count()
        return exact.join(found, [S.USER_ID, S.ITEM_ID]).count() / wanted if wanted else None


def release_factors(model: ALSModel) -> None:
    """Unpersist a fitted model's user and item factors.

    The CG solver's factors are cached DataFrames. MLlib's are RDDs it persisted itself, named
    ``userFactors`` and ``itemFactors``, under DataFrames that are not cached: they are found in
    the DataFrames' lineage, which is followed no further than the first persisted RDD on each
    path, so nothing the model was fitted from is touched. Each RDD is visited once: an
    iterative fit's lineage shares its ancestors between paths, whose number doubles with every
    iteration.
    """
    for factors in (model.userFactors, model.itemFactors):
        factors.unpersist()
        pending, seen = [factors._jdf.queryExecution().toRdd()], set()
        while pending:
            rdd = pending.pop()
            if rdd.id() in seen:
                continue
            seen.add(rdd.id())
            level = rdd.getStorageLevel()
            if level.useMemory() or level.useDisk():
                if rdd.name() in ("userFactors", "itemFactors"):
                    rdd.unpersist(False)
                continue
            dependencies = rdd.dependencies().iterator()
            while dependencies.hasNext():
                pending.append(dependencies.next().rdd())


def train_recommender(interactions: DataFrame, params: AlsParams, seed: int, solver: AlsSolver = AlsSolver(),
                      strength_col: str = STRENGTH, scope: CacheScope | None = None,
                      search: TargetSearch = TargetSearch()) -> AlsRecommender:
    """Index ids and fit ALS on ``(user_id, item_id, strength_col)`` rows.

    Args:
        search: how the recommender's top-K lists and similar items are found.
        scope: released with this scope: the id indices and the factors the fit cached (without
            one they stay cached until :meth:`AlsRecommender.release` or the session's end).
    """
    S.require_columns(interactions, [S.USER_ID, S.ITEM_ID, strength_col], "train_recommender")
    users = index_ids(interactions, S.USER_ID, USER_INDEX).cache()
    items = index_ids(interactions, S.ITEM_ID, ITEM_INDEX).cache()
    indexed = (interactions.join(users, S.USER_ID).join(items, S.ITEM_ID)
               .select(USER_INDEX, ITEM_INDEX, F.col(strength_col).cast("float").alias(STRENGTH)))
    recommender = AlsRecommender(fit_als(indexed, params, seed, solver=solver), users, items, params, search)
    if scope is not None:
        scope.on_release(recommender.release)
    return recommender


def tune(train: DataFrame, truth: DataFrame, exclude: DataFrame | None, grid: list[AlsParams], k: int, seed: int,
         solver: AlsSolver = AlsSolver(), strength_col: str = STRENGTH,
         on_trial=None, search: TargetSearch = TargetSearch()) -> list[tuple[AlsParams, dict[str, float]]]:
    """Fit every grid point on ``train`` and score its top ``k`` against ``truth``.

    Args:
        search: how each point's top ``k`` is found (as in production, so that the point chosen
            is the best as served).
        on_trial: called with ``(params, metrics)`` after each point (to log a nested run).

    Returns:
        ``[(params, metrics)]`` in grid order; metrics as :func:`~shoprec.evaluation.ranking.ranking_metrics`.
    """
    from shoprec.evaluation.ranking import ranking_metrics

    results = []
    with CacheScope() as scope:
        users = scope.cache(truth.select(S.USER_ID).distinct())
        for params in grid:
            # Each point's factors and indices go once it is scored (or fails): a grid's worth
            # would crowd the executors' storage memory, spilling to disk what later points need.
            with CacheScope() as point:
                recommender = train_recommender(train, params, seed, solver, strength_col, scope=point, search=search)
                metrics = ranking_metrics(recommender.recommend(users, exclude, k), truth, k)
            results.append((params, metrics))
            if on_trial is not None:
                on_trial(params, metrics)
    return results


def best_params(results: list[tuple[AlsParams, dict[str, float]]], metric: str) -> AlsParams:
    """The grid point with the highest ``metric`` (the first of equals, in grid order)."""
    if not results:
        raise ValueError("best_params: no tuning results")
    return max(results, key=lambda pair: pair[1][metric])[0]
