"""Foundation-model forecast adapters: per-bar latency against sage's own forecaster, same run.

``python -m benchmarks.bench_forecast_adapters [--quick] [--calls N]`` prints, for one thread, batch 1
(the streaming form ``ForecastStream.update``, what a live detector calls every bar), the p50 / p99
latency of:

* the baseline: the shipped regime bundle's ``infer(window)`` (encoder + classifier + quantile head);
* tiny TiRex / Chronos-Bolt / Chronos (T5, 20 sample paths) checkpoints built offline
  (``sage.models.adapters.tiny``), context 128 -- the adapters' own overhead plus a toy network;
* unless ``--quick``: **real-size architectures with random weights** -- TiRex (35.3M parameters,
  12 sLSTM blocks, width 512, context 2048: it pads any shorter context to that) and Chronos-Bolt-small
  (48M, T5 6+6 layers, width 512) at contexts 2048 (its maximum) and 512. Weights do not change the arithmetic, so this is the latency a
  downloaded checkpoint of that size would have on this machine.

Every number is also given as a ratio to the baseline measured in the same process.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from sage.data.synthetic import SyntheticMarketConfig, generate_bars
from sage.features import MatrixStream
from sage.models.adapters import load_forecaster
from sage.models.adapters.tiny import build_tiny_chronos_bolt, build_tiny_chronos_t5, build_tiny_tirex
from sage.models.bundle import RegimeModelBundle


def _percentiles(fn: Callable[[], object], calls: int, warmup: int = 3) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    times = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter_ns()
        fn()
        times[i] = (time.perf_counter_ns() - t0) / 1_000.0
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def _baseline(bars, calls: int) -> tuple[float, float]:
    bundle = RegimeModelBundle.load("default")
    stream = MatrixStream("strategic", bundle.feature_schema)
    matrix = None
    for row in bars.itertuples():
        matrix = stream.update(
            {"ts": int(row.Index.value), "open": row.open, "high": row.high, "low": row.low,
             "close": row.close, "volume": row.volume}
        )  # fmt: skip
    window = bundle.select(matrix)
    return _percentiles(lambda: bundle.infer(window), calls)


def _adapter(spec: str, closes: np.ndarray, calls: int, **overrides: object) -> tuple[float, float]:
    """Latency of ``stream.update`` on a warmed-up stream (the context is full)."""
    adapter = load_forecaster(spec, **overrides)
    stream = adapter.stream()
    stream.prime(closes[: adapter.context_length])
    tail = iter(np.resize(closes, calls + 16))
    return _percentiles(lambda: stream.update(next(tail)), calls)


def main(argv: list[str]) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="bench_forecast_adapters")
    parser.add_argument("--quick", action="store_true", help="tiny models only (skip real-size ones)")
    parser.add_argument("--calls", type=int, default=200, help="timed calls per tiny model (default 200)")
    parser.add_argument(
        "--big-calls", type=int, default=5, help="timed calls per real-size model (default 5)"
    )
    args = parser.parse_args(argv)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        bars = generate_bars(SyntheticMarketConfig(n_bars=3000, seed=11)).drop(columns=["regime"])
        closes = bars["close"].to_numpy()
        results: list[tuple[str, float, float]] = [("sage forecaster (bundle.infer)", *_baseline(bars, 2000))]
        print(f"  measured {results[-1][0]}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            tiny = [
                ("tiny TiRex, ctx 128", f"tirex:{build_tiny_tirex(root / 'tirex')}"),
                ("tiny Chronos-Bolt, ctx 128", f"chronos:{build_tiny_chronos_bolt(root / 'bolt')}"),
                ("tiny Chronos-T5 (20 samples), ctx 128", f"chronos:{build_tiny_chronos_t5(root / 't5')}"),
            ]
            for label, spec in tiny:
                calls = max(10, args.calls // 5) if "T5" in label else args.calls
                results.append((label, *_adapter(spec, closes, calls)))
                print(f"  measured {label}", flush=True)
            if not args.quick:
                tirex = build_tiny_tirex(
                    root / "tirex-35m", embedding_dim=512, num_heads=4, num_blocks=12, patch_size=32,
                    ff_dim=2048, train_ctx_len=2048,
                )  # fmt: skip
                bolt = build_tiny_chronos_bolt(
                    root / "bolt-small", d_model=512, d_ff=2048, num_layers=6, num_heads=8,
                    context_length=2048, prediction_length=64, patch_size=16,
                )  # fmt: skip
                # TiRex pads every context to its training length (2048) on the torch path, so a
                # shorter context_length saves nothing there; Chronos-Bolt runs what it is given.
                big = [
                    ("TiRex 35M, ctx 2048", f"tirex:{tirex}", 2048),
                    ("Chronos-Bolt-small 48M, ctx 2048", f"chronos:{bolt}", 2048),
                    ("Chronos-Bolt-small 48M, ctx 512", f"chronos:{bolt}", 512),
                ]
                for label, spec, ctx in big:
                    results.append((label, *_adapter(spec, closes, args.big_calls, context_length=ctx)))
                    print(f"  measured {label}", flush=True)
    finally:
        torch.set_num_threads(threads)

    base = results[0][1]
    print(f"{'forecaster (1 thread, batch 1)':<42} {'p50 us':>12} {'p99 us':>12} {'p50 / sage':>12}")
    for label, p50, p99 in results:
        print(f"{label:<42} {p50:>12,.0f} {p99:>12,.0f} {p50 / base:>12,.1f}")
    keys = {
        "sage forecaster (bundle.infer)": "sage",
        "tiny TiRex, ctx 128": "tirex_tiny",
        "tiny Chronos-Bolt, ctx 128": "bolt_tiny",
        "tiny Chronos-T5 (20 samples), ctx 128": "t5_tiny",
        "TiRex 35M, ctx 2048": "tirex_35m_2048",
        "Chronos-Bolt-small 48M, ctx 2048": "bolt_small_2048",
        "Chronos-Bolt-small 48M, ctx 512": "bolt_small_512",
    }
    out: dict[str, float] = {}
    for label, p50, p99 in results:
        out[f"{keys[label]}_p50_us"] = p50
        out[f"{keys[label]}_p99_us"] = p99
        out[f"{keys[label]}_p50_ratio"] = p50 / base
    return out


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
