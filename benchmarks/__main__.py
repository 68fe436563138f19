"""Run every benchmark in turn: ``python -m benchmarks`` (what ``make bench`` calls).

Each benchmark prints ratios against a baseline measured in the same process, so the numbers are
comparable across machines; see each module's docstring for what it measures.
"""

from __future__ import annotations

import importlib
import time

BENCHMARKS = (
    "benchmarks.bench_writer",
    "benchmarks.bench_features",
    "benchmarks.bench_execution",
    "benchmarks.bench_regime_models",
    "benchmarks.bench_regime",
)


def main() -> None:
    for name in BENCHMARKS:
        print(f"\n=== {name} ===", flush=True)
        started = time.perf_counter()
        importlib.import_module(name).main([])
        print(f"({name} took {time.perf_counter() - started:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
