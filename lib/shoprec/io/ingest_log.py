"""The processed-files log kept beside the clean tables.

Each ingest batch that clean_events commits leaves one small JSON file,
``<warehouse>/_ingest_log/<source>/batch=<batch>.json``, listing the raw files (path, size,
modification time) the batch was built from and the run that built it. A file is "processed"
once it appears in any batch. The log is written only after both tables are committed, so a run
that dies earlier is simply repeated by the next one.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from shoprec.io.fs import FileStatus, HadoopFS

LOG_DIR = "_ingest_log"


class IngestLog:
    """Read and write the batches of one source's processed-files log."""

    def __init__(self, fs: HadoopFS, warehouse_root: str, source: str):
        self._fs = fs
        self.path = f"{warehouse_root.rstrip('/')}/{LOG_DIR}/{source}"

    def _batch_path(self, batch: str) -> str:
        return f"{self.path}/batch={batch}.json"

    def batches(self) -> dict[str, list[FileStatus]]:
        """Every committed batch with the files it was built from."""
        found = {}
        for name in self._fs.list_dir(self.path):
            if name.startswith("batch=") and name.endswith(".json"):
                record = json.loads(self._fs.read_text(f"{self.path}/{name}"))
                found[record["batch"]] = [FileStatus(**f) for f in record["files"]]
        return found

    def processed_paths(self) -> dict[str, str]:
        """``{file path: batch}`` for every processed file."""
        return {f.path: batch for batch, files in self.batches().items() for f in files}

    def record(self, batch: str, files: list[FileStatus], run_id: str) -> None:
        """Mark ``files`` as the content of ``batch`` (replacing what the batch held before)."""
        record = {"batch": batch, "run_id": run_id, "files": [asdict(f) for f in sorted(files, key=lambda f: f.path)]}
        self._fs.write_text(self._batch_path(batch), json.dumps(record, indent=1))

    def clear(self) -> None:
        """Forget every batch (for a full rebuild)."""
        self._fs.delete(self.path)
