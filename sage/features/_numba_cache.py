"""Invalidate numba's on-disk cache when a *called* module changes.

Why this exists: numba's ``cache=True`` keys a cached function by its own
source file only. When ``pipeline.full_step`` calls ``fvg.step`` and only
``fvg.py`` changes, numba happily reloads the stale machine code with the old
FVG logic inlined (numba issue #6845) -- batch and streaming could then run
different kernel versions. Each module with cross-module njit calls registers
its dependencies here at import time; if their source fingerprint differs from
the one stamped next to the cache, the module's cache indexes are flushed so
the next call recompiles. Cheap (hashes a few source files once per process).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from numba.core.registry import CPUDispatcher


def _fingerprint(deps: Iterable[ModuleType]) -> str:
    digest = hashlib.sha256()
    for module in deps:
        path = Path(module.__file__ or "")
        digest.update(module.__name__.encode())
        digest.update(path.read_bytes() if path.is_file() else b"")
    return digest.hexdigest()


def guard_numba_cache(namespace: dict[str, Any], deps: Iterable[ModuleType]) -> None:
    """Flush the numba caches of the njit functions defined in ``namespace`` if ``deps`` changed.

    Call at the end of a module: ``guard_numba_cache(globals(), [basic, fvg])``.
    Best effort: an unwritable cache directory just means no stamp is kept.
    """
    module_name = namespace["__name__"]
    dispatchers = [
        obj
        for obj in namespace.values()
        if isinstance(obj, CPUDispatcher) and obj.py_func.__module__ == module_name
    ]
    caches = [d._cache for d in dispatchers if getattr(d, "_cache", None) is not None]
    paths = {getattr(c, "cache_path", None) for c in caches} - {None}
    if not paths:
        return
    fingerprint = _fingerprint(deps)
    stem = module_name.rsplit(".", 1)[-1]
    for path in paths:
        stamp = Path(path) / f"{stem}.deps.sha256"
        try:
            if stamp.is_file() and stamp.read_text() == fingerprint:
                continue
            for cache in caches:
                if cache.cache_path == path:
                    cache.flush()
            stamp.write_text(fingerprint)
        except OSError:
            continue
