"""Pure transforms of raw shop logs into canonical, validated, deduplicated, sessionized events.

Every function here takes and returns DataFrames; none reads or writes storage. The job
``shoprec.jobs.clean_events`` chains them:

    parse_records -> to_canonical -> (quarantine | mark_duplicates -> flag_bots -> sessionize)

Earlier batches' stored rows of the same days may join the events at ``mark_duplicates``
(flagged ``_stored``): a new event is a duplicate of a stored one, a day's stored events
count towards its bot limits, and a new event can continue a stored session.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.config import MINUTES_PER_DAY, BotRules, CleanConfig, SourceConfig

FIELDS = "_fields"
PARSE_ERROR = "_parse_error"
CONTENT_HASH = "_content_hash"
DUPLICATE = "_duplicate"
BOT = "_bot"
# Marks the rows earlier batches stored among a run's events: they are compared and counted
# with the new events (duplicates, bot limits) but are not the run's own.
STORED = "_stored"
NEW_ON_DAY = "_new_on_day"

DUPLICATE_EXACT = "exact"
DUPLICATE_EVENT_ID = "event_id"
DUPLICATE_EARLIER_BATCH = "earlier_batch"

# Columns whose values define "the same event" for exact-duplicate detection and derived event ids.
CONTENT_COLUMNS = (
    S.USER_ID, S.ITEM_ID, S.EVENT_TYPE, S.EVENT_TIME, S.SESSION_ID, S.PRICE,
    S.QUANTITY, S.CATEGORY, S.BRAND, S.QUERY, S.RATING, S.ORDER_ID,
)
MAPPABLE = S.MAPPABLE_COLUMNS
_ZONED = r"(Z|z|[+-]\d{2}:?\d{2}|\s+UTC)$"
_INTEGER = r"^[+-]?\d+$"


def header_line(source: SourceConfig) -> str | None:
    """The exact header line a CSV source's files start with, or None if they have none."""
    if source.format != "csv" or not source.header:
        return None
    return source.delimiter.join(source.fields)


def parse_records(raw: DataFrame, source: SourceConfig, raw_record_col: str = S.RAW_RECORD) -> DataFrame:
    """Split each raw record into its source fields, as strings, and drop CSV header lines.

    Args:
        raw: one row per raw record (a text line, or a Parquet row rendered as JSON).
        source: the source block describing the record layout.

    Returns:
        ``raw``'s columns plus ``_fields`` (struct of the source's fields, all strings) and
        ``_parse_error`` (string, null when the record parsed): ``unparseable`` for malformed
        JSON, empty lines or a NUL byte, ``bad_encoding`` for bytes that are not UTF-8 (or
        already replaced by U+FFFD), ``field_count_mismatch`` for a CSV line with too few or too many fields.
    """
    S.require_columns(raw, [raw_record_col], "parse_records")
    record = F.col(raw_record_col)
    blank = record.isNull() | (F.trim(record) == "") | record.contains("\u0000")
    # Spark's text reader keeps a line's bytes as they are: invalid UTF-8 is caught here, and a
    # U+FFFD (what a decoder upstream made of invalid bytes) is the same damage.
    not_utf8 = ~F.is_valid_utf8(record) | record.contains("\ufffd")
    header = header_line(source)
    if header is not None:
        raw = raw.where(record.isNull() | (F.rtrim(F.regexp_replace(record, "\r$", "")) != header))

    if source.format == "csv":
        names = list(source.fields)
        ddl = ", ".join(f"`{name}` string" for name in names)
        parsed = F.from_csv(F.regexp_replace(record, "\r$", ""), ddl, {"sep": source.delimiter, "mode": "PERMISSIVE"})
        # Count delimiters outside quoted sections: Spark fills missing trailing fields with nulls silently.
        unquoted = F.regexp_replace(record, r'"([^"]|"")*"', "")
        field_count = F.size(F.split(unquoted, _regex_quote(source.delimiter), -1))
        error = (
            F.when(blank, F.lit(S.Reason.UNPARSEABLE))
            .when(not_utf8, F.lit(S.Reason.BAD_ENCODING))
            .when(field_count != len(names), F.lit(S.Reason.FIELD_COUNT))
        )
    else:
        names = sorted(mapped_fields(source))
        ddl = ", ".join(f"`{name}` string" for name in names) + ", `_corrupt` string"
        parsed = F.from_json(record, ddl, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt"})
        # Read from the parsed column, not the expression: JSON parsing is the costliest step, once a row.
        fields = F.col(FIELDS)
        error = (F.when(blank, F.lit(S.Reason.UNPARSEABLE))
                 .when(not_utf8, F.lit(S.Reason.BAD_ENCODING))
                 .when(fields.isNull() | fields["_corrupt"].isNotNull(), F.lit(S.Reason.UNPARSEABLE)))
    return raw.withColumn(FIELDS, parsed).withColumn(PARSE_ERROR, error)


def _regex_quote(text: str) -> str:
    return "".join("\\" + ch if not ch.isalnum() else ch for ch in text)


def mapped_fields(source: SourceConfig) -> set[str]:
    """Every source field a source block maps onto a canonical column."""
    names: set[str] = set()
    for spec in source.columns.values():
        names.update([spec] if isinstance(spec, str) else spec)
    return names


def _field(source: SourceConfig, canonical: str) -> Column:
    """The raw string of a canonical column: its source field(s) (first non-empty wins) or constant."""
    if canonical in source.constants:
        return F.lit(str(source.constants[canonical]))
    spec = source.columns.get(canonical)
    if spec is None:
        return F.lit(None).cast("string")
    names = [spec] if isinstance(spec, str) else spec
    values = [F.nullif(F.trim(F.col(FIELDS)[name]), F.lit("")) for name in names]
    return values[0] if len(values) == 1 else F.coalesce(*values)


def _clean_id(value: Column, cast: str | None) -> tuple[Column, Column]:
    """(normalised id, is-malformed flag) for an id column."""
    if cast == "long":
        number = F.when(value.rlike(_INTEGER), value).try_cast("long")
        return number.cast("string"), value.isNotNull() & number.isNull()
    return value, F.lit(False)


def _parse_timestamp(value: Column, source: SourceConfig) -> Column:
    """Parse a raw timestamp string per the source's format and time zone into a UTC timestamp."""
    fmt = source.timestamp_format
    if fmt in ("unix", "unix_ms"):
        seconds = F.when(value.rlike(r"^[+-]?\d+(\.\d+)?$"), value).try_cast("double")
        if fmt == "unix_ms":
            seconds = seconds / 1000.0
        return F.timestamp_seconds(seconds)
    if fmt == "iso8601":
        parsed = value.try_cast("timestamp")
        zoned = value.rlike(_ZONED)
    else:
        parsed = F.try_to_timestamp(value, F.lit(fmt))
        zoned = F.lit(any(token in fmt for token in ("X", "x", "Z", "z", "V", "'UTC'")))
    if source.timezone.upper() in ("UTC", "Z", "GMT"):
        return parsed
    # Zone-less local times are in the source's time zone; the session time zone is UTC.
    return F.when(zoned, parsed).otherwise(F.to_utc_timestamp(parsed, source.timezone))


def content_hash(*columns: Column) -> Column:
    """A 128-bit hex digest of the columns' values (two salted xxHash64s: cheap, and collision-free
    in practice at trillions of rows; nulls and positions are part of the digest)."""
    halves = [F.lpad(F.hex(F.xxhash64(F.lit(salt), *columns)), 16, "0") for salt in ("shoprec-a", "shoprec-b")]
    return F.lower(F.concat(*halves))


def to_canonical(
    parsed: DataFrame,
    source: SourceConfig,
    source_name: str,
    limits: CleanConfig,
    batch_col: str = S.INGEST_BATCH,
) -> DataFrame:
    """Map parsed source fields onto the canonical event columns, normalise them and validate.

    Args:
        parsed: output of :func:`parse_records`.
        source: the source block (column mapping, event-type mapping, formats, id casts).
        source_name: recorded in the ``source`` column.
        limits: validation limits (time floor, future skew, price and quantity bounds).
        batch_col: the column holding each row's batch date (``YYYY-MM-DD``), the logical date
            of its data; events after the end of that day plus ``limits.max_future_skew_hours``
            are in the future.

    Returns:
        One row per input row with the canonical columns ``event_id`` (string; derived from the
        content when the source has none), ``user_id``, ``item_id`` (string), ``event_type``
        (string, one of ``schemas.EVENT_TYPES``), ``event_time`` (timestamp, UTC),
        ``session_id`` (string, null when the source has none), ``price`` (double),
        ``quantity`` (int), ``category``, ``brand`` (lower-cased strings), ``query`` (string),
        ``rating`` (double), ``order_id`` (string, null when the source has none), ``source`` (string), ``event_date`` (date of ``event_time``),
        plus ``_content_hash`` (string), ``reason`` (quarantine reason code or null when the row
        is valid) and ``detail`` (the offending value), and the input's other columns except
        ``_fields``.
    """
    S.require_columns(parsed, [FIELDS, PARSE_ERROR, batch_col], "to_canonical")
    # Three projections, each naming what the next one reads: Spark keeps a projection apart when
    # collapsing it would repeat costly expressions, so every field is parsed once per row.
    raw = {c: f"_raw_{c}" for c in MAPPABLE}
    fields = parsed.select("*", *[_field(source, c).alias(raw[c]) for c in MAPPABLE]).drop(FIELDS)

    user_id, bad_user = _clean_id(F.col(raw[S.USER_ID]), source.id_cast.get(S.USER_ID))
    item_id, bad_item = _clean_id(F.col(raw[S.ITEM_ID]), source.id_cast.get(S.ITEM_ID))
    raw_type = F.lower(F.col(raw[S.EVENT_TYPE]))
    if source.event_types:
        mapping = F.create_map(*[F.lit(x) for pair in source.event_types.items() for x in (pair[0].lower(), pair[1])])
        event_type = mapping[raw_type]
    else:
        event_type = raw_type
    batch_end = F.date_add(F.to_date(F.col(batch_col)), 1).cast("timestamp")
    typed = fields.select(
        "*",
        user_id.alias(S.USER_ID), bad_user.alias("_bad_user"),
        item_id.alias(S.ITEM_ID), bad_item.alias("_bad_item"),
        event_type.alias(S.EVENT_TYPE),
        _parse_timestamp(F.col(raw[S.EVENT_TIME]), source).alias(S.EVENT_TIME),
        F.timestamp_add("HOUR", F.lit(limits.max_future_skew_hours), batch_end).alias("_ceiling"),
        F.col(raw[S.SESSION_ID]).alias(S.SESSION_ID),
        F.col(raw[S.PRICE]).try_cast("double").alias(S.PRICE),
        F.when(F.col(raw[S.QUANTITY]).rlike(_INTEGER), F.col(raw[S.QUANTITY])).try_cast("int").alias(S.QUANTITY),
        F.lower(F.col(raw[S.CATEGORY])).alias(S.CATEGORY),
        F.lower(F.col(raw[S.BRAND])).alias(S.BRAND),
        F.col(raw[S.QUERY]).alias(S.QUERY),
        F.col(raw[S.RATING]).try_cast("double").alias(S.RATING),
        F.col(raw[S.ORDER_ID]).alias(S.ORDER_ID),
    )

    def col(name: str) -> Column:
        return F.col(name)

    def finite(c: Column) -> Column:
        return ~F.isnan(c) & (F.abs(c) != float("inf"))

    price, quantity, rating, event_time = col(S.PRICE), col(S.QUANTITY), col(S.RATING), col(S.EVENT_TIME)
    too_long = F.coalesce(*[
        F.when(F.length(col(raw[c])) > limits.max_field_chars,
               F.concat(F.lit(f"{c}: "), F.length(col(raw[c])).cast("string"), F.lit(" chars")))
        for c in MAPPABLE])
    checks = [
        (col(PARSE_ERROR).isNotNull(), col(PARSE_ERROR),
         F.when(col(PARSE_ERROR) == S.Reason.BAD_ENCODING,
                # Spark may break base64 into MIME lines: one line keeps the detail copyable.
                F.concat(F.lit("base64:"), F.translate(F.base64(col(S.RAW_RECORD).cast("binary")), "\r\n", "")))),
        (col("_too_long").isNotNull(), F.lit(S.Reason.FIELD_TOO_LONG), col("_too_long")),
        (col(S.USER_ID).isNull() & ~col("_bad_user"), F.lit(S.Reason.MISSING_USER_ID), F.lit(None)),
        (col(S.ITEM_ID).isNull() & ~col("_bad_item") & (col(S.EVENT_TYPE) != "search"),
         F.lit(S.Reason.MISSING_ITEM_ID), F.lit(None)),
        (col("_bad_user") | col("_bad_item"), F.lit(S.Reason.BAD_ID),
         F.concat_ws(" ", F.concat(F.lit("user_id="), col(raw[S.USER_ID])),
                     F.concat(F.lit("item_id="), col(raw[S.ITEM_ID])))),
        (col(raw[S.EVENT_TYPE]).isNull(), F.lit(S.Reason.MISSING_EVENT_TYPE), F.lit(None)),
        (col(S.EVENT_TYPE).isNull() | ~col(S.EVENT_TYPE).isin(*S.EVENT_TYPES), F.lit(S.Reason.UNKNOWN_EVENT_TYPE),
         F.lower(col(raw[S.EVENT_TYPE]))),
        (event_time.isNull(), F.lit(S.Reason.BAD_TIMESTAMP), col(raw[S.EVENT_TIME])),
        (event_time < F.lit(limits.min_event_time).cast("timestamp"), F.lit(S.Reason.TIMESTAMP_TOO_OLD),
         col(raw[S.EVENT_TIME])),
        (event_time > col("_ceiling"), F.lit(S.Reason.TIMESTAMP_IN_FUTURE), col(raw[S.EVENT_TIME])),
        (col(raw[S.PRICE]).isNotNull() & (price.isNull() | ~finite(price)), F.lit(S.Reason.BAD_PRICE), col(raw[S.PRICE])),
        (price < 0, F.lit(S.Reason.NEGATIVE_PRICE), col(raw[S.PRICE])),
        (price > limits.max_price, F.lit(S.Reason.ABSURD_PRICE), col(raw[S.PRICE])),
        (col(raw[S.QUANTITY]).isNotNull() & (quantity.isNull() | (quantity <= 0) | (quantity > limits.max_quantity)),
         F.lit(S.Reason.BAD_QUANTITY), col(raw[S.QUANTITY])),
        ((col(raw[S.RATING]).isNotNull() & (rating.isNull() | ~finite(rating)))
         | ((col(S.EVENT_TYPE) == "rating") & rating.isNull()), F.lit(S.Reason.BAD_RATING), col(raw[S.RATING])),
        ((col(S.EVENT_TYPE) == "search") & col(S.QUERY).isNull(), F.lit(S.Reason.MISSING_QUERY), F.lit(None)),
    ]
    # The number of the first failing check, then its code and detail: each condition is
    # evaluated once a row (a CASE chain per output column would evaluate them twice).
    failed = F.when(checks[0][0], F.lit(0))
    for number, (condition, _, _) in enumerate(checks[1:], start=1):
        failed = failed.when(condition, F.lit(number))
    reason = F.element_at(F.array(*[code for _, code, _ in checks]), F.col("_failed") + 1)
    detail = F.when(F.col("_failed") == 0, checks[0][2])
    for number, (_, _, value) in enumerate(checks[1:], start=1):
        detail = detail.when(F.col("_failed") == number, value)
    # Each step its own projection: Spark keeps them apart because the next one reads a column twice.
    typed = typed.select("*", too_long.alias("_too_long")).select("*", failed.alias("_failed"))

    content = content_hash(*[col(c) for c in CONTENT_COLUMNS])
    checked = typed.select(
        "*",
        reason.cast("string").alias(S.REASON),
        detail.cast("string").alias(S.DETAIL),
        content.alias(CONTENT_HASH),
    )
    return checked.select(
        *[c for c in checked.columns if not c.startswith(("_raw_", "_bad_", "_ceiling", "_too_long", "_failed"))
          or c == raw[S.EVENT_ID]],
        F.lit(source_name).alias(S.SOURCE),
        F.to_date(S.EVENT_TIME).alias(S.EVENT_DATE),
    ).withColumn(S.EVENT_ID, F.coalesce(col(raw[S.EVENT_ID]), F.substring(col(CONTENT_HASH), 1, 32))).drop(raw[S.EVENT_ID])


def mark_duplicates(events: DataFrame, earlier: DataFrame | None = None) -> DataFrame:
    """Mark every copy of an event after the first, with the rows partitioned by user.

    Two rows are the same event when they share ``user_id`` and ``event_id`` (event ids derived
    from content make exact copies share one). The first copy, by event time then content, is kept.

    Args:
        events: valid canonical events (``user_id``, ``event_id``, ``event_time``, ``event_date``,
            ``_content_hash``; ``event_date`` is the day of ``event_time``).
        earlier: optional rows already stored by earlier batches on the events' days
            (``user_id``, ``event_id``, ``event_date``, ``event_time``, and any other columns,
            kept on those rows); events matching one on user, event id and day are duplicates of
            that stored copy. None when nothing is stored on those days: the comparison is skipped.

    Returns:
        ``events`` hash-partitioned by ``user_id`` (the partitioning :func:`flag_bots` and
        :func:`sessionize` need too), plus ``_duplicate`` (string): null for the kept copy,
        ``exact`` for a copy identical in content, ``event_id`` for a different record reusing an
        event id, and ``earlier_batch`` for an event an earlier batch already stored; and
        ``_stored`` (boolean): false on every event. With ``earlier``, its rows come back too,
        ``_stored`` true and ``_duplicate`` null, for :func:`flag_bots` to count.
    """
    S.require_columns(events, [S.USER_ID, S.EVENT_ID, S.EVENT_TIME, S.EVENT_DATE, CONTENT_HASH], "mark_duplicates")
    tiebreak = S.SOURCE_FILE if S.SOURCE_FILE in events.columns else CONTENT_HASH
    if earlier is None:
        rows = events.withColumn(STORED, F.lit(False))
        same_event = Window.partitionBy(S.USER_ID, S.EVENT_ID).orderBy(S.EVENT_TIME, CONTENT_HASH, tiebreak)
        position = F.row_number().over(same_event)
        first_content = F.first(CONTENT_HASH).over(same_event)
        stored_that_day = F.lit(False)
    else:
        S.require_columns(earlier, [S.USER_ID, S.EVENT_ID, S.EVENT_TIME, S.EVENT_DATE], "mark_duplicates (earlier)")
        # The stored rows travel with the events through the one shuffle by user: a join on
        # (user, event id, day) would shuffle every event twice more once they are too many to
        # broadcast (a late or redelivered stretch of days, a backfill).
        rows = events.withColumn(STORED, F.lit(False)).unionByName(
            earlier.withColumn(STORED, F.lit(True)), allowMissingColumns=True)
        # Day by day, a day's stored rows first, then its new rows by time and content (the day
        # follows from the time, so the new rows keep their order by time).
        so_far = Window.partitionBy(S.USER_ID, S.EVENT_ID).orderBy(
            S.EVENT_DATE, F.col(STORED).desc(), S.EVENT_TIME, CONTENT_HASH, tiebreak,
        ).rowsBetween(Window.unboundedPreceding, Window.currentRow)
        position = F.row_number().over(so_far) - F.sum(F.col(STORED).cast("int")).over(so_far)
        first_content = F.first(CONTENT_HASH, ignorenulls=True).over(so_far)
        stored_day = F.last(F.when(F.col(STORED), F.col(S.EVENT_DATE)), ignorenulls=True).over(so_far)
        stored_that_day = F.coalesce(stored_day == F.col(S.EVENT_DATE), F.lit(False))
    return rows.repartition(S.USER_ID).withColumn(
        DUPLICATE,
        F.when(F.col(STORED), F.lit(None).cast("string"))
        .when(stored_that_day, F.lit(DUPLICATE_EARLIER_BATCH))
        .when(position == 1, F.lit(None).cast("string"))
        .when(F.col(CONTENT_HASH) == first_content, F.lit(DUPLICATE_EXACT))
        .otherwise(F.lit(DUPLICATE_EVENT_ID)),
    )


def flag_bots(events: DataFrame, rules: BotRules) -> DataFrame:
    """Flag users whose activity on a day is beyond what a person does.

    A user is a bot for a day when, on that day, they produced more than
    ``rules.max_events_per_minute`` events within any 60 seconds or more than
    ``rules.max_events_per_day`` events in all. (The windows sort by user, day and time, the order
    :func:`sessionize` needs too, so the two share one sort.)

    Args:
        events: canonical events with ``user_id``, ``event_time`` and ``event_date``; rows earlier
            batches stored on those days (``_stored``, from :func:`mark_duplicates`) count
            towards the limits like the rest, so a day is judged on all its events known so far.

    Returns:
        ``events`` plus ``_bot`` (boolean), and, when ``events`` has ``_stored``,
        ``_new_on_day`` (boolean): whether the user's day holds a row that is not stored (taken
        in the same pass over the day, for the caller to leave out stored days nothing joins).
    """
    S.require_columns(events, [S.USER_ID, S.EVENT_TIME, S.EVENT_DATE], "flag_bots")
    in_a_minute = F.expr(
        f"count(1) OVER (PARTITION BY {S.USER_ID}, {S.EVENT_DATE} ORDER BY {S.EVENT_TIME} "
        "RANGE BETWEEN INTERVAL 59 SECONDS PRECEDING AND CURRENT ROW)")
    user_day = Window.partitionBy(S.USER_ID, S.EVENT_DATE)
    per_day = {BOT: (F.max("_in_a_minute").over(user_day) > rules.max_events_per_minute)
               | (F.count(F.lit(1)).over(user_day) > rules.max_events_per_day)}
    if STORED in events.columns:
        per_day[NEW_ON_DAY] = F.max(~F.col(STORED)).over(user_day)
    return events.withColumn("_in_a_minute", in_a_minute).withColumns(per_day).drop("_in_a_minute")


def sessionize(events: DataFrame, gap_minutes: int, apart: str | None = None, stored: str | None = None) -> DataFrame:
    """Fill in ``session_id`` where the source had none.

    A user's events are ordered by time; a new session starts at the first one and after every gap
    longer than ``gap_minutes``. Events without a session id get a stable one: a hash of the user
    and the session's start time, so re-running gives the same ids (and ties in time do not matter).

    Args:
        events: canonical events with ``user_id``, ``event_time``, ``event_date``, ``session_id``.
        gap_minutes: the inactivity gap that ends a session.
        apart: optional boolean column, constant over each user's day: the rows where it is true
            (a user's bot days) form sessions among themselves, and the rest as if those rows
            were not there. Needs ``gap_minutes`` under a day.
        stored: optional boolean column marking rows earlier batches stored, with the
            ``session_id`` they were stored with (never null). They take part in the gaps, keep
            their ids, and an event without an id that follows one of them in the same session
            (no longer gap in between) continues that stored session, under its id. Events of a
            session that only begins before its first stored row get a session id of their own
            until that row: the stored rows cannot be given a new id without rewriting them.

    Returns:
        ``events`` with ``session_id`` (string) never null.
    """
    S.require_columns(events, [S.USER_ID, S.EVENT_TIME, S.EVENT_DATE, S.SESSION_ID], "sessionize")
    # Ordered by day then time (the same order), so the sort flag_bots made is reused.
    ordered = Window.partitionBy(S.USER_ID).orderBy(S.EVENT_DATE, S.EVENT_TIME)
    so_far = ordered.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    previous = F.lag(S.EVENT_TIME).over(ordered)
    if apart is not None:
        if gap_minutes >= MINUTES_PER_DAY:
            raise ValueError(f"sessionize: a gap of {gap_minutes} minutes (a day or more) cannot keep days apart")
        # ``apart`` is constant over a user's day, so a row whose predecessor is of the other kind
        # is a day or more after its own kind's last row: more than the gap, a new session either
        # way. And no session of one kind can span a day of the other.
        previous = F.when(F.lag(apart).over(ordered) == F.col(apart), previous)
    started_at = F.last(F.when(F.col("_starts"), F.col(S.EVENT_TIME)), ignorenulls=True).over(so_far)
    starts = previous.isNull() | (
        F.unix_timestamp(S.EVENT_TIME) - F.unix_timestamp(previous) > gap_minutes * 60)
    derived = F.substring(content_hash(F.col(S.USER_ID), F.col("_started_at")), 1, 24)
    rows = events.withColumn("_starts", starts)
    if stored is None:
        rows = rows.withColumn("_started_at", started_at)
        session = F.coalesce(F.col(S.SESSION_ID), derived)
    else:
        # The latest row so far that started a session or was stored: when it is a stored row,
        # no session started after it, so the current row continues its session. (One window
        # pass with the start, both from ``_starts``.)
        marker = F.last(F.when(F.col("_starts") | F.col(stored),
                               F.struct(F.col(stored).alias("stored"), F.col(S.SESSION_ID).alias("id"))),
                        ignorenulls=True).over(so_far)
        rows = rows.withColumns({"_started_at": started_at, "_marker": marker})
        session = F.coalesce(F.col(S.SESSION_ID), F.when(F.col("_marker.stored"), F.col("_marker.id")), derived)
    return rows.withColumn(S.SESSION_ID, session).drop("_starts", "_started_at", "_marker")
