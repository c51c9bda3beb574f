"""Config loading: layering, environment overrides, and errors that name the key."""

from pathlib import Path

import pytest

from shoprec.config import ConfigError, flatten, load_config

PROJECT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "site.yaml") -> Path:
    (tmp_path / "base.yaml").write_text((PROJECT / "conf" / "base.yaml").read_text())
    path = tmp_path / name
    path.write_text(text)
    return path


def test_local_defaults_are_embedded():
    cfg = load_config(PROJECT / "conf/local.yaml", environ={})
    assert cfg.spark.master == "local[*]"
    assert cfg.warehouse.root == str(Path("var/warehouse").absolute())
    assert cfg.mlflow.tracking_uri == f"sqlite:///{Path('var/mlflow.db').absolute()}"
    assert cfg.source.format == "json"
    assert cfg.sources["rees46"].id_cast == {"user_id": "long", "item_id": "long"}


def test_cluster_config_keeps_remote_uris():
    cfg = load_config(PROJECT / "conf/cluster.yaml", environ={})
    assert cfg.warehouse.root.startswith("hdfs://")
    assert cfg.input.path.startswith("s3a://")
    assert cfg.mlflow.tracking_uri.startswith("http://")
    assert cfg.spark.master is None


def test_environment_overrides_single_keys():
    cfg = load_config(PROJECT / "conf/local.yaml", environ={
        "SHOPREC__WAREHOUSE__ROOT": "s3a://bucket/wh",
        "SHOPREC__CLEAN__SESSION_GAP_MINUTES": "20",
        "SHOPREC__CLEAN__BOTS__MAX_EVENTS_PER_MINUTE": "5",
        "SHOPREC__MLFLOW__REQUIRED": "false",
        "OTHER__CLEAN__SESSION_GAP_MINUTES": "99",
    })
    assert cfg.warehouse.root == "s3a://bucket/wh"
    assert cfg.clean.session_gap_minutes == 20
    assert cfg.clean.bots.max_events_per_minute == 5
    assert cfg.mlflow.required is False


@pytest.mark.parametrize("text, message", [
    ("clean:\n  session_gap_minute: 5\n", "unknown config key clean.session_gap_minute"),
    ("clean:\n  session_gap_minutes: soon\n", "clean.session_gap_minutes: expected int, got str 'soon'"),
    ("clean:\n  session_gap_minutes: 1440\n", "clean.session_gap_minutes: must be positive and under a day"),
    ("clean:\n  bots:\n    max_events_per_day: [1]\n", "clean.bots.max_events_per_day: expected int"),
    ("mlflow:\n  required: 1\n", "mlflow.required: expected bool"),
    ("input:\n  source: nosuch\n", "input.source: no source block named 'nosuch'"),
    ("sources:\n  shop:\n    format: xml\n    columns: {user_id: u, event_time: t, event_type: e}\n",
     "sources.shop.format: 'xml' is not one of"),
    ("sources:\n  shop:\n    format: json\n    columns: {user_id: u, event_time: t}\n",
     "sources.shop.columns.event_type: required"),
    ("sources:\n  shop:\n    format: json\n    columns: {user_id: u, event_time: t, event_type: e, colour: c}\n",
     "sources.shop.columns.colour: not a canonical column"),
    ("sources:\n  shop:\n    format: csv\n    fields: [u, t]\n    columns: {user_id: u, event_time: t, event_type: e}\n",
     "sources.shop.columns.event_type: field 'e' is not in sources.shop.fields"),
    ("sources:\n  shop:\n    format: csv\n    columns: {user_id: u, event_time: t, event_type: e}\n",
     "sources.shop.fields: a csv source must list its fields"),
    ("sources:\n  shop:\n    columns: {user_id: u}\n", "missing config key sources.shop.format"),
    ("profiles:\n  interaction_weights: {click: 1.0}\n", "profiles.interaction_weights.click: not an event type"),
    ("profiles:\n  segments: 0\n", "profiles.segments: must be positive"),
    ("als:\n  ranks: []\n", "als.ranks, als.reg_params, als.alphas: each needs at least one value"),
    ("als:\n  exclude: bought\n", "als.exclude: 'bought' is not one of purchased, seen, none"),
    ("als:\n  tuning_metric: auc\n", "als.tuning_metric: 'auc' is not one of"),
    ("als:\n  solver: sgd\n", "als.solver: 'sgd' is not one of mllib, cg"),
    ("als:\n  cg_steps: 0\n", "als.cg_steps: must be at least 1, got 0"),
    ("als:\n  top_k_search: hnsw\n", "als.top_k_search: 'hnsw' is not one of exact, ivf"),
    ("als:\n  ivf_lists: -1\n", "als.ivf_lists: must be 0 (about the square root of the items) or more"),
    ("als:\n  ivf_probes: 0\n", "als.ivf_probes: must be at least 1, got 0"),
    ("als:\n  ivf_recall_users: -5\n", "als.ivf_recall_users: must be 0 (no check) or more"),
    ("als:\n  relevant_event_types: [click]\n", "als.relevant_event_types: ['click']"),
    ("ranker:\n  loss: pairwise\n", "ranker.loss: 'pairwise' is not one of pointwise, listwise"),
    ("ranker:\n  early_stopping: loss\n", "ranker.early_stopping: 'loss' is not one of auc, ndcg"),
    ("rules:\n  basket: cart\n", "rules.basket: 'cart' is not one of order, session, user_day"),
    ("rules:\n  min_support: 0\n", "rules.min_support: must be in (0, 1]"),
    ("search:\n  ranker_weight: 1.5\n", "search.ranker_weight: must be in [0, 1]"),
    ("search:\n  validation_percent: 100\n", "search.validation_percent: must be in [0, 100)"),
    ("ranker:\n  validation_percent: -1\n", "ranker.validation_percent: must be in [0, 100)"),
    ("evaluate:\n  holdout_days: 0\n", "evaluate.holdout_days: must be positive"),
    ("clean:\n  pseudonym_map_broadcast_rows: 0\n", "clean.pseudonym_map_broadcast_rows: must be positive"),
])
def test_errors_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), environ={})
    assert message in str(err.value)


def test_missing_input_path_is_an_error_only_for_jobs_that_read_input(tmp_path):
    path = write(tmp_path, f"input:\n  path: {tmp_path / 'nowhere'}\n")
    assert load_config(path, environ={}).input.path == str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="input.path: .*nowhere does not exist"):
        load_config(path, environ={}, require_input=True)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml", environ={})
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "spark: [unclosed\n"), environ={})


def test_flatten_gives_dotted_params():
    cfg = load_config(PROJECT / "conf/local.yaml", environ={})
    flat = flatten(cfg)
    assert flat["clean.bots.max_events_per_minute"] == "40"
    assert flat["sources.rees46.format"] == "csv"
    assert flat["spark.conf.spark.driver.memory"] == "6g"
