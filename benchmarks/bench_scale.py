"""How each job's cost grows with the log: the whole pipeline on synthetic logs of several sizes.

    make bench-scale                                   # 1M, 5M and 20M events; clean_events alone at 50M
    make bench-scale SCALE_ARGS="--sizes 200000 400000 800000 --clean-only-sizes"

For every size the synthetic log is generated once (kept under var/bench/, shared with
bench-clean), then every job of the daily DAG runs as its own ``shoprec run`` process on the
embedded local config, in the DAG's order, for the log's last day. Per job: wall time, the peak
memory of the job's whole process tree (the Spark driver JVM, which holds the executors in local
mode, its Python workers and the Horovod training processes; summed PSS, sampled every 0.5 s) and
the bytes of the tables it wrote. A JVM keeps heap it once touched, so the peak is bounded by the
driver's heap (``--driver-memory``) plus its native memory, not only by what a job needs. The growth exponent of each job is the slope of a least-squares
line through (log events, log seconds). A job that fails (out of memory, ...) is recorded with its
exit code and the end of its log, and the jobs after it at that size are skipped.

Writes ``reports/bench_scale.json`` (per job: ``sizes``, ``seconds``, ``exponent``,
``peak_rss_mb``, ``output_bytes``), ``reports/bench_scale.png`` (time against events, log-log)
and a line in ``reports/README.md``. All three are rewritten after every job, so a run that is
stopped part-way keeps what it measured; its report says ``"complete": false`` and names the last
job measured. ``--add-to-report`` keeps the figures the existing report holds and adds this run's, so
that sizes too long to run in one sitting can be measured one at a time into one report (which
names every command its figures came from). A size's run can also be split: ``--jobs`` naming jobs
after clean_events (with ``--add-to-report``) continues in the warehouse an earlier run of that
size left under ``--work``, once the report holds that run's jobs before them (here both parts are
added to the report of the smaller sizes):

    python benchmarks/bench_scale.py --sizes 20000000 --clean-only-sizes --add-to-report \
        --jobs clean_events build_profiles train_als mine_rules
    python benchmarks/bench_scale.py --sizes 20000000 --clean-only-sizes --add-to-report \
        --jobs build_training_set train_ranker score search_rerank evaluate
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_clean import BENCH_SECRET, ensure_log, is_generated, log_settings, machine, record_in_readme  # noqa: E402
from shoprec.catalog import TABLES  # noqa: E402
from shoprec.config import load_config  # noqa: E402

JOBS = ["clean_events", "build_profiles", "train_als", "mine_rules", "build_training_set", "train_ranker",
        "score", "search_rerank", "evaluate"]
RUN_DATE = "2026-01-14"   # the last of the generated log's 14 days (generate.start_date 2026-01-01)
SHOPREC = Path(sys.executable).parent / "shoprec"


class PeakMemory:
    """The largest summed memory of a process and its descendants, sampled in a thread.

    Summed as PSS (proportional set size: each shared page split among the processes sharing
    it), since PySpark's workers are forks that share most of their pages: summed RSS would count
    them once per fork.
    """

    def __init__(self, pid: int, interval: float = 0.5):
        import psutil

        self._root, self._interval, self.peak_bytes = psutil.Process(pid), interval, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        while not self._done.is_set():
            total = 0
            try:
                for proc in [self._root, *self._root.children(recursive=True)]:
                    try:
                        total += proc.memory_full_info().pss
                    except psutil.Error:
                        pass
            except psutil.Error:
                break
            self.peak_bytes = max(self.peak_bytes, total)
            self._done.wait(self._interval)

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self.peak_bytes


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def write_conf(work: Path, raw: Path, driver_memory: str, events: int) -> Path:
    """The embedded local config with its state under ``work`` and the raw log at ``raw``."""
    conf = work / "bench.yaml"
    conf.write_text(yaml.safe_dump({
        "extends": str(PROJECT / "conf" / "local.yaml"),
        "spark": {"shuffle_partitions": max(32, events // 250_000),
                  "conf": {"spark.driver.memory": driver_memory,
                           "spark.local.dir": str(work / "spark-local"),
                           "spark.hadoop.javax.jdo.option.ConnectionURL":
                               f"jdbc:derby:;databaseName={work}/metastore_db;create=true",
                           "spark.sql.warehouse.dir": str(work / "spark-warehouse")}},
        "warehouse": {"root": str(work / "warehouse")},
        "mlflow": {"tracking_uri": f"sqlite:///{work}/mlflow.db", "artifact_location": str(work / "artifacts")},
        "input": {"source": "synthetic", "path": str(raw)},
        "ranker": {"models_root": str(work / "models")},
    }))
    return conf


def run_job(job: str, conf: Path, work: Path, env: dict[str, str]) -> dict:
    """One job as its own process: seconds, peak memory of its process tree, exit code."""
    log = work / f"{job}.log"
    extra = ["--full-rebuild"] if job == "clean_events" else []
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen([str(SHOPREC), "run", job, "--conf", str(conf), "--run-date", RUN_DATE, *extra],
                                cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
        memory = PeakMemory(proc.pid)
        code = proc.wait()
    seconds = time.perf_counter() - started
    result = {"seconds": round(seconds, 1), "peak_rss_mb": round(memory.stop() / 2**20), "exit_code": code}
    if code != 0:
        result["log_tail"] = log.read_text(errors="replace")[-3000:]
    return result


def bench_size(events: int, jobs: list[str], root: Path, driver_memory: str, env: dict[str, str],
               results: dict, after_each_job, continuing: bool = False) -> None:
    """Run ``jobs`` for a log of ``events``, on a fresh warehouse or, ``continuing``, on the one an
    earlier run of the jobs before them left, putting each job's result into ``results`` and
    calling ``after_each_job()`` once it is there."""
    from shoprec.spark import build_session

    cfg = load_config(PROJECT / "conf" / "local.yaml")
    raw = Path(log_settings(cfg, events, root).out)
    if not is_generated(raw):  # Spark only to generate: a log of this size and seed is reused as it is
        spark = build_session(cfg.spark, "shoprec-bench-scale-generate")
        try:
            raw = ensure_log(spark, cfg, events, root)
        finally:
            spark.stop()
    work = size_work(root, events)
    if not continuing:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    conf = write_conf(work, raw, driver_memory, events)
    bench_cfg = load_config(conf)
    for job in jobs:
        print(f"bench-scale: {events:,} events: {job} ...", flush=True)
        result = run_job(job, conf, work, env)
        result["output_bytes"] = sum(tree_bytes(Path(bench_cfg.table_path(t.name))) for t in TABLES if t.job == job)
        results[job] = result
        print(f"bench-scale: {events:,} events: {job}: {result['seconds']} s, peak {result['peak_rss_mb']} MB, "
              f"exit {result['exit_code']}", flush=True)
        after_each_job()
        if result["exit_code"] != 0:
            break


def size_work(root: Path, events: int) -> Path:
    """Where one size's run keeps its warehouse, MLflow store, config and job logs."""
    return root / f"scale-{events}"


def cannot_continue(earlier: dict | None, events: int, before: list[str], root: Path) -> str | None:
    """Why a run of the jobs after ``before`` cannot continue the size ``events`` (None if it can)."""
    if earlier is None:
        return "no saved report to add to (continuing needs --add-to-report and the report of the earlier run)"
    measured = measured_runs(earlier).get(events, {})
    missing = [job for job in before if measured.get(job, {}).get("exit_code") != 0]
    if missing:
        return f"the report holds no successful {', '.join(missing)} at {events:,} events"
    if not (size_work(root, events) / "warehouse").is_dir():
        return f"no warehouse of an earlier run under {size_work(root, events)}"
    return None


def exponent(sizes: list[int], seconds: list[float]) -> float | None:
    """Slope of the least-squares line through (log size, log seconds)."""
    if len(sizes) < 2:
        return None
    xs, ys = [math.log(s) for s in sizes], [math.log(t) for t in seconds]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    return round(sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs), 3)


def summarise(runs: dict[int, dict]) -> dict:
    """Per job, over the sizes it ran at: sizes, seconds, growth exponent, peaks, output bytes, failures."""
    jobs = {}
    for job in JOBS:
        done = [(events, r[job]) for events, r in sorted(runs.items()) if r.get(job, {}).get("exit_code") == 0]
        failed = {str(events): r[job] for events, r in runs.items() if job in r and r[job]["exit_code"] != 0}
        if not done and not failed:
            continue
        sizes, seconds = [e for e, _ in done], [r["seconds"] for _, r in done]
        jobs[job] = {"sizes": sizes, "seconds": seconds, "exponent": exponent(sizes, seconds),
                     "peak_rss_mb": [r["peak_rss_mb"] for _, r in done],
                     "output_bytes": [r["output_bytes"] for _, r in done], "failed": failed}
    return jobs


def plot(jobs: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5.5))
    for job, result in jobs.items():
        if result["sizes"]:
            label = f"{job} (exponent {result['exponent']})" if result["exponent"] is not None else job
            axes.plot(result["sizes"], result["seconds"], marker="o", label=label)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("events in the raw log")
    axes.set_ylabel("wall seconds")
    axes.set_title("shoprec jobs: time against log size (log-log)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=120)


def native_lapack() -> str | None:
    """The native LAPACK Spark's ALS would load (liblapack.so.3), or None: it falls back to the JVM's."""
    import ctypes.util

    return ctypes.util.find_library("lapack")


def measured_runs(report: dict) -> dict[int, dict]:
    """The per-size job results a saved report holds, in the shape ``ScaleReport.save`` takes."""
    runs: dict[int, dict] = {}
    for job, r in report["jobs"].items():
        for events, seconds, peak, output in zip(r["sizes"], r["seconds"], r["peak_rss_mb"], r["output_bytes"]):
            runs.setdefault(events, {})[job] = {"seconds": seconds, "peak_rss_mb": peak, "output_bytes": output,
                                                "exit_code": 0}
        for events, failure in r["failed"].items():
            runs.setdefault(int(events), {})[job] = failure
    return {events: {job: jobs[job] for job in JOBS if job in jobs} for events, jobs in sorted(runs.items())}


class ScaleReport:
    """The report of one bench-scale run: JSON, plot and README line, rewritten as results arrive.

    With ``earlier`` (a report saved before, see ``--add-to-report``) the report holds that run's
    figures too: a job measured now at a size replaces the same job's figure at that size, and the
    report names every command its figures came from.
    """

    def __init__(self, path: Path, planned: dict[int, list[str]], command: str, driver_memory: str,
                 earlier: dict | None = None):
        self.path, self.command, self.driver_memory = path, command, driver_memory
        self.earlier_runs = measured_runs(earlier) if earlier else {}
        self.planned = {int(events): jobs for events, jobs in (earlier or {}).get("planned", {}).items()}
        self.planned.update(planned)
        # Which command measured each size's jobs: a command all of whose figures were measured
        # again later is no longer named. (A report saved before this was kept names every command.)
        self.earlier_sources = {int(events): jobs for events, jobs in (earlier or {}).get("measured_by", {}).items()}
        self.legacy_commands = [] if (earlier or {}).get("measured_by") is not None else [
            c for c in (earlier or {}).get("commands", [(earlier or {}).get("command")]) if c]

    def save(self, runs: dict[int, dict], complete: bool) -> dict:
        """Write what ``runs`` holds so far (with the earlier report's other sizes); ``complete``
        says whether every job planned for this run was run (a failed job and the ones skipped
        after it count as run)."""
        # Job by job: a job measured again at a size replaces its earlier figure, the size's other
        # jobs keep theirs (a continued run adds the jobs after the ones measured before).
        merged = {events: dict(results) for events, results in self.earlier_runs.items()}
        for events, results in runs.items():
            merged.setdefault(events, {}).update(results)
        jobs = summarise(merged)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        plot(jobs, self.path.with_suffix(".png"))
        worst = max((r["exponent"] for r in jobs.values() if r["exponent"] is not None), default=None)
        failures = {job: list(r["failed"]) for job, r in jobs.items() if r["failed"]}
        last = [(events, job) for events, results in runs.items() for job in results]
        measured_by = {events: dict(jobs) for events, jobs in self.earlier_sources.items()}
        for events, results in runs.items():
            measured_by.setdefault(events, {}).update({job: self.command for job in results})
        named = [c for _, jobs in sorted(measured_by.items()) for c in jobs.values()]
        commands = list(dict.fromkeys(self.legacy_commands + named))
        result = {
            "jobs": jobs, "worst_exponent": worst, "failures": failures, "complete": complete,
            "planned": {str(events): planned_jobs for events, planned_jobs in sorted(self.planned.items())},
            "last_measured": {"events": last[-1][0], "job": last[-1][1]} if last else None,
            "goal": "every job's exponent <= 1.1, and no job out of memory at the largest size",
            "machine": machine(), "native_lapack": native_lapack(), "driver_memory": self.driver_memory,
            "command": " + ".join(commands), "commands": commands,
            "measured_by": {str(events): jobs for events, jobs in sorted(measured_by.items())},
        }
        self.path.write_text(json.dumps(result, indent=1) + "\n")
        sizes = ", ".join(f"{s:,}" for s in sorted(self.planned))
        progress = "" if complete or not last else (
            f"partial, stopped or still running after {last[-1][1]} at {last[-1][0]:,} events; ")
        record_in_readme(self.path.parent / "README.md", key=f"| bench-scale {sizes} events |",
                         replaces="| bench-scale ",
                         text=(f"{progress}worst growth exponent {worst}, failures {failures or 'none'}; per job in "
                               f"{self.path.name}, plot {self.path.with_suffix('.png').name}"), result=result)
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000, 20_000_000])
    parser.add_argument("--clean-only-sizes", type=int, nargs="*", default=[50_000_000],
                        help="sizes at which only clean_events runs")
    parser.add_argument("--jobs", nargs="+", choices=JOBS, default=JOBS,
                        help="the jobs to time, consecutive in the DAG's order (each needs the ones before it: "
                             "starting after clean_events continues the warehouse an earlier run left)")
    parser.add_argument("--driver-memory", default="12g", help="the local Spark driver's heap (holds the executors)")
    parser.add_argument("--work", default=str(PROJECT / "var" / "bench"))
    parser.add_argument("--report", default=str(PROJECT / "reports" / "bench_scale.json"))
    parser.add_argument("--add-to-report", action="store_true",
                        help="keep the sizes the existing report holds and add (or re-measure) these ones, so that "
                             "one report can gather runs too long for one sitting")
    args = parser.parse_args(argv)
    first = JOBS.index(args.jobs[0])
    if args.jobs != JOBS[first:first + len(args.jobs)]:
        parser.error(f"--jobs must be consecutive jobs of {' '.join(JOBS)}, in that order")
    if first and args.clean_only_sizes:
        parser.error("--jobs starting after clean_events continues earlier runs: give --clean-only-sizes no size")
    root = Path(args.work)
    earlier = json.loads(Path(args.report).read_text()) if args.add_to_report and Path(args.report).exists() else None
    for events in args.sizes if first else []:
        reason = cannot_continue(earlier, events, JOBS[:first], root)
        if reason:
            parser.error(f"cannot continue {events:,} events from {args.jobs[0]}: {reason}")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOPREC__", "PYSPARK_GATEWAY"))}
    env.setdefault(load_config(PROJECT / "conf" / "local.yaml").privacy.secret_env, BENCH_SECRET)
    env["SPARK_LOG_LEVEL"] = "WARN"
    # In local mode the driver JVM runs the tasks: one BLAS thread each, as on executors (README "train_als").
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    to_run = {events: (args.jobs if events in args.sizes else ["clean_events"])
              for events in sorted(set(args.sizes) | set(args.clean_only_sizes))}
    # A continued size's run is the earlier run's jobs and these.
    planned = {events: JOBS[:first] + jobs for events, jobs in to_run.items()}
    command = " ".join(["python benchmarks/bench_scale.py", *(sys.argv[1:] if argv is None else argv)])
    report = ScaleReport(Path(args.report), planned, command, args.driver_memory, earlier)
    runs: dict[int, dict] = {}
    for events, jobs in to_run.items():
        runs[events] = {}
        bench_size(events, jobs, root, args.driver_memory, env, runs[events],
                   after_each_job=lambda: report.save(runs, complete=False), continuing=first > 0)
    result = report.save(runs, complete=True)
    print(json.dumps({job: {k: r[k] for k in ("sizes", "seconds", "exponent")} for job, r in result["jobs"].items()},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
