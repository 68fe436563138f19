"""Find and remove what interrupted catalog writes leave behind (``sage catalog clean``).

Every sage writer is crash-safe for *readers*: new data is staged in hidden places Nautilus never reads
and renamed into place at the end. A writer killed mid-way therefore leaves hidden debris, and one
killed during its final renames leaves a commit journal:

* ``<catalog>/.sage-commit-*.json`` -- an unfinished multi-file commit; recovery removes the files it
  had already renamed into place, restoring the catalog to its state before that write
  (:mod:`sage.data.commit_journal`);
* ``<catalog>/.staging-*/`` -- the ingest writer's staging catalog (:mod:`sage.data.catalog_io`);
* ``<catalog>/**/.*.tmp`` -- the record writer's temp files (:mod:`sage.data.catalog_writer`) and a
  journal's own temp file;
* ``<parent>/.<catalog name>-building-*/`` -- a sample-catalog build (:mod:`sage.data.sample`).

Only items older than ``min_age_s`` are touched, so a clean never races a writer that is still running
(writers refresh nothing while staging; the default of 10 minutes is far above any bundled write).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from sage.data.catalog_io import STAGING_PREFIX
from sage.data.commit_journal import journals, read_journal, recover

DEFAULT_MIN_AGE_S = 600.0


@dataclass
class CleanReport:
    """What a clean found, and (unless ``dry_run``) removed."""

    catalog: Path
    dry_run: bool
    #: unfinished commits -> the files they had renamed into place (removed by recovery)
    commits: dict[Path, list[Path]] = field(default_factory=dict)
    #: staging directories and temp files
    leftovers: list[Path] = field(default_factory=list)
    #: items younger than the age limit, left alone
    skipped_recent: list[Path] = field(default_factory=list)
    #: journals that could not be read (left in place)
    errors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        lines = [f"catalog {self.catalog}:"]
        if not (self.commits or self.leftovers or self.skipped_recent or self.errors):
            return f"catalog {self.catalog}: clean (nothing left behind by interrupted writes)"
        for journal, files in self.commits.items():
            lines.append(f"  unfinished commit {journal.name}: {verb} {len(files)} partially committed file(s)")
            lines += [f"    {f}" for f in files]
        for path in self.leftovers:
            lines.append(f"  {verb} leftover {path}")
        for path in self.skipped_recent:
            lines.append(f"  kept (younger than the age limit, a writer may be running) {path}")
        for error in self.errors:
            lines.append(f"  error: {error}")
        return "\n".join(lines)


def find_leftovers(catalog: Path) -> tuple[list[Path], list[Path]]:
    """(commit journals, staging dirs + temp files) under ``catalog``; nothing is changed."""
    root = Path(catalog)
    if not root.is_dir():
        raise FileNotFoundError(f"catalog {root} does not exist")
    debris = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(STAGING_PREFIX)]
    debris += [
        p
        for p in root.rglob(".*.tmp")
        if p.is_file() and not any(part.startswith(STAGING_PREFIX) for part in p.relative_to(root).parts[:-1])
    ]
    debris += [p for p in root.parent.glob(f".{root.name}-building-*") if p.is_dir()]
    return journals(root), sorted(debris)


def clean_catalog(catalog: Path, *, dry_run: bool = False, min_age_s: float = DEFAULT_MIN_AGE_S) -> CleanReport:
    """Recover unfinished commits and remove staging leftovers older than ``min_age_s`` seconds."""
    root = Path(catalog)
    pending, debris = find_leftovers(root)
    report = CleanReport(root, dry_run)
    now = time.time()

    def old_enough(path: Path) -> bool:
        try:
            return now - path.stat().st_mtime >= min_age_s
        except FileNotFoundError:
            return False

    for journal in pending:
        if not old_enough(journal):
            report.skipped_recent.append(journal)
            continue
        if dry_run:
            report.commits[journal] = _listed_files(journal, report)
            continue
        try:
            report.commits[journal] = recover(journal)
        except ValueError as exc:
            report.errors.append(str(exc))
    for path in debris:
        if not old_enough(path):
            report.skipped_recent.append(path)
            continue
        report.leftovers.append(path)
        if not dry_run:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    return report


def _listed_files(journal: Path, report: CleanReport) -> list[Path]:
    try:
        targets, _dirs = read_journal(journal)
    except ValueError as exc:
        report.errors.append(str(exc))
        return []
    return [t for t in targets if t.is_file()]
