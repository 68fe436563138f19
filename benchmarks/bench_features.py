"""Benchmark of ``sage.features``: batch throughput and streaming per-bar latency for the full feature set.

Run from the repo root::

    python -m benchmarks.bench_features            # 1M bars, 100k streaming updates
    python -m benchmarks.bench_features --bars 200000 --updates 20000

Goals (issue): the full batch set over 1M bars in under 2 s on one core, and a
full streaming ``FeatureStream.update`` p99 under 20 us from Python. The batch
kernel is single-threaded, so wall time on an idle core equals CPU time; both
are printed because shared machines inflate wall time. Each timing is the best
of ``--repeat`` runs after a warm-up call that loads or compiles the numba code.
Bars come from the seeded synthetic market (``sage.data.synthetic``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.objects import Price, Quantity

from sage.data.synthetic import SyntheticMarketConfig, generate_bars
from sage.features import FeatureStream, basic, compute, fvg, mmd, relative
from sage.features.bars import to_arrays
from sage.features.matrices import MatrixStream, strategic_rows, tactical_rows

BATCH_GOAL_S = 2.0
P99_GOAL_US = 20.0


def _best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """(best wall seconds, best CPU seconds) over ``repeat`` calls."""
    walls, cpus = [], []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)


def _latencies(update: Callable[[Any], Any], items: list[Any]) -> np.ndarray:
    """Per-call latency in microseconds of ``update(item)`` for each item, in order."""
    out = np.empty(len(items), dtype=np.float64)
    clock = time.perf_counter_ns
    for i, item in enumerate(items):
        t0 = clock()
        update(item)
        out[i] = clock() - t0
    return out / 1e3


def _nautilus_bars(df: pd.DataFrame) -> list[Bar]:
    bar_type = BarType.from_str("ES.XCME-1-MINUTE-LAST-EXTERNAL")
    ts = df.index.asi8
    rows = zip(ts, df["open"], df["high"], df["low"], df["close"], df["volume"], strict=True)
    return [
        Bar(
            bar_type,
            Price(o, 2),
            Price(h, 2),
            Price(l, 2),
            Price(c, 2),
            Quantity(v, 0),
            int(t),
            int(t),
        )
        for t, o, h, l, c, v in rows
    ]


def _report_latency(label: str, lat: np.ndarray, goal_us: float | None) -> tuple[float, float]:
    p50, p99, p999 = np.percentile(lat, [50, 99, 99.9])
    verdict = (
        "" if goal_us is None else ("  PASS" if p99 < goal_us else "  FAIL") + f" (p99 goal < {goal_us:g} us)"
    )
    print(
        f"  {label:<38} p50 {p50:6.2f} us  p99 {p99:6.2f} us  p99.9 {p999:7.2f} us  mean {lat.mean():6.2f} us{verdict}"
    )
    return float(p50), float(p99)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bars", type=int, default=1_000_000, help="bars for the batch benchmark (default 1M)"
    )
    parser.add_argument("--updates", type=int, default=100_000, help="streaming updates timed (default 100k)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="batch repetitions, best is reported (default 3)"
    )
    parser.add_argument("--seed", type=int, default=7, help="synthetic market seed (default 7)")
    args = parser.parse_args(argv)

    df = generate_bars(SyntheticMarketConfig(seed=args.seed, n_bars=max(args.bars, args.updates)))
    bars = df.iloc[: args.bars]
    print(
        f"sage.features benchmark: {len(bars):,} synthetic 1-minute bars, {args.updates:,} streaming updates"
    )

    # Warm-up: load (or compile) every kernel once before timing.
    compute(bars.iloc[:2000])
    tactical_rows(bars.iloc[:2000])
    strategic_rows(bars.iloc[:2000])
    arrays = to_arrays(bars)
    for module in (basic, relative, fvg, mmd):
        module.batch(*(a[:2000] for a in arrays))

    print(f"\nbatch (best of {args.repeat})")
    results: dict[str, float] = {}
    wall, cpu = _best_of(lambda: compute(bars), args.repeat)
    results["batch_compute_wall_s"], results["batch_compute_cpu_s"] = wall, cpu
    results["batch_compute_bars_per_s"] = len(bars) / min(wall, cpu)
    ncols = len(compute(bars.iloc[:10]).columns)
    verdict = "PASS" if min(wall, cpu) < BATCH_GOAL_S else "FAIL"
    print(
        f"  compute(), full schema ({ncols} cols)        wall {wall:6.3f} s  cpu {cpu:6.3f} s  "
        f"{len(bars) / wall / 1e6:5.2f} M bars/s  {verdict} (goal < {BATCH_GOAL_S:g} s)"
    )
    for module in (basic, relative, fvg, mmd):
        wall_f, cpu_f = _best_of(lambda m=module: m.batch(*arrays), args.repeat)
        print(
            f"    {module.__name__.rsplit('.', 1)[-1] + '.batch':<38} wall {wall_f:6.3f} s  cpu {cpu_f:6.3f} s"
        )
    for label, fn in (
        ("tactical_rows (features + 7 cols)", tactical_rows),
        ("strategic_rows (features + 13 cols)", strategic_rows),
    ):
        wall_m, cpu_m = _best_of(lambda f=fn: f(bars), args.repeat)
        print(f"    {label:<38} wall {wall_m:6.3f} s  cpu {cpu_m:6.3f} s")

    print("\nstreaming (per update, from Python)")
    stream_df = df.iloc[: args.updates]
    ts = stream_df.index.asi8
    mappings = [
        {"ts": int(t), "open": o, "high": h, "low": l, "close": c, "volume": v}
        for t, o, h, l, c, v in zip(
            ts,
            *(stream_df[k].to_numpy().tolist() for k in ("open", "high", "low", "close", "volume")),
            strict=True,
        )
    ]
    nautilus = _nautilus_bars(stream_df)
    for label, items in (
        ("FeatureStream.update(mapping)", mappings),
        ("FeatureStream.update(nautilus Bar)", nautilus),
    ):
        stream = FeatureStream()
        stream.update(items[0])  # first call loads the kernel
        stream.reset()
        key = "feature_stream_" + ("bar" if "Bar" in label else "mapping")
        results[f"{key}_p50_us"], results[f"{key}_p99_us"] = _report_latency(
            label, _latencies(stream.update, items), P99_GOAL_US
        )
    for kind in ("tactical", "strategic"):
        mstream = MatrixStream(kind)
        mstream.update(nautilus[0])
        mstream.reset()
        results[f"matrix_{kind}_p50_us"], results[f"matrix_{kind}_p99_us"] = _report_latency(
            f"MatrixStream({kind!r}).update(Bar)", _latencies(mstream.update, nautilus), None
        )
    return results


if __name__ == "__main__":
    main()
