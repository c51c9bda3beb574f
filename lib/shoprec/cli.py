"""The ``shoprec`` command: run any job locally with the same arguments spark-submit takes."""

from __future__ import annotations

import argparse
import importlib
import sys

from shoprec.jobs import JOBS


def _job_list() -> str:
    width = max(len(name) for name in JOBS)
    return "\n".join(f"  {name:<{width}}  {description}" for name, (_, description) in JOBS.items())


def main(argv: list[str] | None = None) -> int:
    """``shoprec run <job> [args]``, ``shoprec generate [args]``, ``shoprec query SQL``, ``shoprec jobs``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="shoprec",
        description="Distributed recommender jobs for e-commerce on Apache Spark.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"jobs:\n{_job_list()}\n\n"
               "Each job takes --conf FILE and --run-date YYYY-MM-DD; `shoprec run JOB --help` shows the rest.\n"
               "On a cluster run the same job with: spark-submit jobs/JOB.py --conf ... --run-date ...",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help="run a job", add_help=False)
    run.add_argument("job", choices=sorted(JOBS), metavar="JOB")
    commands.add_parser("generate", help="write a synthetic shop log (the generate job)", add_help=False)
    commands.add_parser("jobs", help="list the jobs")
    commands.add_parser("query", help="read-only SQL over the output tables with DuckDB (no Spark)", add_help=False)

    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    command = argv[0]
    if command == "jobs":
        print(_job_list())
        return 0
    if command == "query":
        from shoprec.query import main as query

        return query(argv[1:])
    if command == "generate":
        return _run_job("generate", argv[1:])
    if command == "run":
        if len(argv) < 2 or argv[1].startswith("-"):
            parser.parse_args(["run", "--help"] if len(argv) > 1 else ["run"])
        if argv[1] not in JOBS:
            parser.error(f"unknown job {argv[1]!r}; jobs:\n{_job_list()}")
        return _run_job(argv[1], argv[2:])
    parser.error(f"unknown command {command!r}")
    return 2


def _run_job(job: str, argv: list[str]) -> int:
    module = importlib.import_module(JOBS[job][0])
    return module.main(argv)


if __name__ == "__main__":
    sys.exit(main())
