"""What the Parquet files of a table or staged result look like inside (their encodings)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq


def dictionary_encoded(path: Path) -> dict[str, bool | None]:
    """Per column, whether the Parquet files under ``path`` store it with a dictionary: True in
    every file, False in none, None when the files differ."""
    seen: dict[str, set[bool]] = {}
    files = list(path.rglob("*.parquet"))
    assert files, f"no Parquet file under {path}"
    for f in files:
        metadata = pq.ParquetFile(f).metadata
        for group in range(metadata.num_row_groups):
            for i in range(metadata.num_columns):
                column = metadata.row_group(group).column(i)
                seen.setdefault(column.path_in_schema, set()).add(column.has_dictionary_page)
    return {column: flags.pop() if len(flags) == 1 else None for column, flags in seen.items()}
