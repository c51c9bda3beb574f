"""The jobs shoprec runs, each a module with ``main(argv)`` (spark-submit entry) and ``run(spark, cfg, ...)``."""

# Job name -> (module, one-line description). Modules are imported only when their job runs.
JOBS = {
    "generate": ("shoprec.jobs.generate", "write a synthetic shop's raw event log"),
    "clean_events": ("shoprec.jobs.clean_events", "raw logs -> events_clean + events_quarantine"),
}
