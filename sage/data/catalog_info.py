"""Summarise what a ``ParquetDataCatalog`` holds, from file names and Parquet footers only.

Reading footers instead of data keeps ``sage catalog info`` instant on large catalogs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq


@dataclass(frozen=True)
class CatalogEntry:
    data_type: str
    identifier: str
    rows: int
    first: str
    last: str
    files: int


def _interval_from_name(name: str) -> tuple[str, str]:
    """Catalog files are named ``<start>_<end>.parquet`` with ISO-like timestamps."""
    stem = name.removesuffix(".parquet")
    start, _, end = stem.partition("_")
    return start, end


def describe_catalog(catalog_path: Path | str) -> list[CatalogEntry]:
    root = Path(catalog_path) / "data"
    if not root.is_dir():
        raise FileNotFoundError(f"{catalog_path} is not a ParquetDataCatalog (no data/ directory)")
    entries: list[CatalogEntry] = []
    for type_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        groups: dict[str, list[Path]] = {}
        for file in sorted(type_dir.rglob("*.parquet")):
            ident = str(file.parent.relative_to(type_dir)) if file.parent != type_dir else "-"
            groups.setdefault(ident, []).append(file)
        for ident, files in groups.items():
            rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
            intervals = sorted(_interval_from_name(f.name) for f in files)
            entries.append(
                CatalogEntry(type_dir.name, ident, rows, intervals[0][0], intervals[-1][1], len(files))
            )
    return entries
