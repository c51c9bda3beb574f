"""Property: whatever dirt the input holds, every raw line ends up counted exactly once."""

from __future__ import annotations

import gzip
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoprec import schemas as S
from shoprec.io.tables import read_table
from shoprec.jobs import clean_events

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAY = "2026-04-01"
users = st.integers(min_value=1, max_value=6).map(str)
good_event = st.fixed_dictionaries({
    "id": st.text("0123456789abcdef", min_size=1, max_size=4),
    "user": users,
    "product": st.integers(min_value=1, max_value=20).map(str),
    "type": st.sampled_from(["view", "cart", "purchase", "remove_from_cart"]),
    "ts": st.integers(min_value=0, max_value=86399).map(
        lambda s: f"{DAY}T{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}Z"),
    "price": st.floats(min_value=0, max_value=500, allow_nan=False).map(lambda p: round(p, 2)),
})
damage = st.sampled_from([
    None, None, None,
    lambda e: json.dumps(e)[: len(json.dumps(e)) // 2],                     # truncated
    lambda e: json.dumps({k: v for k, v in e.items() if k != "user"}),        # missing user
    lambda e: json.dumps({**e, "price": -abs(e["price"]) - 1}),               # negative price
    lambda e: json.dumps({**e, "type": "teleport"}),                          # unknown type
    lambda e: json.dumps({**e, "ts": "2099-01-01T00:00:00Z"}),                # far future
    lambda e: json.dumps({**e, "ts": "not a time"}),                          # bad timestamp
    lambda e: json.dumps({**e, "user": "x\u00e9"}),                           # non-numeric id
    lambda e: "",                                                             # empty line
    lambda e: "\u0000\u0000",                                                 # NUL bytes
])
line = st.tuples(good_event, damage).map(lambda pair: pair[1](pair[0]) if pair[1] else json.dumps(pair[0]))
log = st.lists(line, min_size=1, max_size=60).flatmap(
    lambda lines: st.lists(st.sampled_from(lines), max_size=10).map(lambda repeats: lines + repeats))


@settings(max_examples=5, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(lines=log)
def test_every_line_is_accounted_for(spark, make_config, tmp_path_factory, lines):
    root = tmp_path_factory.mktemp("prop")
    (root / "raw" / f"dt={DAY}").mkdir(parents=True)
    with gzip.open(root / "raw" / f"dt={DAY}" / "part-0.txt.gz", "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    cfg = make_config(INPUT__PATH=root / "raw", WAREHOUSE__ROOT=root / "warehouse",
                      CLEAN__BOTS__MAX_EVENTS_PER_MINUTE=3)
    summary = clean_events.run(spark, cfg, DAY)
    acc = summary.accounting
    stored_clean = read_table(spark, cfg.table_path("events_clean"), S.EVENTS_CLEAN).count()
    stored_quarantine = read_table(spark, cfg.table_path("events_quarantine"), S.EVENTS_QUARANTINE).collect()
    assert acc["rows_input"] == len(lines)
    assert len(lines) == stored_clean + len(stored_quarantine) + acc["rows_duplicate"] + acc["rows_filtered_bot"]
    # Every quarantined row carries its reason and the raw line it came from, unaltered.
    assert all(r.reason and r.raw_record in lines for r in stored_quarantine)
