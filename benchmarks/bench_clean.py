"""clean_events against its floor: the same raw files read and written as Parquet with no transforms.

A second reference, the *ordered floor*, adds the least work any job must do that looks at each
user's events in time order (duplicates across files, events per minute, sessions): the same read,
one shuffle by user, a sort by user and time, the same write. It shows how much of clean_events'
time that ordering costs, whatever the job does with it.

A third, the *required floor*, is the least clean_events' own requirements cost, whatever its
design: the raw lines read as text (a rejected line must reach the quarantine whole, and Spark's
JSON reader keeps the text of malformed lines only), parsed into the mapped fields, shuffled by
user and sorted by user and time, written as Parquet partitioned by the event's day (the layout of
events_clean). No validation, deduplication, quarantine or pseudonyms: the ratio of the required
floor to the floor is the lowest ratio any clean_events could reach on this machine.

Last, the daily path: with the tables built, a new landing day arrives holding copies of
``--redelivered-days`` earlier days (a partner's re-sent files, or a late export), and an
incremental run takes it. Its valid rows are all duplicates of events earlier batches stored (in
events_clean or, for bots' rows, events_bot), so the run checks them against every stored event
of those days.

    make bench-clean EVENTS=10000000        # or: python benchmarks/bench_clean.py --events N

The synthetic log is generated once per size and seed (kept under var/bench/) and all timings
are taken in the same run on the same Spark session, each warm: the floors and clean_events first
run once, untimed, on the log's first day. (A job's first run in a new JVM, as under spark-submit,
also pays for the JIT compiling Spark's generated code: at 2M events clean_events took 100.6 s in a
new session and 59-63 s after.) Results: reports/bench_clean.json and a line in reports/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "lib"))

from shoprec.config import GenerateConfig, load_config  # noqa: E402
from shoprec.spark import build_session  # noqa: E402

# clean_events pseudonymizes user ids (privacy.pseudonymize is on by default), so a benchmark
# without a secret of its own in the environment uses this one: benchmark tables are throwaway.
BENCH_SECRET = "shoprec-benchmark-secret-not-for-production-0123456789"
# Written into a raw log's directory once the log is complete; a log without it is generated again.
GENERATED_MARKER = "_GENERATED.json"
# Whole days of the log landing again as one new day, for the timing of an incremental run.
REDELIVERED_DAYS = 3


def machine() -> str:
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores, {memory_gib:.0f} GiB, {platform.system()} {platform.machine()}, Python {platform.python_version()}"


def log_settings(cfg, events: int, root: Path) -> GenerateConfig:
    """The generator settings of the benchmark's raw log of ``events`` (``out`` is its directory
    under ``root``, named by the settings' digest so that another shape gets another log)."""
    # The shop grows with the log: about 100 events per user and 1000 per item over two weeks,
    # so heavy human users stay under the bot limits as they would in a real shop.
    gen = dataclasses.replace(cfg.generate, events=events, days=14, partitions=max(4, events // 1_000_000),
                              users=max(5_000, events // 100), items=max(2_000, events // 1_000),
                              bot_users=max(3, events // 1_000_000))
    digest = hashlib.sha256(repr(dataclasses.replace(gen, out="")).encode()).hexdigest()[:10]
    return dataclasses.replace(gen, out=str(root / f"raw-{events}-{digest}"))


def is_generated(raw: Path) -> bool:
    """Whether a raw log directory was written to the end (its marker is written last)."""
    return (raw / GENERATED_MARKER).exists()


def ensure_log(spark, cfg, events: int, root: Path) -> Path:
    """Generate the benchmark's raw log unless this size and seed already exist."""
    from shoprec.synthetic import generate_events, write_events

    gen = log_settings(cfg, events, root)
    out = Path(gen.out)
    if is_generated(out):
        return out
    started = time.perf_counter()
    write_events(generate_events(spark, gen), str(out))
    (out / GENERATED_MARKER).write_text(
        json.dumps({"events": events, "seed": gen.seed, "seconds": time.perf_counter() - started}))
    return out


def read_raw(spark, source, raw: Path):
    """The raw JSON lines with every mapped field as a string: both floors' input."""
    from shoprec.etl.clean import mapped_fields

    schema = ", ".join(f"`{name}` string" for name in sorted(mapped_fields(source)))
    return spark.read.schema(schema).json(str(raw))


def time_floor(spark, source, raw: Path, out: Path) -> float:
    """Read the raw JSON lines with their fields as strings and write them as Parquet, nothing else."""
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    read_raw(spark, source, raw).write.mode("overwrite").parquet(str(out))
    return time.perf_counter() - started


def warm_up(spark, cfg, raw: Path, out: Path) -> None:
    """Run the ordered floor, the required floor and clean_events once on the first day's files,
    untimed: whichever timing came first would otherwise also pay for the JVM compiling Spark's
    generated code (at 2M events the floor took 12.8 s first and 6 s after; clean_events 100.6 s
    first and 59-63 s after), and each timing is taken warm, as the others are."""
    source = cfg.sources["synthetic"]
    first_day = sorted(p for p in raw.iterdir() if p.is_dir())[0]
    time_ordered_floor(spark, source, first_day, out / "floor")
    time_required_floor(spark, source, first_day, out / "floor")
    landing = out / "landing"
    landing.mkdir(parents=True)
    (landing / first_day.name).symlink_to(first_day.resolve())
    time_clean(spark, bench_config(cfg, landing, out), first_day.name.removeprefix("dt="), full_rebuild=True)
    shutil.rmtree(out, ignore_errors=True)


def time_ordered_floor(spark, source, raw: Path, out: Path) -> float:
    """The floor plus one shuffle by user and a sort by user and time within each partition."""
    from pyspark.sql import functions as F

    user, time_field = source.columns["user_id"], source.columns["event_time"]
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    (read_raw(spark, source, raw).repartition(F.col(user)).sortWithinPartitions(user, time_field)
     .write.mode("overwrite").parquet(str(out)))
    return time.perf_counter() - started


def time_required_floor(spark, source, raw: Path, out: Path) -> float:
    """The least clean_events' requirements cost (see the module docstring): lines read as text and
    parsed, one shuffle by user, a sort by user and time, a write partitioned by the event's day."""
    from pyspark.sql import functions as F

    from shoprec.etl.clean import mapped_fields

    user, time_field = source.columns["user_id"], source.columns["event_time"]
    schema = ", ".join(f"`{name}` string" for name in sorted(mapped_fields(source)))
    lines = spark.read.option("lineSep", "\n").text(str(raw))
    fields = lines.select(F.from_json("value", schema).alias("fields")).select("fields.*")
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    # The day as the raw text has it: parsing the time is validation, which the floor leaves out.
    (fields.withColumn("event_day", F.substring(time_field, 1, 10))
     .repartition(F.col(user)).sortWithinPartitions(user, time_field)
     .write.partitionBy("event_day").mode("overwrite").parquet(str(out)))
    return time.perf_counter() - started


def bench_config(cfg, landing: Path, root: Path):
    """``cfg`` reading the synthetic log from ``landing``, with its tables and MLflow store under ``root``."""
    return dataclasses.replace(
        cfg,
        warehouse=dataclasses.replace(cfg.warehouse, root=str(root / "warehouse")),
        input=dataclasses.replace(cfg.input, source="synthetic", path=str(landing)),
        mlflow=dataclasses.replace(cfg.mlflow, tracking_uri=f"sqlite:///{root}/mlflow.db",
                                   artifact_location=str(root / "mlflow-artifacts")),
    )


def landing_of(raw: Path, root: Path) -> Path:
    """A landing folder under ``root`` holding the raw log's days (links to them), where a
    redelivery can land without touching the generated log."""
    landing = root / "landing"
    shutil.rmtree(landing, ignore_errors=True)
    landing.mkdir(parents=True)
    for day in sorted(p for p in raw.iterdir() if p.is_dir()):
        (landing / day.name).symlink_to(day.resolve())
    return landing


def redeliver(landing: Path, days: int) -> str:
    """Copy the files of ``days`` whole days from the middle of the log into a new landing day,
    the day after the log's last; return that day."""
    logged = sorted(p for p in landing.iterdir() if p.is_dir())
    last = logged[-1].name.removeprefix("dt=")
    landing_day = (datetime.date.fromisoformat(last) + datetime.timedelta(days=1)).isoformat()
    target = landing / f"dt={landing_day}"
    target.mkdir()
    # The middle of the log: its first and last days are partly empty (sessions run past midnight).
    first = max(0, len(logged) // 2 - days // 2)
    for day in logged[first:first + days]:
        for f in day.glob("*.gz"):
            shutil.copy(f, target / f"{day.name}-{f.name}")
    return landing_day


def time_clean(spark, cfg, run_date: str, full_rebuild: bool) -> tuple[float, object]:
    from shoprec.jobs import clean_events

    started = time.perf_counter()
    summary = clean_events.run(spark, cfg, run_date, full_rebuild=full_rebuild)
    return time.perf_counter() - started, summary


def measure(spark, cfg, events: int, root: Path, redelivered_days: int = REDELIVERED_DAYS) -> dict:
    """Generate (or reuse) a log of ``events`` events under ``root`` and time, after the warm-up,
    the floor, the ordered floor, the required floor and clean_events on it, then (unless
    ``redelivered_days`` is 0) the incremental run of a redelivery; the result without its
    command line."""
    source = cfg.sources["synthetic"]
    raw = ensure_log(spark, cfg, events, root)
    warm_up(spark, cfg, raw, root / "warm_up")
    floor_seconds = time_floor(spark, source, raw, root / "floor")
    ordered_floor_seconds = time_ordered_floor(spark, source, raw, root / "ordered_floor")
    required_floor_seconds = time_required_floor(spark, source, raw, root / "required_floor")
    landing = landing_of(raw, root)
    shutil.rmtree(root / "warehouse", ignore_errors=True)
    job_cfg = bench_config(cfg, landing, root)
    clean_seconds, summary = time_clean(spark, job_cfg, "2026-01-15", full_rebuild=True)
    result = {
        "events": events,
        "clean_seconds": round(clean_seconds, 2),
        "floor_seconds": round(floor_seconds, 2),
        "ratio": round(clean_seconds / floor_seconds, 3),
        "events_per_s": round(events / clean_seconds),
        "ordered_floor_seconds": round(ordered_floor_seconds, 2),
        "ratio_to_ordered_floor": round(clean_seconds / ordered_floor_seconds, 3),
        "required_floor_seconds": round(required_floor_seconds, 2),
        "ratio_to_required_floor": round(clean_seconds / required_floor_seconds, 3),
        # The lowest ``ratio`` any clean_events could reach here: its requirements alone cost this.
        "required_floor_ratio": round(required_floor_seconds / floor_seconds, 3),
        "stage_seconds": summary.stage_seconds,
        "accounting": summary.accounting,
        "machine": machine(),
        "spark_master": cfg.spark.master,
    }
    if redelivered_days:
        landing_day = redeliver(landing, redelivered_days)
        seconds, redelivery = time_clean(spark, job_cfg, landing_day, full_rebuild=False)
        result["redelivery"] = {
            "days": redelivered_days, "batches": redelivery.batches, "seconds": round(seconds, 2),
            "events_per_s": round(redelivery.accounting["rows_input"] / seconds),
            "accounting": redelivery.accounting, "duplicates_by_kind": redelivery.duplicates_by_kind,
            "stage_seconds": redelivery.stage_seconds,
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--conf", default=str(PROJECT / "conf" / "local.yaml"))
    parser.add_argument("--work", default=str(PROJECT / "var" / "bench"))
    parser.add_argument("--report", default=str(PROJECT / "reports" / "bench_clean.json"))
    parser.add_argument("--redelivered-days", type=int, default=REDELIVERED_DAYS,
                        help="days of the log landing again for the incremental run's timing (0: none)")
    args = parser.parse_args(argv)
    from shoprec.jobs.common import setup_logging

    setup_logging()

    os.environ.setdefault(load_config(args.conf).privacy.secret_env, BENCH_SECRET)
    cfg = load_config(args.conf)
    root = Path(args.work)
    root.mkdir(parents=True, exist_ok=True)
    spark = build_session(cfg.spark, "shoprec-bench-clean")
    try:
        result = measure(spark, cfg, args.events, root, args.redelivered_days)
    finally:
        spark.stop()
    result["command"] = " ".join(["python benchmarks/bench_clean.py", *(sys.argv[1:] if argv is None else argv)])
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(json.dumps(result, indent=1) + "\n")
    record_in_readme(Path(args.report).parent / "README.md", result)
    print(json.dumps(result, indent=1))
    return 0


def record_in_readme(readme: Path, result: dict, key: str | None = None, text: str | None = None,
                     replaces: str | None = None) -> None:
    """Put this result's line into reports/README.md, replacing the lines that start with
    ``replaces`` (default: the same ``key``; the key defaults to the bench-clean line for this many
    events)."""
    if key is None:
        key = f"| bench-clean {result['events']:,} events |"
        text = (f"clean_events {result['clean_seconds']} s vs floor {result['floor_seconds']} s, ratio "
                f"{result['ratio']} ({result['events_per_s']:,} events/s); ordered floor "
                f"{result['ordered_floor_seconds']} s, ratio {result['ratio_to_ordered_floor']}")
        if "required_floor_seconds" in result:
            text += (f"; required floor {result['required_floor_seconds']} s ({result['required_floor_ratio']}x "
                     f"the floor), ratio {result['ratio_to_required_floor']}")
        if "redelivery" in result:
            again = result["redelivery"]
            text += (f"; {again['days']} days redelivered ({again['accounting']['rows_input']:,} lines): incremental "
                     f"run {again['seconds']} s ({again['events_per_s']:,} lines/s)")
    line = f"{key} `{result['command']}` | {text} | {result['machine']} |"
    header = ("# Benchmark results\n\nEach row: the command that produced it, the result, and the machine it ran on.\n\n"
              "| benchmark | command | result | machine |\n|---|---|---|---|\n")
    rows, notes = [], ""
    if readme.exists():
        current = readme.read_text()
        rows = [r for r in current.splitlines() if r.startswith("| ") and not r.startswith("| benchmark")
                and not r.startswith(replaces or key)]
        notes = current[current.index("\nNotes:"):] if "\nNotes:" in current else ""
    readme.write_text(header + "\n".join(sorted(rows + [line])) + "\n" + notes)


if __name__ == "__main__":
    sys.exit(main())
