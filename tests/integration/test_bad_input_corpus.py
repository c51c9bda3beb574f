"""clean_events on a corpus of malformed input: no crash, every line accounted for, each bad line
in the quarantine with its reason; a file that cannot be read at all is a clear error naming it."""

from __future__ import annotations

import base64
import gzip
import json
import re
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.jobs import clean_events
from shoprec.jobs.clean_events import UnreadableInputError
from shoprec.query import run_query

pytestmark = pytest.mark.integration
DAY = "2026-07-01"
R = S.Reason
CLEAN, DUPLICATE = "clean", "duplicate"


def event(case: str, **changes) -> dict:
    """A valid synthetic-source event of the landing day with ``changes`` (None removes a field)."""
    record = {"id": case, "ts": f"{DAY}T10:00:00Z", "type": "view", "user": 1, "product": 10, "price": 9.99,
              "qty": 1, "category": "toys", "brand": "acme"}
    record.update(changes)
    return {k: v for k, v in record.items() if v is not None}


def line(case: str, **changes) -> bytes:
    return json.dumps(event(case, **changes), ensure_ascii=False).encode()


# (case id, raw line, expected outcome). Lines without an id are matched by count.
CORPUS: list[tuple[str, bytes, str]] = [
    ("c01", line("c01")[:-15], R.UNPARSEABLE),                                     # truncated line
    ("c02", line("c02", price="abc"), R.BAD_PRICE),                                # wrong type
    ("c03", line("c03", user="u-1"), R.BAD_ID),                                    # wrong id type
    ("c04", line("c04", brand="XX").replace(b"XX", b"\xff\xfe"), R.BAD_ENCODING),  # not UTF-8
    ("c05", line("c05", brand="XX").replace(b"XX", b"a\x00b"), R.UNPARSEABLE),     # NUL byte
    ("c06", line("c06", category="x" * 5000), R.FIELD_TOO_LONG),                   # huge field
    ("c07", line("c07", user=None), R.MISSING_USER_ID),                            # missing field
    ("c08", line("c08", product=None), R.MISSING_ITEM_ID),
    ("c09", line("c09", colour="red", extra={"nested": [1, 2]}), CLEAN),           # extra fields
    ("c10", line("c10", user=None, userId=1), R.MISSING_USER_ID),                  # schema drift: renamed
    ("c11", line("c11", price={"amount": 5}), R.BAD_PRICE),                        # schema drift: nested
    ("c12", line("c12", ts="2026-07-05T10:00:00Z"), R.TIMESTAMP_IN_FUTURE),
    ("c13", line("c13", ts="1990-07-01T10:00:00Z"), R.TIMESTAMP_TOO_OLD),
    ("c14", line("c14", ts="07/01/2026 10am"), R.BAD_TIMESTAMP),
    ("c15", line("c15", user="用户"), R.BAD_ID),                                   # Unicode in a numeric id
    ("c16", line("c16", category="Spielzeug – Bären", brand="Ünïcode"), CLEAN),    # Unicode text
    ("c17", line("c17", type="wishlist"), R.UNKNOWN_EVENT_TYPE),
    ("c18", line("c18", type=None), R.MISSING_EVENT_TYPE),
    ("c19", line("c19", price=-1), R.NEGATIVE_PRICE),
    ("c20", line("c20", price=1e9), R.ABSURD_PRICE),
    ("c21", line("c21", qty=0), R.BAD_QUANTITY),
    ("c22", line("c22", type="search", product=None), R.MISSING_QUERY),
    ("c23", line("c23", price="NaN"), R.BAD_PRICE),
    ("c24", line("c24") + b"\r", CLEAN),                                           # CRLF line ending
    ("c25", line("c25", ts="2026-06-20T10:00:00Z"), CLEAN),                        # late event
    ("c26", line("c26"), CLEAN),
    ("c26", line("c26"), DUPLICATE),                                               # exact copy
    ("c27", line("c27"), CLEAN),
    ("c27", line("c27", price=1.0, ts=f"{DAY}T10:05:00Z"), DUPLICATE),            # event id reused
    ("", b"", R.UNPARSEABLE),                                                      # empty line
    ("", b"   \t ", R.UNPARSEABLE),                                                # whitespace only
    ("", b"[1, 2, 3]", R.UNPARSEABLE),                                             # not an object
    ("", b"42", R.UNPARSEABLE),                                                    # a bare number
    ("", b"x" * 200_000, R.UNPARSEABLE),                                           # a huge junk line
]


def write_gz(path: Path, lines: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as out:
        out.write(b"".join(x + b"\n" for x in lines))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    landing = tmp_path_factory.mktemp("corpus") / "landing"
    day = landing / f"dt={DAY}"
    write_gz(day / "part-0.txt.gz", [raw for _, raw, _ in CORPUS])
    # A second delivery of a file already sent: every line is a duplicate.
    copies = [line(f"d{i:02d}", user=2, ts=f"{DAY}T11:{i:02d}:00Z") for i in range(5)]
    write_gz(day / "part-1.txt.gz", copies)
    write_gz(day / "part-1-redelivered.txt.gz", copies)
    write_gz(day / "part-2-empty.txt.gz", [])       # a valid archive of nothing
    (day / "part-3-zero-bytes.txt.gz").write_bytes(b"")  # not even a gzip header
    return landing


def test_every_malformed_line_is_quarantined_with_its_reason(spark, make_config, corpus):
    cfg = make_config(INPUT__PATH=str(corpus))
    summary = clean_events.run(spark, cfg, DAY)

    accounting = summary.accounting
    assert accounting["rows_input"] == len(CORPUS) + 10
    assert accounting["rows_input"] == (accounting["rows_clean"] + accounting["rows_quarantined"]
                                        + accounting["rows_duplicate"] + accounting["rows_filtered_bot"])

    quarantine = spark.read.parquet(cfg.table_path("events_quarantine")).collect()
    by_case = {}
    without_id = []
    for row in quarantine:
        found = re.search(r'"id": "(c\d\d)"', row[S.RAW_RECORD] or "")
        if found:
            by_case[found.group(1)] = row[S.REASON]
        else:
            without_id.append(row[S.REASON])
    expected = {case: outcome for case, _, outcome in CORPUS if case and outcome not in (CLEAN, DUPLICATE)}
    assert by_case == expected
    assert sorted(without_id) == sorted(o for case, _, o in CORPUS if not case)
    assert summary.quarantine_reasons == {
        reason: sum(1 for _, _, o in CORPUS if o == reason) for reason in {o for _, _, o in CORPUS}
        if reason not in (CLEAN, DUPLICATE)}
    long_field = next(r for r in quarantine if r[S.REASON] == R.FIELD_TOO_LONG)
    assert long_field[S.DETAIL] == "category: 5000 chars"
    # The line that was not UTF-8: readable text in raw_record, its exact bytes in the detail.
    not_utf8 = next(r for r in quarantine if r[S.REASON] == R.BAD_ENCODING)
    assert base64.b64decode(not_utf8[S.DETAIL].removeprefix("base64:")) == dict((c, raw) for c, raw, _ in CORPUS)["c04"]
    assert "\ufffd" in not_utf8[S.RAW_RECORD]
    # Analysts' DuckDB reads the whole quarantine.
    columns, rows = run_query(cfg.restricted_root, "SELECT reason, count(*) FROM events_quarantine GROUP BY reason")
    assert dict(rows) == summary.quarantine_reasons

    clean = spark.read.parquet(cfg.table_path("events_clean"))
    kept = {r[S.EVENT_ID]: r for r in clean.collect()}
    assert set(kept) == {case for case, _, o in CORPUS if o == CLEAN} | {f"d{i:02d}" for i in range(5)}
    assert (kept["c16"][S.CATEGORY], kept["c16"][S.BRAND]) == ("spielzeug – bären", "ünïcode")
    assert str(kept["c25"][S.EVENT_DATE]) == "2026-06-20"
    assert kept["c27"][S.PRICE] == 9.99  # the first of the two events sharing an id
    assert summary.duplicates_by_kind == {"exact": 6, "event_id": 1, "earlier_batch": 0}
    assert clean.where(F.col(S.EVENT_DATE).isNull()).count() == 0


def test_landing_days_arriving_out_of_order_are_each_processed_once(spark, make_config, tmp_path):
    landing = tmp_path / "landing"
    cfg = make_config(INPUT__PATH=str(landing))
    write_gz(landing / "dt=2026-07-03" / "a.txt.gz", [line("late-day-3", ts="2026-07-03T09:00:00Z")])
    assert clean_events.run(spark, cfg, "2026-07-03").batches == ["2026-07-03"]
    # The earlier day lands afterwards: the next run takes it, and only it.
    write_gz(landing / "dt=2026-07-02" / "a.txt.gz", [line("late-day-2", ts="2026-07-02T09:00:00Z")])
    assert clean_events.run(spark, cfg, "2026-07-03").batches == ["2026-07-02"]
    rows = spark.read.parquet(cfg.table_path("events_clean")).select(S.EVENT_ID, S.INGEST_BATCH).collect()
    assert sorted((r[0], str(r[1])) for r in rows) == [("late-day-2", "2026-07-02"), ("late-day-3", "2026-07-03")]


@pytest.mark.parametrize("damage", ["not a gzip stream", "truncated archive"])
def test_an_unreadable_archive_is_an_error_naming_the_file(spark, make_config, tmp_path, damage):
    day = tmp_path / "landing" / f"dt={DAY}"
    write_gz(day / "good.txt.gz", [line("ok-1")])
    whole = gzip.compress(b"".join(line(f"x{i}") + b"\n" for i in range(200)))
    broken = b"this is not gzip at all" if damage == "not a gzip stream" else whole[: len(whole) // 2]
    (day / "broken.txt.gz").write_bytes(broken)
    cfg = make_config(INPUT__PATH=str(tmp_path / "landing"))
    with pytest.raises(UnreadableInputError, match=r"cannot read raw file \S*broken\.txt\.gz.*nothing was committed"):
        clean_events.run(spark, cfg, DAY)
    assert not Path(cfg.table_path("events_clean")).exists()
    assert not list(Path(cfg.warehouse.root).glob("_ingest_log/*/batch=*.json"))
