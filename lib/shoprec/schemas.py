"""Canonical table schemas and column-name constants: the one place column names are spelled."""

from __future__ import annotations

from pyspark.sql import types as T

EVENT_ID = "event_id"
USER_ID = "user_id"
ITEM_ID = "item_id"
EVENT_TYPE = "event_type"
EVENT_TIME = "event_time"
SESSION_ID = "session_id"
ORDER_ID = "order_id"
PRICE = "price"
QUANTITY = "quantity"
CATEGORY = "category"
BRAND = "brand"
QUERY = "query"
RATING = "rating"
SOURCE = "source"
SOURCE_FILE = "source_file"
INGEST_BATCH = "ingest_batch"
INGEST_RUN_ID = "ingest_run_id"
EVENT_DATE = "event_date"

RAW_RECORD = "raw_record"
REASON = "reason"
DETAIL = "detail"

# The values event_type may take after mapping.
EVENT_TYPES = ("view", "cart", "remove_from_cart", "purchase", "search", "rating")

# Canonical columns a source block may map (the rest are derived by the job).
MAPPABLE_COLUMNS = (
    EVENT_ID, USER_ID, ITEM_ID, EVENT_TYPE, EVENT_TIME, SESSION_ID,
    PRICE, QUANTITY, CATEGORY, BRAND, QUERY, RATING, ORDER_ID,
)

# events_clean columns (events_bot's too) nearly unique within each file: written without a Parquet
# dictionary (shoprec.io.tables.parquet_writer).
EVENTS_NEARLY_UNIQUE = (EVENT_ID, EVENT_TIME, SESSION_ID)

# events_clean: one row per kept event, partitioned by event_date then ingest_batch.
EVENTS_CLEAN = T.StructType([
    T.StructField(EVENT_ID, T.StringType(), False),
    T.StructField(USER_ID, T.StringType(), False),
    T.StructField(ITEM_ID, T.StringType(), True),
    T.StructField(EVENT_TYPE, T.StringType(), False),
    T.StructField(EVENT_TIME, T.TimestampType(), False),
    T.StructField(SESSION_ID, T.StringType(), False),
    T.StructField(PRICE, T.DoubleType(), True),
    T.StructField(QUANTITY, T.IntegerType(), True),
    T.StructField(CATEGORY, T.StringType(), True),
    T.StructField(BRAND, T.StringType(), True),
    T.StructField(QUERY, T.StringType(), True),
    T.StructField(RATING, T.DoubleType(), True),
    T.StructField(ORDER_ID, T.StringType(), True),
    T.StructField(SOURCE, T.StringType(), False),
    T.StructField(SOURCE_FILE, T.StringType(), False),
    T.StructField(INGEST_RUN_ID, T.StringType(), False),
    T.StructField(EVENT_DATE, T.DateType(), False),
    T.StructField(INGEST_BATCH, T.DateType(), False),
])

# events_quarantine: one row per rejected raw record, partitioned by ingest_batch.
EVENTS_QUARANTINE = T.StructType([
    T.StructField(REASON, T.StringType(), False),
    T.StructField(DETAIL, T.StringType(), True),
    T.StructField(RAW_RECORD, T.StringType(), True),
    T.StructField(SOURCE, T.StringType(), False),
    T.StructField(SOURCE_FILE, T.StringType(), False),
    T.StructField(INGEST_RUN_ID, T.StringType(), False),
    T.StructField(INGEST_BATCH, T.DateType(), False),
])


class Reason:
    """Quarantine reason codes, in the order the checks are applied (the first failing one wins)."""

    UNPARSEABLE = "unparseable"
    BAD_ENCODING = "bad_encoding"
    FIELD_COUNT = "field_count_mismatch"
    FIELD_TOO_LONG = "field_too_long"
    MISSING_USER_ID = "missing_user_id"
    MISSING_ITEM_ID = "missing_item_id"
    BAD_ID = "bad_id"
    MISSING_EVENT_TYPE = "missing_event_type"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    BAD_TIMESTAMP = "bad_timestamp"
    TIMESTAMP_TOO_OLD = "timestamp_before_floor"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    BAD_PRICE = "bad_price"
    NEGATIVE_PRICE = "negative_price"
    ABSURD_PRICE = "absurd_price"
    BAD_QUANTITY = "bad_quantity"
    BAD_RATING = "bad_rating"
    MISSING_QUERY = "missing_query"

    ALL = (
        UNPARSEABLE, BAD_ENCODING, FIELD_COUNT, FIELD_TOO_LONG, MISSING_USER_ID, MISSING_ITEM_ID, BAD_ID, MISSING_EVENT_TYPE,
        UNKNOWN_EVENT_TYPE, BAD_TIMESTAMP, TIMESTAMP_TOO_OLD, TIMESTAMP_IN_FUTURE, BAD_PRICE,
        NEGATIVE_PRICE, ABSURD_PRICE, BAD_QUANTITY, BAD_RATING, MISSING_QUERY,
    )


def require_columns(df, columns, what: str) -> None:
    """Raise ``ValueError`` naming the columns of ``columns`` that ``df`` lacks."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing required column(s) {', '.join(missing)}; have {', '.join(df.columns)}")
