"""A journal that makes a multi-file catalog commit recoverable after a crash.

Why: both catalog writers (:mod:`sage.data.catalog_io` for ingest, :mod:`sage.data.catalog_writer` for
sage records) stage complete files and then ``os.replace`` them into place one by one. Each rename is
atomic, and an exception rolls back the renames already done -- but a process killed (SIGKILL, OOM
killer, power cut) *between* two renames cannot roll back, and the catalog is left with part of the new
files. Before the first rename the writer therefore records, in ``<catalog>/.sage-commit-<id>.json``,
every file it is about to create and every directory it may create; the journal is removed only after
the last rename. A journal found later means that commit never finished: :func:`recover` removes the
files it lists (they did not exist before the commit -- both writers refuse to overwrite) and the empty
directories, which puts the catalog back exactly as it was before the interrupted write.

``sage catalog clean`` runs the recovery (and removes staging/temp leftovers, see
:mod:`sage.data.catalog_clean`). The journal is hidden (leading dot), so Nautilus's catalog never reads it.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Self

JOURNAL_PREFIX = ".sage-commit-"
JOURNAL_SUFFIX = ".json"


class CommitJournal:
    """Context manager around the rename phase of one commit: written on enter, removed on clean exit.

    On an exception the journal is removed too (the writer's own rollback has run by then); only a
    process that dies inside the ``with`` block leaves it behind for :func:`recover`.
    """

    def __init__(self, root: Path, targets: Iterable[Path], *, durable: bool = False) -> None:
        self.root = Path(root)
        self.targets = [Path(t) for t in targets]
        self.durable = durable
        existing = [t for t in self.targets if t.exists()]
        if existing:  # recovery deletes the listed files: it must never list a file that predates the commit
            raise FileExistsError(f"commit targets already exist: {', '.join(map(str, existing[:3]))}")
        self.dirs = _missing_dirs(self.root, self.targets)
        self.path = self.root / f"{JOURNAL_PREFIX}{uuid.uuid4().hex}{JOURNAL_SUFFIX}"

    def __enter__(self) -> Self:
        body = {
            "version": 1,
            "targets": [str(t.relative_to(self.root)) for t in self.targets],
            "dirs": [str(d.relative_to(self.root)) for d in self.dirs],
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(body, f)
            if self.durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, self.path)
        if self.durable:
            fsync_dir(self.root)
        return self

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)
        if self.durable:
            fsync_dir(self.root)


def journals(root: Path) -> list[Path]:
    """Journals of unfinished commits under catalog ``root`` (oldest first)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(JOURNAL_PREFIX) and p.name.endswith(JOURNAL_SUFFIX)]
    return sorted(found, key=lambda p: p.stat().st_mtime)


def recover(journal: Path) -> list[Path]:
    """Undo the interrupted commit ``journal`` describes; returns the files removed.

    Raises ``ValueError`` for a journal that is not valid JSON of this format or names a path outside
    its catalog (it is then left in place for a human to look at).
    """
    journal = Path(journal)
    targets, dirs = read_journal(journal)
    removed = []
    for target in targets:
        if target.is_file():
            target.unlink()
            removed.append(target)
    for directory in sorted(dirs, key=lambda d: len(d.parts), reverse=True):  # deepest first
        try:
            directory.rmdir()
        except OSError:
            pass  # not empty (another commit's files) or already gone
    journal.unlink()
    return removed


def read_journal(journal: Path) -> tuple[list[Path], list[Path]]:
    """(files the commit creates, directories it may create) as absolute paths inside the catalog.

    Raises ``ValueError`` for a journal that is not valid JSON of this format or names a path outside
    its catalog."""
    journal = Path(journal)
    root = journal.parent.resolve()
    try:
        body = json.loads(journal.read_text(encoding="utf-8"))
        return [_inside(root, t) for t in body["targets"]], [_inside(root, d) for d in body["dirs"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{journal}: not a readable sage commit journal ({exc})") from None


def _inside(root: Path, relative: str) -> Path:
    path = (root / relative).resolve()
    if path != root and root not in path.parents:
        raise ValueError(f"path {relative!r} escapes the catalog")
    return path


def _missing_dirs(root: Path, targets: Iterable[Path]) -> list[Path]:
    """Directories between ``root`` and each target that do not exist yet (a commit may create them)."""
    missing: set[Path] = set()
    for target in targets:
        d = target.parent
        while d != root and root in d.parents and not d.exists():
            missing.add(d)
            d = d.parent
    return sorted(missing, key=lambda d: len(d.parts))


def fsync_dir(directory: Path) -> None:
    """Make a directory's entries (renames, new files) durable: fsync the directory itself."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
