"""The scale benchmark: a real run on two small logs writes the report the README describes, and a
report saved part-way says what it holds and what is missing."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import PROJECT, load_benchmark

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_run_on_two_sizes_reports_seconds_growth_memory_and_output_per_job(tmp_path):
    report = tmp_path / "reports" / "bench_scale.json"
    # Its own process: the benchmark starts and stops Spark sessions of its own.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_")}
    done = subprocess.run([sys.executable, str(PROJECT / "benchmarks" / "bench_scale.py"), "--sizes", "10000", "30000",
                           "--clean-only-sizes", "--jobs", "clean_events", "--driver-memory", "2g",
                           "--work", str(tmp_path / "work"), "--report", str(report)],
                          cwd=PROJECT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    result = json.loads(report.read_text())
    assert result["complete"] is True and result["failures"] == {}
    assert result["last_measured"] == {"events": 30000, "job": "clean_events"}
    clean = result["jobs"]["clean_events"]
    assert clean["sizes"] == [10000, 30000]
    assert all(seconds > 0 for seconds in clean["seconds"])
    expected = load_benchmark("bench_scale").exponent(clean["sizes"], clean["seconds"])
    assert result["worst_exponent"] == clean["exponent"] == expected
    # The JVM alone takes more than 100 MB; a bigger log writes more Parquet.
    assert all(peak > 100 for peak in clean["peak_rss_mb"])
    assert 0 < clean["output_bytes"][0] < clean["output_bytes"][1]
    assert set(result["jobs"]) == {"clean_events"}
    assert "native_lapack" in result and result["planned"] == {"10000": ["clean_events"], "30000": ["clean_events"]}
    assert (report.parent / "bench_scale.png").stat().st_size > 0
    lines = [line for line in (report.parent / "README.md").read_text().splitlines()
             if line.startswith("| bench-scale 10,000, 30,000 events |")]
    assert len(lines) == 1 and "partial" not in lines[0] and f"worst growth exponent {clean['exponent']}" in lines[0]

    # A size's run split in two: the next job continues in the warehouse the first part left.
    def continue_with(*args):
        return subprocess.run([sys.executable, str(PROJECT / "benchmarks" / "bench_scale.py"), "--clean-only-sizes",
                               "--jobs", "build_profiles", "--driver-memory", "2g", "--work", str(tmp_path / "work"),
                               "--report", str(report), *args],
                              cwd=PROJECT, env=env, capture_output=True, text=True, timeout=900)

    refused = continue_with("--sizes", "10000")
    assert refused.returncode == 2 and "continuing needs --add-to-report" in refused.stderr
    refused = continue_with("--sizes", "20000", "--add-to-report")
    assert refused.returncode == 2 and "no successful clean_events at 20,000 events" in refused.stderr
    continued = continue_with("--sizes", "10000", "--add-to-report")
    assert continued.returncode == 0, continued.stdout[-3000:] + continued.stderr[-3000:]
    result = json.loads(report.read_text())
    assert result["jobs"]["clean_events"]["seconds"] == clean["seconds"]
    assert result["jobs"]["build_profiles"]["sizes"] == [10000]
    assert result["jobs"]["build_profiles"]["output_bytes"][0] > 0
    assert result["planned"]["10000"] == ["clean_events", "build_profiles"]
    assert result["measured_by"]["10000"]["clean_events"] != result["measured_by"]["10000"]["build_profiles"]


def test_a_report_saved_part_way_keeps_what_was_measured_and_says_it_is_partial(tmp_path):
    bench = load_benchmark("bench_scale")
    path = tmp_path / "bench_scale.json"
    planned = {1000: ["clean_events", "build_profiles"], 2000: ["clean_events", "build_profiles"]}
    scale = bench.ScaleReport(path, planned, "python benchmarks/bench_scale.py --sizes 1000 2000", "1g")
    measured = {"seconds": 4.0, "peak_rss_mb": 500, "exit_code": 0, "output_bytes": 10}
    runs = {1000: {"clean_events": measured, "build_profiles": {**measured, "seconds": 2.0}},
            2000: {"clean_events": {**measured, "seconds": 8.0}}}
    scale.save(runs, complete=False)

    result = json.loads(path.read_text())
    assert result["complete"] is False
    assert result["last_measured"] == {"events": 2000, "job": "clean_events"}
    assert result["planned"] == {"1000": ["clean_events", "build_profiles"], "2000": ["clean_events", "build_profiles"]}
    assert result["jobs"]["clean_events"]["sizes"] == [1000, 2000]
    assert result["jobs"]["clean_events"]["exponent"] == pytest.approx(1.0)
    assert result["jobs"]["build_profiles"]["sizes"] == [1000] and result["jobs"]["build_profiles"]["exponent"] is None
    line = next(line for line in (tmp_path / "README.md").read_text().splitlines() if line.startswith("| bench-scale"))
    assert "partial, stopped or still running after clean_events at 2,000 events" in line

    runs[2000]["build_profiles"] = {**measured, "seconds": 1.0, "exit_code": 137, "log_tail": "Killed"}
    scale.save(runs, complete=True)
    result = json.loads(path.read_text())
    assert result["complete"] is True and result["failures"] == {"build_profiles": ["2000"]}
    lines = [line for line in (tmp_path / "README.md").read_text().splitlines() if line.startswith("| bench-scale")]
    assert len(lines) == 1 and "partial" not in lines[0] and "failures {'build_profiles': ['2000']}" in lines[0]


def test_a_run_added_to_a_saved_report_keeps_its_sizes_and_replaces_a_size_measured_again(tmp_path):
    bench = load_benchmark("bench_scale")
    path = tmp_path / "bench_scale.json"
    measured = {"seconds": 4.0, "peak_rss_mb": 500, "exit_code": 0, "output_bytes": 10}
    first = bench.ScaleReport(path, {1000: ["clean_events"], 2000: ["clean_events"]}, "first command", "1g")
    first.save({1000: {"clean_events": measured}, 2000: {"clean_events": {**measured, "seconds": 99.0}}},
               complete=True)

    second = bench.ScaleReport(path, {2000: ["clean_events"], 4000: ["clean_events"]}, "second command", "1g",
                               earlier=json.loads(path.read_text()))
    second.save({2000: {"clean_events": {**measured, "seconds": 8.0}},
                 4000: {"clean_events": {**measured, "seconds": 16.0, "output_bytes": 40}}}, complete=True)

    result = json.loads(path.read_text())
    clean = result["jobs"]["clean_events"]
    assert clean["sizes"] == [1000, 2000, 4000] and clean["seconds"] == [4.0, 8.0, 16.0]
    assert clean["output_bytes"] == [10, 10, 40] and clean["exponent"] == pytest.approx(1.0)
    assert result["planned"] == {"1000": ["clean_events"], "2000": ["clean_events"], "4000": ["clean_events"]}
    assert result["commands"] == ["first command", "second command"]
    assert result["last_measured"] == {"events": 4000, "job": "clean_events"}
    assert result["measured_by"] == {"1000": {"clean_events": "first command"},
                                     "2000": {"clean_events": "second command"},
                                     "4000": {"clean_events": "second command"}}
    lines = [line for line in (tmp_path / "README.md").read_text().splitlines() if line.startswith("| bench-scale")]
    assert len(lines) == 1 and lines[0].startswith("| bench-scale 1,000, 2,000, 4,000 events |")

    third = bench.ScaleReport(path, {1000: ["clean_events"]}, "third command", "1g", earlier=json.loads(path.read_text()))
    third.save({1000: {"clean_events": {**measured, "seconds": 2.0}}}, complete=True)
    result = json.loads(path.read_text())
    # Nothing the first command measured is left in the report: it is no longer named.
    assert result["commands"] == ["third command", "second command"]
    assert result["command"] == "third command + second command"
