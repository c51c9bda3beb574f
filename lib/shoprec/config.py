"""Typed configuration: YAML files merged in order, environment overrides, validation up front.

A job's configuration is ``conf/base.yaml`` overlaid by the file given with ``--conf``
(``conf/local.yaml``, ``conf/cluster.yaml`` or a user's own). The overlay file may name its
parent explicitly with a top-level ``extends:`` key; otherwise ``base.yaml`` beside it is the parent.

Environment variables override single keys: ``SHOPREC__<SECTION>__<KEY>=value`` (double
underscores separate the levels, the value is read as a YAML scalar), for example
``SHOPREC__WAREHOUSE__ROOT=s3a://bucket/warehouse`` or ``SHOPREC__CLEAN__SESSION_GAP_MINUTES=20``.

Everything is validated before Spark starts: an unknown key, a value of the wrong type or a
local input path that does not exist raises :class:`ConfigError` naming the dotted key.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# The training module's own lists of choices (it imports nothing heavy at module level).
from shoprec.models.ranker.train import EARLY_STOPPING as RANKER_EARLY_STOPPING
from shoprec.models.ranker.train import LOSSES as RANKER_LOSSES

MINUTES_PER_DAY = 24 * 60

ENV_PREFIX = "SHOPREC__"
REMOTE_SCHEMES = ("hdfs://", "s3a://", "s3://", "gs://", "abfs://", "abfss://", "viewfs://", "file://")


# Tables that hold the shop's real user ids: the raw lines of the quarantine and the map from
# pseudonyms back to ids. They live under the restricted root, never under warehouse.root.
RESTRICTED_TABLES = frozenset({"events_quarantine", "user_id_map"})


class ConfigError(ValueError):
    """A configuration problem, with the dotted key that caused it."""


@dataclass(frozen=True)
class SparkConfig:
    """How the SparkSession is built; under spark-submit the submit's own settings win."""

    master: str | None = None
    app_name: str = "shoprec"
    shuffle_partitions: int = 8
    conf: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WarehouseConfig:
    """Where output tables live: a local path or an ``hdfs://`` / ``s3a://`` URI."""

    root: str = "var/warehouse"


@dataclass(frozen=True)
class MlflowConfig:
    """MLflow tracking; ``required: false`` lets a job run on when the tracking store is down."""

    tracking_uri: str = "sqlite:///var/mlflow.db"
    artifact_location: str | None = "var/mlflow-artifacts"
    experiment: str = "shoprec"
    required: bool = True
    connect_timeout_seconds: int = 30


@dataclass(frozen=True)
class InputConfig:
    """The raw log that clean_events reads: which source block describes it, and where it is."""

    source: str = "synthetic"
    path: str = "var/raw/synthetic"


@dataclass(frozen=True)
class SourceConfig:
    """How one shop's raw log maps onto the canonical event table (see README, "Adding a source").

    ``columns`` maps a canonical column to a source field name, or to a list of field names of which
    the first non-empty one wins. ``constants`` sets canonical columns to fixed values.
    ``file_pattern`` is a glob on file names under the input path (others, a README say, are ignored).
    """

    format: str
    columns: dict[str, Any]
    fields: list[str] = field(default_factory=list)
    header: bool = False
    delimiter: str = ","
    event_types: dict[str, str] = field(default_factory=dict)
    timestamp_format: str = "iso8601"
    timezone: str = "UTC"
    id_cast: dict[str, str] = field(default_factory=dict)
    constants: dict[str, Any] = field(default_factory=dict)
    landing_date_pattern: str = r"dt=(\d{4}-\d{2}-\d{2})"
    file_pattern: str = "*"


@dataclass(frozen=True)
class BotRules:
    """A user whose activity crosses either limit on a day is filtered out for that day."""

    max_events_per_minute: int = 40
    max_events_per_day: int = 3000


@dataclass(frozen=True)
class CleanConfig:
    """Validation limits and normalisation settings of clean_events."""

    min_event_time: str = "1995-01-01 00:00:00"
    max_future_skew_hours: int = 24
    max_price: float = 1_000_000.0
    max_quantity: int = 1000
    max_field_chars: int = 1000
    session_gap_minutes: int = 30
    # Up to this many (user, batch) rows the pseudonym map is shipped whole to every task (about
    # 100 bytes a row) and the events are not shuffled for the lookup; beyond, Spark joins with a shuffle.
    pseudonym_map_broadcast_rows: int = 500_000
    bots: BotRules = field(default_factory=BotRules)


@dataclass(frozen=True)
class GenerateConfig:
    """The synthetic shop: its size, its dirt and its seed."""

    events: int = 200_000
    days: int = 7
    start_date: str = "2026-01-01"
    users: int = 5_000
    items: int = 2_000
    categories: int = 24
    brands: int = 60
    dirty_fraction: float = 0.02
    brand_loyalty: float = 0.6      # share of sessions looking for the user's brand of the category
    bot_users: int = 3
    partitions: int = 4
    seed: int = 42
    out: str = "var/raw/synthetic"


@dataclass(frozen=True)
class ProfilesConfig:
    """build_profiles: history window, decay, interaction weights, segments and content features."""

    history_days: int = 90
    windows_days: list[int] = field(default_factory=lambda: [1, 7, 30])
    half_life_days: float = 14.0
    top_n: int = 3
    price_bands: list[float] = field(default_factory=lambda: [10.0, 30.0, 100.0, 300.0])
    segments: int = 6
    content_features: int = 1024
    content_similar_k: int = 20
    popular_k: int = 100
    interaction_weights: dict[str, float] = field(
        default_factory=lambda: {"view": 1.0, "cart": 4.0, "purchase": 10.0, "rating": 1.0})
    interaction_half_life_days: float = 30.0
    min_confidence: float = 0.01
    seed: int = 42


@dataclass(frozen=True)
class AlsConfig:
    """train_als: the hyperparameter grid, the time-based validation split and the outputs."""

    ranks: list[int] = field(default_factory=lambda: [16, 32, 64])
    reg_params: list[float] = field(default_factory=lambda: [0.1, 0.3])
    alphas: list[float] = field(default_factory=lambda: [2.0, 5.0, 10.0])
    max_iter: int = 15
    validation_days: int = 2
    relevant_event_types: list[str] = field(default_factory=lambda: ["cart", "purchase"])
    tuning_metric: str = "ndcg"
    top_k: int = 50
    similar_k: int = 20
    exclude: str = "purchased"
    max_excluded: int = 500
    blocks: int = 0
    solver: str = "mllib"
    cg_steps: int = 3
    top_k_search: str = "exact"
    ivf_lists: int = 0
    ivf_probes: int = 32
    ivf_recall_users: int = 1000
    seed: int = 42
    registered_model: str = "shoprec-als"


@dataclass(frozen=True)
class RulesConfig:
    """mine_rules: how baskets are formed and the FP-Growth thresholds."""

    basket: str = "order"
    history_days: int = 90
    min_support: float = 0.001
    min_basket_count: int = 5
    min_confidence: float = 0.1
    top_k: int = 20


@dataclass(frozen=True)
class EvaluateConfig:
    """evaluate: the held-out window and the cut-offs."""

    holdout_days: int = 2
    k: int = 10
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 20])
    relevant_event_types: list[str] = field(default_factory=lambda: ["cart", "purchase"])
    # The search backtest also scores these search.ranker_weight values (search_fused_<weight>).
    search_ranker_weights: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])


@dataclass(frozen=True)
class RankerConfig:
    """build_training_set (and, later, the ranker jobs): candidates, labels, shards."""

    label_days: int = 2
    relevant_event_types: list[str] = field(default_factory=lambda: ["cart", "purchase"])
    candidates: dict[str, int] = field(
        default_factory=lambda: {"als": 50, "rules": 20, "similar": 20, "content": 20, "popular": 20})
    seeds_per_user: int = 5
    negatives_per_user: int = 10
    workers: int = 2
    validation_percent: int = 10
    als_rank: int = 16
    als_reg_param: float = 0.1
    als_alpha: float = 2.0
    epochs: int = 10
    batch_size: int = 512
    learning_rate: float = 0.001
    patience: int = 2
    loss: str = "pointwise"         # pointwise | listwise (softmax over each user's candidates)
    early_stopping: str = "auc"     # auc | ndcg: the validation metric that picks the epoch kept
    embedding_dim: int = 16
    id_embeddings: bool = True      # user and item id buckets as model inputs (false: features only)
    cross_layers: int = 2
    hidden_units: list[int] = field(default_factory=lambda: [128, 64])
    dropout: float = 0.1
    models_root: str = "var/models"
    registered_model: str = "shoprec-ranker"
    start_timeout_seconds: int = 120
    seed: int = 42


@dataclass(frozen=True)
class ScoreConfig:
    """score: the business rules applied to the ranked candidates."""

    top_k: int = 20
    max_per_category: int = 4


@dataclass(frozen=True)
class CatalogConfig:
    """Spark SQL catalog registration of the output tables after each job (README "Tables")."""

    register: bool = True
    database: str = "shoprec"
    restricted_database: str = "shoprec_restricted"   # the tables with real user ids


@dataclass(frozen=True)
class PrivacyConfig:
    """Pseudonymous user ids in the analysts' tables, and where the restricted tables live
    (lib/shoprec/privacy.py, README "Privacy")."""

    pseudonymize: bool = True       # clean_events writes HMAC-SHA256 pseudonyms instead of user ids
    secret_env: str = "SHOPREC_PSEUDONYM_SECRET"   # the environment variable holding the HMAC secret
    restricted_root: str | None = None   # user_id_map, events_quarantine; default <warehouse.root>_restricted


@dataclass(frozen=True)
class SearchConfig:
    """search_rerank: text matching of queries to items, then the ranker's order per user."""

    days: int = 7                   # search_rerank answers the (user, query) pairs of this many days
    top_k: int = 20                 # results kept per (user, query)
    min_match: float = 1.0          # share of the search's best text score an item needs to match
    max_matches: int = 200          # matches per search the ranker scores
    ranker_weight: float = 0.25     # the ranker's share in the fused order (0: text order, 1: ranker's)
    followup_event_types: list[str] = field(default_factory=lambda: ["view", "cart", "purchase"])
    # The search ranker, trained on the searches of the ranker's label window and their follow-ups:
    # search_rerank orders by it where it beat the text order on its validation searches, by the
    # text order where it did not, and by the fused order when none is trained.
    learned: bool = True
    min_searches: int = 50          # fewer followed searches in the label window: no search ranker
    # Searchers (whole) held out to validate the search ranker against the text order: more than
    # ranker.validation_percent, since that verdict decides what search_rerank serves.
    validation_percent: int = 25
    registered_model: str = "shoprec-search-ranker"


@dataclass(frozen=True)
class Config:
    """The whole configuration of a shoprec deployment."""

    spark: SparkConfig = field(default_factory=SparkConfig)
    warehouse: WarehouseConfig = field(default_factory=WarehouseConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    input: InputConfig = field(default_factory=InputConfig)
    sources: dict[str, SourceConfig] = field(default_factory=dict)
    clean: CleanConfig = field(default_factory=CleanConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    profiles: ProfilesConfig = field(default_factory=ProfilesConfig)
    als: AlsConfig = field(default_factory=AlsConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    ranker: RankerConfig = field(default_factory=RankerConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)

    @property
    def source(self) -> SourceConfig:
        """The source block that ``input.source`` names."""
        return self.sources[self.input.source]

    @property
    def restricted_root(self) -> str:
        """Where the tables holding real user ids live: outside the analysts' warehouse root."""
        return (self.privacy.restricted_root or f"{self.warehouse.root.rstrip('/')}_restricted").rstrip("/")

    def table_path(self, table: str) -> str:
        """The storage path of an output table: under the restricted root for the tables that
        hold real user ids (``RESTRICTED_TABLES``), under the warehouse root for the rest."""
        if table in RESTRICTED_TABLES:
            return f"{self.restricted_root}/{table}"
        return f"{self.warehouse.root.rstrip('/')}/{table}"


def flatten(cfg: Any, prefix: str = "") -> dict[str, str]:
    """Flatten a config (or any nested dataclass/dict) into ``{"a.b.c": "value"}`` for MLflow params."""
    if dataclasses.is_dataclass(cfg):
        cfg = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, dict):
        flat: dict[str, str] = {}
        for key, value in cfg.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): str(cfg)}


def load_config(
    path: str | os.PathLike, environ: typing.Mapping[str, str] | None = None, require_input: bool = False
) -> Config:
    """Load, merge, override and validate a configuration file.

    Args:
        path: the overlay YAML file (``conf/local.yaml``, ``conf/cluster.yaml``, ...).
        environ: environment to read ``SHOPREC__`` overrides from (defaults to ``os.environ``).
        require_input: check that a local ``input.path`` exists (jobs that read raw input set it).

    Returns:
        The validated :class:`Config`, with relative local paths made absolute against the
        current directory.

    Raises:
        ConfigError: a missing file, an unknown key, a wrong type or a missing input path.
    """
    raw = _load_layers(Path(path))
    _apply_env_overrides(raw, os.environ if environ is None else environ)
    cfg = _build(Config, raw, "")
    _check_semantics(cfg)
    if require_input and _is_local(cfg.input.path) and not Path(cfg.input.path).exists():
        raise ConfigError(f"input.path: {cfg.input.path} does not exist")
    cfg = _absolutise(cfg)
    _check_restricted_root(cfg)
    return cfg


def _load_layers(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in seen:
        raise ConfigError(f"config files extend each other in a loop: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    parent_name = data.pop("extends", None if path.name == "base.yaml" else "base.yaml")
    if parent_name is None:
        return data
    parent = _load_layers(path.parent / parent_name, seen + (path.resolve(),))
    return _deep_merge(parent, data)


def _deep_merge(base: dict, overlay: dict) -> dict:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _apply_env_overrides(raw: dict, environ: typing.Mapping[str, str]) -> None:
    for name, value in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [part.lower() for part in name[len(ENV_PREFIX):].split("__")]
        node = raw
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment {name}: {'.'.join(keys)} is not a section")
        node[keys[-1]] = yaml.safe_load(value) if value != "" else None


def _build(kind: Any, value: Any, key: str) -> Any:
    """Turn plain YAML data into the annotated type ``kind``, naming ``key`` in any error."""
    where = key or "<top level>"
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        hints = typing.get_type_hints(kind)
        names = {f.name for f in dataclasses.fields(kind)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ConfigError(f"unknown config key {_join(key, unknown[0])} (known: {', '.join(sorted(names))})")
        built = {}
        for f in dataclasses.fields(kind):
            if f.name in value:
                built[f.name] = _build(hints[f.name], value[f.name], _join(key, f.name))
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing config key {_join(key, f.name)}")
        return kind(**built)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _build(option, value, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        key_type, value_type = typing.get_args(kind)
        return {str(k): _build(value_type, v, _join(key, str(k))) for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        (item_type,) = typing.get_args(kind)
        return [_build(item_type, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if kind is Any:
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if kind in (int, float, bool, str) and not (isinstance(value, kind) and not (kind is int and isinstance(value, bool))):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {type(value).__name__} {value!r}")
    return value


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


SOURCE_FORMATS = ("csv", "json", "parquet")
ID_CASTS = ("long", "string")
ALS_SOLVERS = ("mllib", "cg")
TOP_K_SEARCHES = ("exact", "ivf")


def _check_semantics(cfg: Config) -> None:
    if cfg.input.source not in cfg.sources:
        raise ConfigError(f"input.source: no source block named {cfg.input.source!r} (have: {', '.join(sorted(cfg.sources))})")
    for name, source in cfg.sources.items():
        key = f"sources.{name}"
        if source.format not in SOURCE_FORMATS:
            raise ConfigError(f"{key}.format: {source.format!r} is not one of {', '.join(SOURCE_FORMATS)}")
        if source.format == "csv" and not source.fields:
            raise ConfigError(f"{key}.fields: a csv source must list its fields in file order")
        for canonical, cast in source.id_cast.items():
            if cast not in ID_CASTS:
                raise ConfigError(f"{key}.id_cast.{canonical}: {cast!r} is not one of {', '.join(ID_CASTS)}")
        _check_source_columns(source, key)
    if not 0 < cfg.clean.session_gap_minutes < MINUTES_PER_DAY:
        raise ConfigError(f"clean.session_gap_minutes: must be positive and under a day ({MINUTES_PER_DAY})")
    if not 0.0 <= cfg.generate.dirty_fraction < 1.0:
        raise ConfigError("generate.dirty_fraction: must be in [0, 1)")
    if not 0.0 <= cfg.generate.brand_loyalty <= 1.0:
        raise ConfigError(f"generate.brand_loyalty: must be in [0, 1], got {cfg.generate.brand_loyalty}")
    if not cfg.privacy.secret_env:
        raise ConfigError("privacy.secret_env: must name an environment variable")
    _check_models(cfg)


def _check_restricted_root(cfg: Config) -> None:
    """The restricted tables must not be reachable through the analysts' warehouse (paths absolute)."""
    warehouse, restricted = cfg.warehouse.root.rstrip("/") + "/", cfg.restricted_root + "/"
    if restricted.startswith(warehouse) or warehouse.startswith(restricted):
        raise ConfigError(f"privacy.restricted_root: {cfg.restricted_root} must lie outside warehouse.root "
                          f"{cfg.warehouse.root} (and not contain it): analysts' tools read the whole warehouse")


def _check_models(cfg: Config) -> None:
    from shoprec import schemas

    for event_type in cfg.profiles.interaction_weights:
        if event_type not in schemas.EVENT_TYPES:
            raise ConfigError(f"profiles.interaction_weights.{event_type}: not an event type ({', '.join(schemas.EVENT_TYPES)})")
    unknown_sources = sorted(set(cfg.ranker.candidates) - {"als", "rules", "similar", "content", "popular"})
    if unknown_sources:
        raise ConfigError(f"ranker.candidates.{unknown_sources[0]}: not a candidate source "
                          "(als, rules, similar, content, popular)")
    for key, percent in (("ranker.validation_percent", cfg.ranker.validation_percent),
                         ("search.validation_percent", cfg.search.validation_percent)):
        if not 0 <= percent < 100:
            raise ConfigError(f"{key}: must be in [0, 100)")
    for key, types_ in (("ranker.relevant_event_types", cfg.ranker.relevant_event_types),
                        ("als.relevant_event_types", cfg.als.relevant_event_types),
                        ("evaluate.relevant_event_types", cfg.evaluate.relevant_event_types),
                        ("search.followup_event_types", cfg.search.followup_event_types)):
        unknown = [t for t in types_ if t not in schemas.EVENT_TYPES]
        if unknown or not types_:
            raise ConfigError(f"{key}: {unknown or 'empty'} - must name event types ({', '.join(schemas.EVENT_TYPES)})")
    positive = {
        "profiles.history_days": cfg.profiles.history_days, "profiles.half_life_days": cfg.profiles.half_life_days,
        "profiles.interaction_half_life_days": cfg.profiles.interaction_half_life_days,
        "profiles.segments": cfg.profiles.segments, "profiles.content_features": cfg.profiles.content_features,
        "als.max_iter": cfg.als.max_iter, "als.top_k": cfg.als.top_k, "als.validation_days": cfg.als.validation_days,
        "rules.top_k": cfg.rules.top_k, "evaluate.holdout_days": cfg.evaluate.holdout_days, "evaluate.k": cfg.evaluate.k,
        "ranker.label_days": cfg.ranker.label_days, "ranker.workers": cfg.ranker.workers,
        "score.top_k": cfg.score.top_k, "score.max_per_category": cfg.score.max_per_category,
        "search.top_k": cfg.search.top_k, "search.max_matches": cfg.search.max_matches, "search.days": cfg.search.days,
        "search.min_searches": cfg.search.min_searches,
        "clean.pseudonym_map_broadcast_rows": cfg.clean.pseudonym_map_broadcast_rows,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key}: must be positive, got {value}")
    if not (cfg.als.ranks and cfg.als.reg_params and cfg.als.alphas):
        raise ConfigError("als.ranks, als.reg_params, als.alphas: each needs at least one value")
    if cfg.als.solver not in ALS_SOLVERS:
        raise ConfigError(f"als.solver: {cfg.als.solver!r} is not one of {', '.join(ALS_SOLVERS)}")
    if cfg.als.top_k_search not in TOP_K_SEARCHES:
        raise ConfigError(f"als.top_k_search: {cfg.als.top_k_search!r} is not one of {', '.join(TOP_K_SEARCHES)}")
    if cfg.als.ivf_lists < 0:
        raise ConfigError(f"als.ivf_lists: must be 0 (about the square root of the items) or more, got "
                          f"{cfg.als.ivf_lists}")
    if cfg.als.ivf_probes < 1:
        raise ConfigError(f"als.ivf_probes: must be at least 1, got {cfg.als.ivf_probes}")
    if cfg.als.ivf_recall_users < 0:
        raise ConfigError(f"als.ivf_recall_users: must be 0 (no check) or more, got {cfg.als.ivf_recall_users}")
    if cfg.als.cg_steps < 1:
        raise ConfigError(f"als.cg_steps: must be at least 1, got {cfg.als.cg_steps}")
    if cfg.als.exclude not in ("purchased", "seen", "none"):
        raise ConfigError(f"als.exclude: {cfg.als.exclude!r} is not one of purchased, seen, none")
    if cfg.als.tuning_metric not in ("ndcg", "precision", "recall", "map", "hit_rate"):
        raise ConfigError(f"als.tuning_metric: {cfg.als.tuning_metric!r} is not one of ndcg, precision, recall, map, hit_rate")
    if not 0.0 < cfg.search.min_match <= 1.0:
        raise ConfigError(f"search.min_match: must be in (0, 1], got {cfg.search.min_match}")
    if not 0.0 <= cfg.search.ranker_weight <= 1.0:
        raise ConfigError(f"search.ranker_weight: must be in [0, 1], got {cfg.search.ranker_weight}")
    if not all(0.0 <= w <= 1.0 for w in cfg.evaluate.search_ranker_weights):
        raise ConfigError(f"evaluate.search_ranker_weights: each must be in [0, 1], got "
                          f"{cfg.evaluate.search_ranker_weights}")
    if cfg.ranker.loss not in RANKER_LOSSES:
        raise ConfigError(f"ranker.loss: {cfg.ranker.loss!r} is not one of {', '.join(RANKER_LOSSES)}")
    if cfg.ranker.early_stopping not in RANKER_EARLY_STOPPING:
        raise ConfigError(f"ranker.early_stopping: {cfg.ranker.early_stopping!r} is not one of "
                          f"{', '.join(RANKER_EARLY_STOPPING)}")
    if cfg.rules.basket not in ("order", "session", "user_day"):
        raise ConfigError(f"rules.basket: {cfg.rules.basket!r} is not one of order, session, user_day")
    for key, value in (("rules.min_support", cfg.rules.min_support), ("rules.min_confidence", cfg.rules.min_confidence)):
        if not 0.0 < value <= 1.0:
            raise ConfigError(f"{key}: must be in (0, 1], got {value}")


def _check_source_columns(source: SourceConfig, key: str) -> None:
    from shoprec import schemas

    mapped = set(source.columns) | set(source.constants)
    unknown = sorted(mapped - set(schemas.MAPPABLE_COLUMNS))
    if unknown:
        raise ConfigError(f"{key}.columns.{unknown[0]}: not a canonical column (known: {', '.join(schemas.MAPPABLE_COLUMNS)})")
    for required in (schemas.USER_ID, schemas.EVENT_TIME, schemas.EVENT_TYPE):
        if required not in mapped:
            raise ConfigError(f"{key}.columns.{required}: required, and not mapped")
    for canonical, spec in source.columns.items():
        names = [spec] if isinstance(spec, str) else spec
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{key}.columns.{canonical}: expected a field name or a list of field names")
        if source.fields:
            missing = [n for n in names if n not in source.fields]
            if missing:
                raise ConfigError(f"{key}.columns.{canonical}: field {missing[0]!r} is not in {key}.fields")


def _is_local(path: str) -> bool:
    return not path.startswith(REMOTE_SCHEMES)


def absolute_path(path: str) -> str:
    """A local path made absolute against the current directory; URIs unchanged."""
    return str(Path(path).absolute()) if _is_local(path) else path


def _absolutise(cfg: Config) -> Config:
    mlflow = cfg.mlflow
    uri = mlflow.tracking_uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + absolute_path(uri[len("sqlite:///"):])
    artifacts = mlflow.artifact_location
    if artifacts is not None and "://" not in artifacts:
        artifacts = absolute_path(artifacts)
    return dataclasses.replace(
        cfg,
        warehouse=dataclasses.replace(cfg.warehouse, root=absolute_path(cfg.warehouse.root)),
        input=dataclasses.replace(cfg.input, path=absolute_path(cfg.input.path)),
        generate=dataclasses.replace(cfg.generate, out=absolute_path(cfg.generate.out)),
        ranker=dataclasses.replace(cfg.ranker, models_root=absolute_path(cfg.ranker.models_root)),
        mlflow=dataclasses.replace(mlflow, tracking_uri=uri, artifact_location=artifacts),
        privacy=dataclasses.replace(cfg.privacy, restricted_root=cfg.privacy.restricted_root and
                                    absolute_path(cfg.privacy.restricted_root)),
    )
