"""The output tables: what each holds, column by column, and their registration in a Spark SQL catalog.

``TABLES`` is the one description of every table the jobs write: the job that writes it, its
partition columns, its meaning and each column's type (as Spark reads the Parquet) and meaning.
``docs/tables.md`` is generated from it (``python -m shoprec.catalog --markdown``), and the tests
compare it with the schemas the jobs really write.

After a job succeeds, :func:`register_tables` makes its tables Spark SQL tables over the Parquet
paths (``CREATE TABLE ... USING parquet LOCATION ...``) in the database ``catalog.database`` and
picks up new partitions, so analysts on the cluster can ``SELECT * FROM shoprec.recommendations``.
The restricted tables (real user ids, under ``privacy.restricted_root``) go to their own database,
``catalog.restricted_database``, so the metastore's grants can keep them from analysts.
With a Hive metastore (``spark.sql.catalogImplementation: hive``, the cluster's or the local
Derby one of ``conf/local.yaml``) the tables outlive the job.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass

from shoprec.config import RESTRICTED_TABLES
from shoprec.schemas import Reason

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    meaning: str


@dataclass(frozen=True)
class Table:
    name: str
    job: str
    partitioned_by: tuple[str, ...]
    meaning: str
    columns: tuple[Column, ...]

    @property
    def restricted(self) -> bool:
        """Holds real user ids: stored under the restricted root, registered in the restricted database."""
        return self.name in RESTRICTED_TABLES


def _table(name: str, job: str, partitioned_by: str, meaning: str, *columns: tuple[str, str, str]) -> Table:
    return Table(name, job, tuple(partitioned_by.split()), meaning, tuple(Column(*c) for c in columns))


RUN_DATE = ("run_date", "date", "the run date (logical date) of the job run that wrote the snapshot")
USER = ("user_id", "string", "the user's pseudonym (32 hex: HMAC-SHA256 of the shop's user id, privacy.*); "
                              "the shop's own id when privacy.pseudonymize is false")
ITEM = ("item_id", "string", "the shop's item (product) id")
RANK = ("rank", "int", "1 = best")
FAVOURITES = "array<struct<value:string,share:double>>"

# The canonical event's columns: events_clean and events_bot.
EVENT_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("event_id", "string", "the source's event id, or a 32-hex digest of the event's content"),
    ("user_id", "string", "the user's pseudonym: the first 32 hex digits of HMAC-SHA256(secret, the shop's user id); "
                          "the shop's own id (canonical text: integer with id_cast long) when privacy.pseudonymize "
                          "is false; user_id_map maps back"),
    ("item_id", "string", "the shop's item id; null only for searches"),
    ("event_type", "string", "view, cart, remove_from_cart, purchase, search or rating"),
    ("event_time", "timestamp", "when the event happened, UTC"),
    ("session_id", "string", "the source's session id, or one derived from clean.session_gap_minutes of inactivity "
                             "(a session continues across daily batches, midnight included)"),
    ("price", "double", "unit price, >= 0; null where the source has none"),
    ("quantity", "int", "units; null where the source has none"),
    ("category", "string", "item category, trimmed and lower-cased; null where absent"),
    ("brand", "string", "item brand, trimmed and lower-cased; null where absent"),
    ("query", "string", "search text (search events)"),
    ("rating", "double", "stars given (rating events)"),
    ("order_id", "string", "the order a purchase belongs to, when the source has it"),
    ("source", "string", "the source block of the config that read the row"),
    ("source_file", "string", "the raw file the row came from"),
    ("ingest_run_id", "string", "the MLflow run id of the clean_events run that wrote the row"),
    ("event_date", "date", "the UTC date of event_time"),
    ("ingest_batch", "date", "the landing date of the raw files the row came from"),
)

TABLES: tuple[Table, ...] = (
    _table(
        "events_clean", "clean_events", "event_date ingest_batch",
        "Every valid, deduplicated, non-bot event in the canonical schema. One row per event.",
        *EVENT_COLUMNS,
    ),
    _table(
        "events_bot", "clean_events", "event_date ingest_batch",
        "The valid, deduplicated events of users' bot days (clean.bots.*), in the schema of events_clean: what the "
        "bot rules filtered, and what later batches count when they judge the same days. Sessions are "
        "derived among a user's bot rows only.",
        *EVENT_COLUMNS,
    ),
    _table(
        "events_quarantine", "clean_events", "ingest_batch",
        "Raw records that failed parsing or validation, with the reason. Nothing is dropped silently.",
        ("reason", "string", "the first failed check, in this order: " + ", ".join(Reason.ALL)),
        ("detail", "string", "the offending value or a short explanation"),
        ("raw_record", "string", "the raw line as read, or a Parquet row as JSON"),
        ("source", "string", "the source block of the config"),
        ("source_file", "string", "the raw file the record came from"),
        ("ingest_run_id", "string", "the MLflow run id of the clean_events run"),
        ("ingest_batch", "date", "the landing date of the raw file"),
    ),
    _table(
        "user_id_map", "clean_events", "ingest_batch",
        "Restricted: each pseudonym and the shop's user id it stands for, for every user of a batch's valid "
        "events (privacy.pseudonymize). The only way back from the analysts' tables to a person.",
        ("user_pseudonym", "string", "the user_id of every other table"),
        ("user_id", "string", "the shop's user id (canonical text)"),
        ("ingest_batch", "date", "the landing date of the raw files the user's events came from"),
    ),
    _table(
        "interactions", "build_profiles", "run_date",
        "Implicit feedback per (user, item): decayed confidence and event counts over the history window.",
        USER, ITEM,
        ("confidence", "double", "sum of profiles.interaction_weights[type] x 0.5^(age / interaction_half_life_days); "
                                  "a rating weighs its stars"),
        ("n_view", "bigint", "views"), ("n_cart", "bigint", "add-to-carts"),
        ("n_remove_from_cart", "bigint", "removals from the cart"), ("n_purchase", "bigint", "purchases"),
        ("n_rating", "bigint", "ratings"), ("last_rating", "double", "the latest rating given"),
        ("first_event_time", "timestamp", "first event of the pair"),
        ("last_event_time", "timestamp", "last event of the pair"),
        RUN_DATE,
    ),
    _table(
        "user_profile", "build_profiles", "run_date",
        "One row per user active in the history window: RFM, funnel, sessions, price band, favourites, segment.",
        USER,
        ("recency_days", "double", "days from the last purchase (or, with none, the last event) to the end of the run date"),
        ("frequency", "bigint", "purchase events"), ("monetary", "double", "sum of price x quantity of purchases"),
        ("n_view", "bigint", "views"), ("n_cart", "bigint", "add-to-carts"),
        ("n_remove_from_cart", "bigint", "removals from the cart"), ("n_purchase", "bigint", "purchase events"),
        ("n_rating", "bigint", "ratings"), ("n_search", "bigint", "searches"),
        ("view_to_cart", "double", "carts / views (null when there are no views)"),
        ("cart_to_purchase", "double", "purchases / carts (null when there are no carts)"),
        ("view_to_purchase", "double", "purchases / views (null when there are no views)"),
        ("active_days", "bigint", "days with at least one event"), ("sessions", "bigint", "sessions"),
        ("events_per_session", "double", "mean events per session"),
        ("avg_session_minutes", "double", "mean session length"),
        ("avg_purchase_price", "double", "mean unit price of purchases"),
        ("price_band", "int", "band of avg_purchase_price (or the median viewed price) in profiles.price_bands; 0 = cheapest"),
        ("favourite_categories", FAVOURITES, "top profiles.top_n categories by share of the user's item events"),
        ("favourite_brands", FAVOURITES, "top profiles.top_n brands by share of the user's item events"),
        ("first_event_time", "timestamp", "first event in the window"),
        ("last_event_time", "timestamp", "last event in the window"),
        ("segment", "int", "KMeans cluster (k = profiles.segments) of standardised, log-scaled RFM and activity features"),
        RUN_DATE,
    ),
    _table(
        "item_profile", "build_profiles", "run_date",
        "One row per item with events in the history window: popularity, conversion, price, content words.",
        ITEM,
        ("category", "string", "latest non-null category"), ("brand", "string", "latest non-null brand"),
        *((f"{kind}_{days}d", "bigint", f"{kind} in the last {days} day{'s' if days > 1 else ''}")
          for days in (1, 7, 30) for kind in ("views", "carts", "purchases")),
        ("views_decayed", "double", "views, decayed by age (profiles.half_life_days)"),
        ("carts_decayed", "double", "carts, decayed by age"),
        ("purchases_decayed", "double", "purchases, decayed by age"),
        ("ratings_decayed", "double", "ratings, decayed by age"),
        ("distinct_buyers", "bigint", "users who bought it"), ("distinct_viewers", "bigint", "users who viewed it"),
        ("price_min", "double", "lowest price seen"), ("price_avg", "double", "mean price seen"),
        ("price_max", "double", "highest price seen"), ("price_last", "double", "latest price seen"),
        ("rating_avg", "double", "mean rating"),
        ("first_event_time", "timestamp", "first event"), ("last_event_time", "timestamp", "last event"),
        ("view_to_cart", "double", "carts / views"), ("view_to_purchase", "double", "purchases / views"),
        ("content_tokens", "array<string>", "every level of the category path and brand:<brand>; their hashed TF-IDF "
                                            "are the content features"),
        RUN_DATE,
    ),
    _table(
        "popular_items", "build_profiles", "run_date",
        "The most popular items overall and per category (decayed, weighted event counts).",
        ("scope", "string", "all (the whole shop) or category"),
        ("category", "string", "the category (scope category); null for scope all"),
        RANK, ITEM, ("score", "double", "the interaction weights applied to the decayed view/cart/purchase/rating counts"), RUN_DATE,
    ),
    _table(
        "content_similar_items", "build_profiles", "run_date",
        "Items most similar by catalogue content (hashed TF-IDF cosine): candidates for cold items.",
        ITEM, RANK, ("similar_item_id", "string", "the similar item"),
        ("score", "double", "cosine similarity"), RUN_DATE,
    ),
    _table(
        "als_recs", "train_als", "run_date",
        "Top-N items per user from implicit ALS, excluding what the user bought (als.exclude).",
        USER, RANK, ITEM, ("score", "double", "ALS score (dot product of factors)"), RUN_DATE,
    ),
    _table(
        "similar_items", "train_als", "run_date",
        "Items nearest in ALS item-factor space (cosine).",
        ITEM, RANK, ("similar_item_id", "string", "the similar item"),
        ("score", "double", "cosine similarity of item factors"), RUN_DATE,
    ),
    _table(
        "als_index", "train_als", "run_date",
        "Which factor row of the registered ALS model belongs to which user or item id.",
        ("entity", "string", "user or item"), ("id", "string", "the user or item id"),
        ("factor_index", "int", "the integer id inside the registered ALS model"), RUN_DATE,
    ),
    _table(
        "cold_start", "train_als", "run_date",
        "Users and items ALS has no factors for, and why: they get popularity or content candidates.",
        ("entity", "string", "user or item"), ("id", "string", "the user or item id"),
        ("reason", "string", "why it is cold (no interactions in the ALS training data)"), RUN_DATE,
    ),
    _table(
        "assoc_rules", "mine_rules", "run_date",
        "FP-Growth association rules over purchase baskets.",
        ("antecedent", "array<string>", "items in the basket, sorted"),
        ("consequent", "array<string>", "the item the rule predicts (one)"),
        ("support", "double", "share of baskets holding antecedent and consequent"),
        ("confidence", "double", "P(consequent | antecedent)"),
        ("lift", "double", "confidence / P(consequent)"), RUN_DATE,
    ),
    _table(
        "bought_together", "mine_rules", "run_date",
        "'Bought together' per item: single-item-antecedent rules, best lift first.",
        ITEM, RANK, ("bought_with_item_id", "string", "the item bought with it"),
        ("lift", "double", "rule lift"), ("confidence", "double", "rule confidence"),
        ("support", "double", "rule support"), RUN_DATE,
    ),
    _table(
        "training_set", "build_training_set", "run_date split shard",
        "The ranker's examples: candidates with features from before the label window and labels from it.",
        USER, ITEM,
        ("user_bucket", "int", "hashed user id bucket (id embedding input)"),
        ("item_bucket", "int", "hashed item id bucket"),
        ("category_bucket", "int", "hashed category bucket"), ("brand_bucket", "int", "hashed brand bucket"),
        ("segment", "int", "the user's segment"), ("price_band", "int", "the user's price band"),
        ("dense", "array<float>", "numeric features, named in the partition's _feature_spec.json"),
        ("label", "double", "1 if the user carted or bought the item in the label window, else 0"),
        RUN_DATE, ("split", "string", "train or validation (whole users)"),
        ("shard", "int", "the Horovod worker that reads the rows"),
    ),
    _table(
        "search_training_set", "build_training_set", "run_date split shard",
        "The search ranker's examples: each search of the label window that was followed by an item "
        "event, its text matches with the ranker's features from before the window, labelled by the "
        "follow-ups.",
        USER, ("search_id", "string", "the search event's id (the matches of one search form one list)"), ITEM,
        ("user_bucket", "int", "hashed user id bucket (id embedding input)"),
        ("item_bucket", "int", "hashed item id bucket"),
        ("category_bucket", "int", "hashed category bucket"), ("brand_bucket", "int", "hashed brand bucket"),
        ("segment", "int", "the user's segment"), ("price_band", "int", "the user's price band"),
        ("dense", "array<float>", "numeric features (the ranker's, then text_score and text_rank), named in "
                                  "the partition's _feature_spec.json"),
        ("label", "double", "1 if the searcher acted on the item (search.followup_event_types) after "
                            "the search in its session, else 0"),
        RUN_DATE, ("split", "string", "train or validation (whole users)"),
        ("shard", "int", "the Horovod worker that reads the rows"),
    ),
    _table(
        "recommendations", "score", "run_date",
        "The product: top-K items per user, ranked by the deep ranker, after the business rules.",
        USER, RANK, ITEM, ("score", "double", "ranker probability (popular fill-ins: below every ranked item)"),
        ("source", "string", "the candidate source that proposed the item (als, rules, similar, content, popular)"),
        ("reason", "string", "why it is recommended, for display ('similar to 1602', 'bought with 1381', ...)"), RUN_DATE,
    ),
    _table(
        "search_results", "search_rerank", "run_date",
        "Recent searches answered: text matches ordered per user by the search ranker (or, without one, "
        "the ranker's order fused with the text order).",
        USER, ("query", "string", "the search text"), RANK, ITEM,
        ("score", "double", "search ranker probability (without one: the ranker's)"),
        ("text_score", "double", "IDF-weighted text match score"),
        RUN_DATE,
    ),
    _table(
        "eval_metrics", "evaluate", "run_date",
        "Offline evaluation on the hold-out days: every recommender and baseline, every metric and K.",
        ("model", "string", "popularity, als, rules, content, pipeline (the whole ranked product), "
                            "pipeline_uncapped (the same without the category cap), search_text, "
                            "search_ranker, search_fused_<weight> (evaluate.search_ranker_weights)"),
        ("metric", "string", "precision, recall, ndcg, map, hit_rate, coverage, diversity, novelty, users_served"),
        ("k", "int", "the cut-off"), ("value", "double", "the metric's value"), RUN_DATE,
    ),
)

BY_NAME = {table.name: table for table in TABLES}


def schema_ddl(table: Table) -> str:
    """The table's documented schema as a DDL string, for ``spark.read.schema(...)``."""
    return ", ".join(f"{_quote(c.name)} {c.type}" for c in table.columns)


def _quote(identifier: str) -> str:
    return "`" + identifier.replace("`", "``") + "`"


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# A Hive metastore keeps at most 256 characters of a column comment (docs/tables.md has them whole).
HIVE_COLUMN_COMMENT_CHARS = 256


def _short(text: str) -> str:
    return text if len(text) <= HIVE_COLUMN_COMMENT_CHARS else text[:HIVE_COLUMN_COMMENT_CHARS - 3] + "..."


def create_table_sql(table: Table, name: str, path: str) -> str:
    """The DDL of ``table`` over the Parquet at ``path``: the documented schema, with the meanings
    as comments (for DESCRIBE in the analysts' SQL client), so an empty table registers too."""
    columns = ", ".join(f"{_quote(c.name)} {c.type} COMMENT {_literal(_short(c.meaning))}" for c in table.columns)
    partitioning = f" PARTITIONED BY ({', '.join(map(_quote, table.partitioned_by))})" if table.partitioned_by else ""
    return (f"CREATE TABLE {name} ({columns}) USING parquet{partitioning} "
            f"LOCATION {_literal(path)} COMMENT {_literal(table.meaning)}")


def register_tables(spark, cfg, job: str) -> list[str]:
    """Register (or refresh) the tables ``job`` writes as Spark SQL tables; the names registered.

    A table whose path does not exist yet is skipped. New partitions are picked up every time.
    Registration is best effort: a catalog that refuses is logged, and the job's output stands.
    """
    if not cfg.catalog.register:
        return []
    from shoprec.io.fs import HadoopFS

    fs = HadoopFS(spark)
    registered = []
    databases_ready = set()
    for table in (t for t in TABLES if t.job == job):
        path = cfg.table_path(table.name)
        database = cfg.catalog.restricted_database if table.restricted else cfg.catalog.database
        name = f"{_quote(database)}.{_quote(table.name)}"
        try:
            if not fs.exists(path):
                continue
            if database not in databases_ready:
                # Asked first: on a Hive metastore, CREATE ... IF NOT EXISTS of a database that
                # exists logs a "created concurrently" warning on every run.
                if not spark.catalog.databaseExists(database):
                    spark.sql(f"CREATE DATABASE IF NOT EXISTS {_quote(database)}")
                databases_ready.add(database)
            if not spark.catalog.tableExists(f"{database}.{table.name}"):
                spark.sql(create_table_sql(table, name, path))
            if table.partitioned_by:
                spark.sql(f"ALTER TABLE {name} RECOVER PARTITIONS")
            spark.catalog.refreshTable(f"{database}.{table.name}")
            registered.append(f"{database}.{table.name}")
        except Exception as err:  # the table is written; a catalog problem must not fail the run
            log.warning("catalog: could not register %s at %s (%s)", name, path, err)
    log.info("catalog: registered %s", ", ".join(registered) or "nothing")
    return registered


def schema_differences(spark, cfg) -> dict[str, str]:
    """For each table present in the warehouse: how its Parquet schema differs from ``TABLES``."""
    from pyspark.errors import AnalysisException

    from shoprec.io.fs import HadoopFS

    fs = HadoopFS(spark)
    differences = {}
    for table in TABLES:
        path = cfg.table_path(table.name)
        if not fs.exists(path):
            continue
        try:
            written = [(f.name, f.dataType.simpleString()) for f in spark.read.parquet(path).schema.fields]
        except AnalysisException as err:
            if "UNABLE_TO_INFER_SCHEMA" in str(err):  # a table with no rows yet has no schema to compare
                continue
            raise
        documented = [(c.name, c.type) for c in table.columns]
        if written != documented:
            differences[table.name] = f"written {written}, documented {documented}"
    return differences


def render_markdown() -> str:
    """``docs/tables.md``: every table, its partitioning and columns."""
    lines = [
        "# Output tables",
        "",
        "Generated from `lib/shoprec/catalog.py` by `make docs`; do not edit by hand.",
        "",
        "Every table is Parquet under the warehouse root (`warehouse.root`), one directory per table",
        "(the restricted tables, which hold the shop's real user ids, under `privacy.restricted_root`),",
        "partitioned Hive-style (`run_date=2026-01-08/`). Jobs replace whole partitions atomically",
        "(each partition holds a `_lineage.json` naming the MLflow run that wrote it). After each job the",
        "tables are registered as Spark SQL tables in the database `catalog.database` (default",
        "`shoprec`; the restricted ones in `catalog.restricted_database`, default `shoprec_restricted`);",
        "`shoprec query` reads the warehouse root with DuckDB under the same names. Every `user_id`",
        "outside the restricted tables is a pseudonym (README \"Privacy\").",
        "",
        "| table | written by | partitioned by | access | holds |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| [{t.name}](#{t.name}) | {t.job} | {', '.join(t.partitioned_by)} | "
              f"{'restricted' if t.restricted else 'analysts'} | {t.meaning} |" for t in TABLES]
    for table in TABLES:
        lines += ["", f"## {table.name}", "", table.meaning, "",
                  f"Written by `{table.job}`; partitioned by {', '.join(f'`{c}`' for c in table.partitioned_by)}.", "",
                  "| column | type | meaning |", "|---|---|---|"]
        lines += [f"| {c.name}{' (partition)' if c.name in table.partitioned_by else ''} | `{c.type}` | {c.meaning} |"
                  for c in table.columns]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The output tables' documentation.")
    parser.add_argument("--markdown", metavar="FILE", help="write docs/tables.md here ('-': stdout)")
    args = parser.parse_args(argv)
    text = render_markdown()
    if args.markdown in (None, "-"):
        sys.stdout.write(text)
    else:
        with open(args.markdown, "w", encoding="utf-8") as out:
            out.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
