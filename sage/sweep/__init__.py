"""Parameter sweeps and walk-forward evaluation of backtests, on a local process pool or Ray.

* :func:`run_tasks` (``sage.sweep.engine``): the generic parallel map sweeps and trainers share;
* :func:`run_sweep` (``sage.sweep.run``): a sweep file -> one results table + walk-forward report;
* ``sage sweep CONFIG`` on the command line. See docs/sweeps.md.

Imports are lazy so ``import sage.sweep`` stays cheap in worker processes and CLI start-up.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TaskError", "TaskFailed", "run_sweep", "run_tasks"]


def __getattr__(name: str) -> Any:
    if name in ("run_tasks", "TaskError", "TaskFailed"):
        from sage.sweep import engine

        return getattr(engine, name)
    if name == "run_sweep":
        from sage.sweep.run import run_sweep

        return run_sweep
    raise AttributeError(name)
