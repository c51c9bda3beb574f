"""The clean_events benchmark on a small log: its report holds what the README says it holds, the
three floors copy every raw line, and its line in reports/README.md is replaced, not repeated."""

import gzip

import pytest

from tests.conftest import load_benchmark

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVENTS = 20_000


def test_the_benchmark_times_clean_events_and_the_three_floors_on_the_same_log(spark, make_config, tmp_path):
    bench = load_benchmark("bench_clean")
    result = bench.measure(spark, make_config(), EVENTS, tmp_path / "bench")

    counts = result["accounting"]
    assert counts["rows_input"] == EVENTS
    assert counts["rows_clean"] + counts["rows_quarantined"] + counts["rows_duplicate"] \
        + counts["rows_filtered_bot"] == EVENTS
    assert counts["rows_quarantined"] > 0 and counts["rows_clean"] > 0.9 * EVENTS
    # Ratios are of the unrounded seconds, the seconds are reported to 0.01 s.
    assert result["ratio"] == pytest.approx(result["clean_seconds"] / result["floor_seconds"], rel=0.02)
    assert result["ratio_to_ordered_floor"] == pytest.approx(
        result["clean_seconds"] / result["ordered_floor_seconds"], rel=0.02)
    assert result["ratio_to_required_floor"] == pytest.approx(
        result["clean_seconds"] / result["required_floor_seconds"], rel=0.02)
    assert result["required_floor_ratio"] == pytest.approx(
        result["required_floor_seconds"] / result["floor_seconds"], rel=0.02)
    assert set(result["stage_seconds"]) == {"seconds_parse", "seconds_write_quarantine", "seconds_write_user_id_map",
                                            "seconds_write_clean", "seconds_quality_report"}
    assert all(seconds > 0 for seconds in result["stage_seconds"].values())
    # Every floor wrote one row per raw line (malformed lines become rows of nulls), nothing dropped.
    assert spark.read.parquet(str(tmp_path / "bench" / "floor")).count() == EVENTS
    assert spark.read.parquet(str(tmp_path / "bench" / "ordered_floor")).count() == EVENTS
    required = spark.read.parquet(str(tmp_path / "bench" / "required_floor"))
    assert required.count() == EVENTS
    # Partitioned by the event's day, as events_clean is: the log spans days.
    assert required.select("event_day").distinct().count() > 1
    # The warm-up leaves nothing behind.
    assert not (tmp_path / "bench" / "warm_up").exists()

    # The redelivered days landed as one new day beside the log, not in it, and every row the
    # incremental run read was accounted for: none is new, so none is clean, and none is a bot's
    # (the bots' rows are stored too: a copy of one is a duplicate).
    again = result["redelivery"]
    landed = tmp_path / "bench" / "landing" / f"dt={again['batches'][0]}"
    assert again["batches"] == [landed.name.removeprefix("dt=")] and again["days"] == bench.REDELIVERED_DAYS
    logged = [p.name for p in sorted((tmp_path / "bench" / "landing").glob("dt=*")) if p != landed]
    copied = sorted({logged.index(f.name.split("-part")[0]) for f in landed.glob("*.gz")})
    # Whole days from inside the log (its first and last are partly empty), one after another.
    assert len(copied) == bench.REDELIVERED_DAYS and copied == list(range(copied[0], copied[0] + len(copied)))
    assert 0 < copied[0] and copied[-1] < len(logged) - 1
    raw = next((tmp_path / "bench").glob("raw-*"))
    assert not (raw / landed.name).exists()
    counts = again["accounting"]
    assert counts["rows_input"] == sum(1 for f in landed.glob("*.gz") for _ in gzip.open(f, "rt"))
    assert counts["rows_clean"] == 0 and counts["rows_filtered_bot"] == 0
    assert counts["rows_quarantined"] + counts["rows_duplicate"] == counts["rows_input"]
    assert again["duplicates_by_kind"]["earlier_batch"] == counts["rows_duplicate"] > 0


def test_a_rerun_replaces_its_line_in_the_reports_readme_and_keeps_the_notes(tmp_path):
    bench = load_benchmark("bench_clean")
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmark results\n\n| benchmark | command | result | machine |\n|---|---|---|---|\n"
                      "| bench-rules (x) | `make bench-rules` | 1 rule | m |\n\nNotes:\n- a note that stays\n")
    first = {"events": 1000, "clean_seconds": 9.0, "floor_seconds": 3.0, "ratio": 3.0, "events_per_s": 111,
             "ordered_floor_seconds": 4.0, "ratio_to_ordered_floor": 2.25, "machine": "m",
             "command": "python benchmarks/bench_clean.py --events 1000"}
    bench.record_in_readme(readme, first)
    bench.record_in_readme(readme, {**first, "clean_seconds": 6.0, "ratio": 2.0, "ratio_to_ordered_floor": 1.5})

    text = readme.read_text()
    lines = [line for line in text.splitlines() if line.startswith("| bench-clean 1,000 events |")]
    assert lines == ["| bench-clean 1,000 events | `python benchmarks/bench_clean.py --events 1000` | clean_events "
                     "6.0 s vs floor 3.0 s, ratio 2.0 (111 events/s); ordered floor 4.0 s, ratio 1.5 | m |"]
    assert "| bench-rules (x) |" in text
    bench.record_in_readme(readme, {**first, "required_floor_seconds": 5.0, "ratio_to_required_floor": 1.8,
                                    "required_floor_ratio": 1.67})
    assert [line for line in readme.read_text().splitlines() if line.startswith("| bench-clean 1,000 events |")] == [
        "| bench-clean 1,000 events | `python benchmarks/bench_clean.py --events 1000` | clean_events 9.0 s vs "
        "floor 3.0 s, ratio 3.0 (111 events/s); ordered floor 4.0 s, ratio 2.25; required floor 5.0 s (1.67x the "
        "floor), ratio 1.8 | m |"]
    bench.record_in_readme(readme, {**first, "redelivery": {"days": 3, "seconds": 2.5, "events_per_s": 120,
                                                             "accounting": {"rows_input": 300}}})
    assert [line for line in readme.read_text().splitlines() if line.startswith("| bench-clean 1,000 events |")] == [
        "| bench-clean 1,000 events | `python benchmarks/bench_clean.py --events 1000` | clean_events 9.0 s vs "
        "floor 3.0 s, ratio 3.0 (111 events/s); ordered floor 4.0 s, ratio 2.25; 3 days redelivered (300 lines): "
        "incremental run 2.5 s (120 lines/s) | m |"]
    assert text.endswith("\nNotes:\n- a note that stays\n")
