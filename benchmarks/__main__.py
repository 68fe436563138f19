"""Run every benchmark in turn: ``python -m benchmarks`` (what ``make bench`` calls).

Each benchmark prints ratios against a baseline measured in the same process, so the numbers are
comparable across machines; see each module's docstring for what it measures.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path

#: Run first, in this order; any other ``benchmarks/bench_*.py`` follows in name order.
_FIRST = (
    "benchmarks.bench_writer",
    "benchmarks.bench_features",
    "benchmarks.bench_execution",
    "benchmarks.bench_regime_models",
    "benchmarks.bench_regime",
)


def _discover() -> tuple[str, ...]:
    found = sorted(f"benchmarks.{p.stem}" for p in Path(__file__).parent.glob("bench_*.py"))
    return (*_FIRST, *(name for name in found if name not in _FIRST))


BENCHMARKS = _discover()


def main() -> None:
    for name in BENCHMARKS:
        print(f"\n=== {name} ===", flush=True)
        started = time.perf_counter()
        importlib.import_module(name).main([])
        print(f"({name} took {time.perf_counter() - started:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
