"""The pure cleaning transforms on small inline inputs with exact expected outputs."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from pyspark.sql import Row
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shoprec import schemas as S
from shoprec.config import BotRules, CleanConfig, SourceConfig
from shoprec.etl import clean
from tests.conftest import NO_BROADCAST, session_settings

JSON_SOURCE = SourceConfig(
    format="json",
    columns={"event_id": "id", "user_id": "user", "item_id": "item", "event_type": "type", "event_time": "ts",
             "price": "price", "quantity": "qty", "category": "cat", "brand": "brand", "query": "q",
             "rating": "rating", "session_id": "session"},
    event_types={"view": "view", "click": "view", "cart": "cart", "buy": "purchase", "search": "search",
                 "rating": "rating"},
    id_cast={"user_id": "long", "item_id": "long"},
)
CSV_SOURCE = SourceConfig(
    format="csv", header=True, delimiter=",", fields=["when", "what", "who", "item", "cost"],
    columns={"event_time": "when", "event_type": "what", "user_id": "who", "item_id": "item", "price": "cost"},
    timestamp_format="yyyy-MM-dd HH:mm:ss", timezone="Europe/Berlin",
)
LIMITS = CleanConfig()
BATCH = "2026-01-02"
GOOD = '"user":"7","item":"42","type":"view","ts":"2026-01-02T10:00:00Z"'


def canonical(spark, lines, source=JSON_SOURCE, batch=BATCH):
    raw = spark.createDataFrame([(line, "file:/raw/f1", batch) for line in lines],
                                f"{S.RAW_RECORD} string, {S.SOURCE_FILE} string, {S.INGEST_BATCH} string")
    return clean.to_canonical(clean.parse_records(raw, source), source, "shop", LIMITS)


@pytest.mark.parametrize("line, reason, detail", [
    ('{"user":"7","item"', S.Reason.UNPARSEABLE, None),
    ("[1, 2]", S.Reason.UNPARSEABLE, None),
    ("", S.Reason.UNPARSEABLE, None),
    ('{' + GOOD + ',"brand":"a\u0000b"}', S.Reason.UNPARSEABLE, None),
    ('{' + GOOD + ',"brand":"caf\ufffd"}', S.Reason.BAD_ENCODING,
     "base64:" + base64.b64encode(('{' + GOOD + ',"brand":"caf\ufffd"}').encode()).decode()),
    ('{' + GOOD + ',"cat":"' + "x" * 1001 + '"}', S.Reason.FIELD_TOO_LONG, "category: 1001 chars"),
    ('{"item":"42","type":"view","ts":"2026-01-02T10:00:00Z"}', S.Reason.MISSING_USER_ID, None),
    ('{"user":" ","item":"42","type":"view","ts":"2026-01-02T10:00:00Z"}', S.Reason.MISSING_USER_ID, None),
    ('{"user":"7","type":"view","ts":"2026-01-02T10:00:00Z"}', S.Reason.MISSING_ITEM_ID, None),
    ('{"user":"u7","item":"42","type":"view","ts":"2026-01-02T10:00:00Z"}', S.Reason.BAD_ID, "user_id=u7 item_id=42"),
    ('{"user":"7","item":"4.2","type":"view","ts":"2026-01-02T10:00:00Z"}', S.Reason.BAD_ID, "user_id=7 item_id=4.2"),
    ('{"user":"7","item":"42","ts":"2026-01-02T10:00:00Z"}', S.Reason.MISSING_EVENT_TYPE, None),
    ('{"user":"7","item":"42","type":"wishlist","ts":"2026-01-02T10:00:00Z"}', S.Reason.UNKNOWN_EVENT_TYPE, "wishlist"),
    ('{"user":"7","item":"42","type":"view","ts":"yesterday"}', S.Reason.BAD_TIMESTAMP, "yesterday"),
    ('{"user":"7","item":"42","type":"view"}', S.Reason.BAD_TIMESTAMP, None),
    ('{"user":"7","item":"42","type":"view","ts":"1994-12-31T23:59:59Z"}', S.Reason.TIMESTAMP_TOO_OLD,
     "1994-12-31T23:59:59Z"),
    ('{"user":"7","item":"42","type":"view","ts":"2026-01-04T00:00:01Z"}', S.Reason.TIMESTAMP_IN_FUTURE,
     "2026-01-04T00:00:01Z"),
    ('{' + GOOD + ',"price":"cheap"}', S.Reason.BAD_PRICE, "cheap"),
    ('{' + GOOD + ',"price":"NaN"}', S.Reason.BAD_PRICE, "NaN"),
    ('{' + GOOD + ',"price":-0.01}', S.Reason.NEGATIVE_PRICE, "-0.01"),
    ('{' + GOOD + ',"price":2000000}', S.Reason.ABSURD_PRICE, "2000000"),
    ('{' + GOOD + ',"qty":0}', S.Reason.BAD_QUANTITY, "0"),
    ('{' + GOOD + ',"qty":1.5}', S.Reason.BAD_QUANTITY, "1.5"),
    ('{' + GOOD + ',"qty":5000}', S.Reason.BAD_QUANTITY, "5000"),
    ('{"user":"7","item":"42","type":"rating","ts":"2026-01-02T10:00:00Z"}', S.Reason.BAD_RATING, None),
    ('{' + GOOD + ',"rating":"five"}', S.Reason.BAD_RATING, "five"),
    ('{"user":"7","type":"search","ts":"2026-01-02T10:00:00Z"}', S.Reason.MISSING_QUERY, None),
])
def test_each_quarantine_reason(spark, line, reason, detail):
    row = canonical(spark, [line]).select(S.REASON, S.DETAIL, S.RAW_RECORD).first()
    assert (row[S.REASON], row[S.DETAIL], row[S.RAW_RECORD]) == (reason, detail, line)


def test_csv_field_count_and_header(spark):
    lines = ["when,what,who,item,cost",
             "2026-01-02 11:00:00,view,7,42,9.50",
             '2026-01-02 11:00:00,view,7,"4,2",9.50',
             "2026-01-02 11:00:00,view,7,42",
             "2026-01-02 11:00:00,view,7,42,9.50,extra"]
    rows = canonical(spark, lines, CSV_SOURCE).select(S.RAW_RECORD, S.REASON, S.ITEM_ID, S.EVENT_TIME).collect()
    assert [(r[S.REASON], r[S.ITEM_ID]) for r in rows] == [
        (None, "42"), (None, "4,2"), (S.Reason.FIELD_COUNT, "42"), (S.Reason.FIELD_COUNT, "42")]
    # Berlin is UTC+1 in January: 11:00 local is 10:00 UTC.
    assert rows[0][S.EVENT_TIME] == dt.datetime(2026, 1, 2, 10, 0)


def test_valid_rows_are_normalised(spark):
    lines = [
        '{"id":"e1","user":"007","item":" 42 ","type":"CLICK","ts":"2026-01-02T12:30:00+02:00",'
        '"price":"19.90","qty":"2","cat":"  Electronics.Phone ","brand":"ACME","session":"s1"}',
        '{"user":7,"item":42,"type":"search","ts":"2026-01-02T10:00:00Z","q":" red shoes ","cat":"","brand":null}',
    ]
    got = canonical(spark, lines).select(
        S.EVENT_ID, S.USER_ID, S.ITEM_ID, S.EVENT_TYPE, S.EVENT_TIME, S.SESSION_ID, S.PRICE, S.QUANTITY,
        S.CATEGORY, S.BRAND, S.QUERY, S.SOURCE, S.EVENT_DATE, S.REASON)
    derived_id = canonical(spark, [lines[1]]).first()[S.EVENT_ID]
    assert len(derived_id) == 32
    expected = [
        Row("e1", "7", "42", "view", dt.datetime(2026, 1, 2, 10, 30), "s1", 19.9, 2, "electronics.phone", "acme",
            None, "shop", dt.date(2026, 1, 2), None),
        Row(derived_id, "7", "42", "search", dt.datetime(2026, 1, 2, 10, 0), None, None, None, None, None,
            "red shoes", "shop", dt.date(2026, 1, 2), None),
    ]
    assertDataFrameEqual(got, spark.createDataFrame(expected, got.schema))


def test_derived_event_ids_are_equal_for_equal_content(spark):
    line = '{"user":"7","item":"42","type":"view","ts":"2026-01-02T10:00:00Z","price":"5"}'
    other = '{"user":"7","item":"42","type":"view","ts":"2026-01-02T10:00:00Z","price":"6"}'
    ids = [r[S.EVENT_ID] for r in canonical(spark, [line, line, other]).collect()]
    assert ids[0] == ids[1] != ids[2]


def test_unix_timestamps_and_constants(spark):
    source = SourceConfig(format="csv", delimiter="\t", fields=["u", "i", "r", "t"],
                          columns={"user_id": "u", "item_id": "i", "rating": "r", "event_time": "t"},
                          constants={"event_type": "rating"}, timestamp_format="unix")
    row = canonical(spark, ["196\t242\t3\t881250949"], source, batch="1997-12-04").first()
    assert (row[S.EVENT_TYPE], row[S.RATING], row[S.EVENT_TIME], row[S.REASON]) == (
        "rating", 3.0, dt.datetime(1997, 12, 4, 15, 55, 49), None)


EVENT_COLUMNS = (f"{S.USER_ID} string, {S.EVENT_ID} string, {S.EVENT_TIME} timestamp, {S.EVENT_DATE} date, "
                 f"{clean.CONTENT_HASH} string, {S.SOURCE_FILE} string, {S.SESSION_ID} string")


def events(spark, rows):
    return spark.createDataFrame(rows, EVENT_COLUMNS)


def at(minute: int, second: int = 0, day: int = 2) -> dt.datetime:
    return dt.datetime(2026, 1, day, 10, 0) + dt.timedelta(minutes=minute, seconds=second)


STORED_COLUMNS = f"{S.USER_ID} string, {S.EVENT_ID} string, {S.EVENT_DATE} date, {S.EVENT_TIME} timestamp"


def stored_rows(spark, rows):
    """Rows earlier batches stored: (user, event id, day), each at 10:00 of its day."""
    return spark.createDataFrame([(u, e, d, dt.datetime(d.year, d.month, d.day, 10)) for u, e, d in rows],
                                 STORED_COLUMNS)


def new_events(marked):
    return marked.where(~marked[clean.STORED])


def test_mark_duplicates(spark):
    day = dt.date(2026, 1, 2)
    rows = [
        ("u1", "e1", at(0), day, "h1", "f1", None),
        ("u1", "e1", at(0), day, "h1", "f2", None),   # exact copy
        ("u1", "e1", at(5), day, "h2", "f1", None),   # same id, other content
        ("u2", "e1", at(0), day, "h1", "f1", None),   # same id, other user: a different event
        ("u3", "e9", at(0), day, "h9", "f1", None),   # stored by an earlier batch
    ]
    earlier = stored_rows(spark, [("u3", "e9", day)])
    expected = [("u1", "e1", "f1", "h1", None), ("u1", "e1", "f2", "h1", "exact"), ("u1", "e1", "f1", "h2", "event_id"),
                ("u2", "e1", "f1", "h1", None), ("u3", "e9", "f1", "h9", "earlier_batch")]
    # With nothing stored, the same marks but for the stored event, which is then new.
    without_earlier = expected[:-1] + [("u3", "e9", "f1", "h9", None)]
    for stored, marks in ((earlier, expected), (None, without_earlier)):
        marked = clean.mark_duplicates(events(spark, rows), stored)
        got = new_events(marked).select(S.USER_ID, S.EVENT_ID, S.SOURCE_FILE, clean.CONTENT_HASH, clean.DUPLICATE)
        assertDataFrameEqual(got, spark.createDataFrame(marks, got.schema))
        # The stored rows come back, unmarked, for the bot limits to count.
        back = marked.where(clean.STORED).select(S.USER_ID, S.EVENT_ID, clean.DUPLICATE).collect()
        assert back == ([Row(user_id="u3", event_id="e9", _duplicate=None)] if stored else [])


def test_earlier_batches_keys_match_on_user_event_id_and_day(spark):
    day, next_day = dt.date(2026, 1, 2), dt.date(2026, 1, 3)
    rows = [
        ("u1", "e1", at(0), day, "h1", "f1", None),              # stored on its day
        ("u1", "e1", at(3), day, "h1", "f2", None),              # a later copy of it: stored too
        ("u1", "e2", at(0, day=3), next_day, "h2", "f1", None),  # stored on another day only: kept
        ("u1", "e3", at(1), day, "h3", "f1", None),              # stored on the days before and after: kept
        ("u1", "e3", at(2), day, "h3", "f2", None),              # its exact copy
        ("u1", "e4", at(0, day=3), next_day, "h4", "f1", None),  # stored on both its own day and the day before
        ("u2", "e1", at(0), day, "h1", "f1", None),              # another user's e1: kept
    ]
    earlier = stored_rows(spark, [
        ("u1", "e1", day), ("u1", "e2", day), ("u1", "e3", dt.date(2026, 1, 1)), ("u1", "e3", next_day),
        ("u1", "e4", day), ("u1", "e4", next_day), ("u3", "e9", day)])
    got = new_events(clean.mark_duplicates(events(spark, rows), earlier)).select(
        S.USER_ID, S.EVENT_ID, S.SOURCE_FILE, clean.DUPLICATE)
    expected = [("u1", "e1", "f1", "earlier_batch"), ("u1", "e1", "f2", "earlier_batch"), ("u1", "e2", "f1", None),
                ("u1", "e3", "f1", None), ("u1", "e3", "f2", "exact"), ("u1", "e4", "f1", "earlier_batch"),
                ("u2", "e1", "f1", None)]
    assertDataFrameEqual(got, spark.createDataFrame(expected, got.schema))


def test_duplicates_bots_and_sessions_shuffle_the_events_once(spark):
    # The stored keys of a redelivered day can be too many to broadcast: they must not cost the
    # events another shuffle.
    day = dt.date(2026, 1, 2)
    stored = spark.range(1000).selectExpr(f"cast(id as string) as {S.USER_ID}", f"'e' as {S.EVENT_ID}",
                                          f"date'2026-01-02' as {S.EVENT_DATE}",
                                          f"timestamp'2026-01-02 10:00:00' as {S.EVENT_TIME}")
    rows = events(spark, [("u1", "e1", at(0), day, "h1", "f1", None)])
    with session_settings(spark, NO_BROADCAST):
        flagged = clean.flag_bots(clean.mark_duplicates(rows, stored), BotRules())
        chain = clean.sessionize(flagged, 30, apart=clean.BOT, stored=clean.STORED)
        plan = chain._jdf.queryExecution().executedPlan().toString()
    assert plan.count("Exchange hashpartitioning") == 1, plan


def test_flag_bots_per_minute_and_per_day(spark):
    day = dt.date(2026, 1, 2)
    rows = [("burst", f"b{i}", at(0, i), day, "h", "f", None) for i in range(5)]
    rows += [("steady", f"s{i}", at(i), day, "h", "f", None) for i in range(5)]
    rows += [("busy", f"d{i}", at(i), day, "h", "f", None) for i in range(7)]
    rows += [("busy", "other-day", at(0, day=3), dt.date(2026, 1, 3), "h", "f", None)]
    got = clean.flag_bots(events(spark, rows), BotRules(max_events_per_minute=4, max_events_per_day=6))
    flags = {(r[S.USER_ID], r[S.EVENT_DATE]): r[clean.BOT] for r in got.select(S.USER_ID, S.EVENT_DATE, clean.BOT).distinct().collect()}
    assert flags == {("burst", day): True, ("steady", day): False, ("busy", day): True,
                     ("busy", dt.date(2026, 1, 3)): False}


def test_a_days_stored_events_count_towards_its_bot_limits(spark):
    day, next_day = dt.date(2026, 1, 2), dt.date(2026, 1, 3)
    rows = [
        ("late", "n1", at(30), day, "h", "f", None),                # 4 stored + 3 new on the day: over 6
        ("late", "n2", at(31), day, "h", "f", None),
        ("late", "n3", at(32), day, "h", "f", None),
        ("burst", "n1", at(0, 30), day, "h", "f", None),            # 3 stored + 2 new within a minute: over 4
        ("burst", "n2", at(0, 40), day, "h", "f", None),
        ("spread", "n1", at(0, 30, day=3), next_day, "h", "f", None),  # its stored burst was the day before
        ("spread", "n2", at(0, 40, day=3), next_day, "h", "f", None),
    ]
    stored = spark.createDataFrame(
        [("late", f"s{i}", day, at(i)) for i in range(4)]
        + [("burst", f"s{i}", day, at(0, i)) for i in range(3)]
        + [("spread", f"s{i}", day, at(0, 30 + i)) for i in range(5)], STORED_COLUMNS)
    flagged = clean.flag_bots(clean.mark_duplicates(events(spark, rows), stored),
                              BotRules(max_events_per_minute=4, max_events_per_day=6))
    new = {(r[S.USER_ID], r[S.EVENT_DATE]): r[clean.BOT] for r in new_events(flagged).collect()}
    assert new == {("late", day): True, ("burst", day): True, ("spread", next_day): False}
    # Which user-days hold new rows (the spread user's stored burst is alone on its day).
    new_on_day = {(r[S.USER_ID], r[S.EVENT_DATE]): r[clean.NEW_ON_DAY]
                  for r in flagged.select(S.USER_ID, S.EVENT_DATE, clean.NEW_ON_DAY).distinct().collect()}
    assert new_on_day == {("late", day): True, ("burst", day): True, ("spread", day): False,
                          ("spread", next_day): True}
    # Without the stored rows, each run would judge its own few events alone.
    alone = clean.flag_bots(events(spark, rows), BotRules(max_events_per_minute=4, max_events_per_day=6))
    assert alone.where(clean.BOT).count() == 0 and clean.NEW_ON_DAY not in alone.columns


def test_sessionize_keeps_bot_days_apart(spark):
    day, bot_day = dt.date(2026, 1, 2), dt.date(2026, 1, 3)
    rows = [
        ("u1", "a", at(0), day, "h", "f", None),
        ("u1", "b", dt.datetime(2026, 1, 2, 23, 50), day, "h", "f", None),
        ("u1", "x", dt.datetime(2026, 1, 3, 0, 5), bot_day, "h", "f", None),   # 15 minutes after b, but a bot's
        ("u1", "y", dt.datetime(2026, 1, 3, 0, 20), bot_day, "h", "f", None),
        ("u1", "z", dt.datetime(2026, 1, 3, 1, 0), bot_day, "h", "f", None),   # 40 minutes after y: a new session
        ("u2", "c", at(0), day, "h", "f", None),
    ]
    marked = events(spark, rows).withColumn("_is_bot", F.col(S.EVENT_DATE) == F.lit(bot_day))
    got = {r[S.EVENT_ID]: r[S.SESSION_ID] for r in clean.sessionize(marked, 30, apart="_is_bot").collect()}
    assert got["x"] == got["y"] != got["z"]
    assert len({got["a"], got["b"], got["x"], got["z"], got["c"]}) == 5
    # The other rows get the sessions they would get with the bot rows gone.
    without = clean.sessionize(events(spark, [r for r in rows if r[3] != bot_day]), 30)
    assert {r[S.EVENT_ID]: r[S.SESSION_ID] for r in without.collect()} == {k: got[k] for k in "abc"}
    with pytest.raises(ValueError, match="a gap of 1440 minutes .* cannot keep days apart"):
        clean.sessionize(marked, 1440, apart="_is_bot")


def test_sessionize_continues_stored_sessions(spark):
    day = dt.date(2026, 1, 2)
    stored = [
        ("u1", "s1", at(0), day, "h", "f", "kept"),
        ("u1", "s2", at(10), day, "h", "f", "kept"),
        ("u1", "s3", at(120), day, "h", "f", "later"),
        ("u2", "s4", at(0), day, "h", "f", "other"),
    ]
    new = [
        ("u1", "before", at(-15), day, "h", "f", None),   # opens the session before its first stored row
        ("u1", "between", at(5), day, "h", "f", None),    # after s1: continues it
        ("u1", "after", at(25), day, "h", "f", None),     # 15 minutes after s2: continues it
        ("u1", "apart", at(60), day, "h", "f", None),     # 35 minutes after "after": a new session
        ("u1", "bridge", at(100), day, "h", "f", None),   # 20 minutes before s3: a session until s3
        ("u1", "tail", at(140), day, "h", "f", None),     # 20 minutes after s3: continues it
        ("u1", "given", at(145), day, "h", "f", "own"),   # the source's own id is kept
        ("u3", "alone", at(0), day, "h", "f", None),
    ]
    rows = events(spark, stored + new).withColumn(
        clean.STORED, F.col(S.EVENT_ID).startswith("s") & (F.length(S.EVENT_ID) == 2))
    got = {r[S.EVENT_ID]: r[S.SESSION_ID] for r in clean.sessionize(rows, 30, stored=clean.STORED).collect()}
    assert {k: got[k] for k in ("s1", "s2", "s3", "s4", "between", "after", "tail", "given")} == {
        "s1": "kept", "s2": "kept", "s3": "later", "s4": "other",
        "between": "kept", "after": "kept", "tail": "later", "given": "own"}
    assert len({got["before"], got["apart"], got["bridge"], got["alone"], "kept", "later"}) == 6
    # Without the stored rows marked, no new event takes a stored id.
    unmarked = clean.sessionize(rows.drop(clean.STORED), 30)
    assert not {r[S.SESSION_ID] for r in unmarked.where(~F.col(S.EVENT_ID).isin("s1", "s2", "s3", "s4", "given"))
                .collect()} & {"kept", "later", "other"}
    # New events with nothing stored near them get the ids they get without any stored row.
    alone = clean.sessionize(events(spark, [r for r in new if r[1] == "alone"]), 30).first()
    assert got["alone"] == alone[S.SESSION_ID]


def test_sessionize_splits_on_gaps_and_keeps_given_ids(spark):
    day = dt.date(2026, 1, 2)
    rows = [
        ("u1", "a", at(0), day, "h", "f", None),
        ("u1", "b", at(29), day, "h", "f", None),
        ("u1", "c", at(60), day, "h", "f", None),     # 31 minutes after b: a new session
        ("u1", "d", at(61), day, "h", "f", "given"),  # the source's own session id is kept
        ("u2", "e", at(0), day, "h", "f", None),
    ]
    got = {r[S.EVENT_ID]: r[S.SESSION_ID] for r in clean.sessionize(events(spark, rows), 30).collect()}
    assert got["a"] == got["b"] != got["c"]
    assert got["d"] == "given"
    assert got["e"] not in (got["a"], got["c"])
    again = {r[S.EVENT_ID]: r[S.SESSION_ID] for r in clean.sessionize(events(spark, rows), 30).collect()}
    assert again == got
    assert {len(v) for k, v in got.items() if k != "d"} == {24}


def test_missing_columns_are_named(spark):
    with pytest.raises(ValueError, match="sessionize: missing required column.*session_id"):
        clean.sessionize(spark.createDataFrame([("u", "e", at(0))], "user_id string, event_id string, event_time timestamp"), 30)
