"""Which raw files a clean_events run reads, and into which ingest batches."""

from shoprec.io.fs import FileStatus
from shoprec.jobs.clean_events import plan_batches


def status(path: str, size: int = 10) -> FileStatus:
    return FileStatus(path, size, 1)


def test_plan_batches():
    pattern = r"dt=(\d{4}-\d{2}-\d{2})"
    d1, d2, flat = status("s3a://b/raw/dt=2026-01-01/a.gz"), status("s3a://b/raw/dt=2026-01-02/b.gz"), status("/x/log.csv")
    # Nothing processed: batches by landing date; a file without one goes to the run date.
    assert plan_batches([d1, d2, flat], {}, "2026-01-05", pattern) == {
        "2026-01-01": [d1], "2026-01-02": [d2], "2026-01-05": [flat]}
    logged = {"2026-01-01": [d1], "2026-01-04": [flat]}
    # Processed files are skipped; a new file in a processed day rebuilds that day whole.
    late = status("s3a://b/raw/dt=2026-01-01/late.gz")
    assert plan_batches([d1, d2, flat], logged, "2026-01-05", pattern) == {"2026-01-02": [d2]}
    assert plan_batches([d1, late, flat], logged, "2026-01-05", pattern) == {"2026-01-01": [d1, late]}
    # A file rewritten in place (new size) is processed again, in the batch it belonged to.
    assert plan_batches([status("/x/log.csv", 99)], logged, "2026-01-05", pattern) == {
        "2026-01-04": [status("/x/log.csv", 99)]}
    assert plan_batches([d1, d2], logged, "2026-01-05", pattern, backfill=("2026-01-02", "2026-01-03")) == {
        "2026-01-02": [d2]}
    assert plan_batches([d1, flat], logged, "2026-01-05", pattern, full_rebuild=True) == {
        "2026-01-01": [d1], "2026-01-05": [flat]}
