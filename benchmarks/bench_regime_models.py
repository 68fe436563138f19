"""Benchmark of the regime models: accuracy against truth vs an HMM baseline, latency, throughput, exactness.

Run from the repo root::

    python -m benchmarks.bench_regime_models            # full (about 2-3 minutes on one core)
    python -m benchmarks.bench_regime_models --quick    # smaller market and fewer timings

1. **Accuracy** on a held-out synthetic seed (2024: used by neither training nor validation) -- balanced
   accuracy of the shipped default model's causal 4-state label against the true regime, side by side
   with an ``hmmlearn`` Gaussian HMM (4 states, full covariances) fitted on the same 11 strategic
   features of training seeds (101, 102) and filtered **causally** (forward algorithm only), its states
   mapped one-to-one to regimes on the training series. Both are scored on exactly the same bars.
   Goal: the model >= 10 points above the HMM. A stronger 8-state HMM (states mapped many-to-one to
   the regime they over-represent) is shown as well.
2. **Latency** of ``RegimeModelBundle.infer`` (batch 1, one window, one core): p50/p99 for the default
   model and the reference-scale RDE bundle (d_model 256, 3 layers, 8 heads, latent 8, 24-bar window;
   seeded random weights -- timing does not depend on the values). Goals: default p99 < 1 ms,
   reference p99 < 5 ms. Eager-torch batch-1 latency is shown for comparison.
3. **Throughput** of the precompute path: ``infer_batch`` windows/s, and end to end (``strategic_rows`` +
   ``infer_rows``) bars/s. Goal: > 50k bars/s.
4. **Exactness**: ``infer`` vs ``infer_batch`` bitwise on real windows, and for contrast the largest
   difference between batch-1 and batched eager torch.

Timings use one thread (``torch.set_num_threads(1)``; the numba engine is single-threaded). The machine
may be shared: CPU time is printed next to wall time where it matters, and p99 on a busy machine
includes preemption.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from sage.data.regimes import REGIME_NAMES
from sage.data.synthetic import SyntheticMarketConfig, generate_bars
from sage.features import strategic_rows
from sage.models.bundle import REFERENCE_BUNDLE, RegimeModelBundle, n_parameters, windows_from_rows
from sage.training.regime import (
    classification_metrics,
    fit_hmm_baseline,
    synthetic_series,
)

TEST_SEED = 2024
HMM_TRAIN_SEEDS = (101, 102)
ACCURACY_GOAL_POINTS = 10.0
DEFAULT_P99_GOAL_US = 1_000.0
REFERENCE_P99_GOAL_US = 5_000.0
PRECOMPUTE_GOAL_BARS_S = 50_000.0


def _latencies(fn: Callable[[Any], object], windows: Sequence[Any]) -> np.ndarray:
    """Per-call wall latency in microseconds of ``fn(window)`` for each window."""
    out = np.empty(len(windows))
    clock = time.perf_counter_ns
    for i, w in enumerate(windows):
        t0 = clock()
        fn(w)
        out[i] = clock() - t0
    return out / 1e3


def _report(label: str, lat: np.ndarray, goal_us: float | None) -> tuple[float, float]:
    p50, p99 = np.percentile(lat, [50, 99])
    verdict = (
        "" if goal_us is None else (" PASS" if p99 < goal_us else " FAIL") + f" (p99 goal < {goal_us:g} us)"
    )
    print(f"  {label:<46} p50 {p50:8.1f} us  p99 {p99:8.1f} us  mean {lat.mean():8.1f} us{verdict}")
    return float(p50), float(p99)


def _print_confusion(name: str, cm: list[list[int]]) -> None:
    print(f"    {name} confusion (rows truth, cols label): " + "  ".join(f"{r}" for r in REGIME_NAMES))
    for name_r, row in zip(REGIME_NAMES, cm):
        total = max(sum(row), 1)
        print(f"      {name_r:<9}" + "".join(f"{v / total:9.2f}" for v in row))


def accuracy(
    bundle: RegimeModelBundle, n_bars: int, hmm_rows: int, hmm_iter: int, hmm_states: tuple[int, ...] = (4, 8)
) -> dict[str, float]:
    print(f"\n1. accuracy on held-out synthetic seed {TEST_SEED} ({n_bars:,d} 1-minute bars)")
    t0 = time.perf_counter()
    test = synthetic_series(TEST_SEED, n_bars, bundle.config)
    ends = test.train_ends  # every bar with a complete model window (after the 539-bar feature warm-up)
    out = bundle.infer_batch(
        windows_from_rows(test.rows, bundle.window_length)[ends - bundle.window_length + 1]
    )
    model = classification_metrics(test.labels[ends], np.argmax(out.probs, axis=1))
    print(
        f"  model  balanced accuracy {model['balanced_accuracy']:.3f}   (accuracy {model['accuracy']:.3f}, "
        f"{model['n']:,d} bars, {time.perf_counter() - t0:.1f} s incl. features)"
    )

    train = [synthetic_series(seed, 100_000, bundle.config) for seed in HMM_TRAIN_SEEDS]
    baselines = {}
    for n_states in hmm_states:
        t0 = time.perf_counter()
        hmm = fit_hmm_baseline(train, n_states=n_states, seed=0, n_iter=hmm_iter, max_rows=hmm_rows)
        base = classification_metrics(test.labels[ends], hmm.predict(test.rows)[ends])
        baselines[n_states] = base
        mapping = "one-to-one" if n_states == 4 else "many-to-one"
        print(
            f"  HMM-{n_states} balanced accuracy {base['balanced_accuracy']:.3f}   (accuracy {base['accuracy']:.3f}; "
            f"GaussianHMM {n_states} states full cov, {mapping} state map, fit on {hmm.n_fit_rows:,d} rows of "
            f"seeds {HMM_TRAIN_SEEDS}, forward-filtered; {time.perf_counter() - t0:.1f} s)"
        )
    base = baselines[4]
    gap = 100.0 * (model["balanced_accuracy"] - base["balanced_accuracy"])
    print(
        f"  gap to HMM-4 {gap:+.1f} points  {'PASS' if gap >= ACCURACY_GOAL_POINTS else 'FAIL'} "
        f"(goal >= +{ACCURACY_GOAL_POINTS:g})"
    )
    print(
        "  recall per regime   "
        + "  ".join(f"{n} {model['recall'][n]:.2f}/{base['recall'][n]:.2f}" for n in REGIME_NAMES)
        + "   (model/HMM-4)"
    )
    _print_confusion("model", model["confusion"])
    _print_confusion("HMM-4", base["confusion"])
    return {
        "model_balanced_accuracy": float(model["balanced_accuracy"]),
        "hmm4_balanced_accuracy": float(base["balanced_accuracy"]),
        "gap_to_hmm4_points": float(gap),
    }


def latency(bundle: RegimeModelBundle, n: int) -> dict[str, float]:
    print(f"\n2. latency, batch 1 ({n:,d} calls each, one thread)")
    rng = np.random.default_rng(0)
    reference = RegimeModelBundle.from_config(REFERENCE_BUNDLE, seed=0)
    out: dict[str, float] = {}
    for key, label, b, goal, calls in (
        ("default", f"default  infer()  [{n_parameters(bundle.net):,d} params]", bundle, DEFAULT_P99_GOAL_US, n),
        (
            "reference",
            f"reference infer() [{n_parameters(reference.net):,d} params]",
            reference,
            REFERENCE_P99_GOAL_US,
            max(200, n // 20),
        ),
    ):
        windows = rng.uniform(-1, 1, (calls, b.window_length, len(b.input_names)))
        for w in windows[:20]:
            b.infer(w)  # load the compiled kernel
        c0 = time.process_time()
        lat = _latencies(b.infer, windows)
        cpu_us = (time.process_time() - c0) / calls * 1e6
        out[f"{key}_infer_p50_us"], out[f"{key}_infer_p99_us"] = _report(label, lat, goal)
        print(f"  {'':<46} cpu {cpu_us:8.1f} us/call")
        x = torch.from_numpy(windows.astype(np.float32))
        with torch.inference_mode():
            for i in range(20):
                b.net.infer(x[i : i + 1])
            singles = [x[i : i + 1] for i in range(min(calls, 500))]
            tl = _latencies(b.net.infer, singles)
        out[f"{key}_torch_p50_us"] = _report("  (eager torch, same model, for comparison)", tl, None)[0]
    return out


def throughput(bundle: RegimeModelBundle, n_bars: int) -> dict[str, float]:
    print(f"\n3. precompute throughput ({n_bars:,d} bars)")
    bars = generate_bars(SyntheticMarketConfig(seed=TEST_SEED + 1, n_bars=n_bars))
    strategic_rows(bars.iloc[:2_000])
    bundle.infer_rows(strategic_rows(bars.iloc[:2_000]))
    w0, c0 = time.perf_counter(), time.process_time()
    rows = strategic_rows(bars, bundle.feature_schema)
    w1, c1 = time.perf_counter(), time.process_time()
    out = bundle.infer_rows(rows)
    w2, c2 = time.perf_counter(), time.process_time()
    n_windows = int(np.isfinite(out.probs).all(axis=1).sum())
    print(f"  strategic_rows      wall {w1 - w0:6.2f} s  cpu {c1 - c0:6.2f} s")
    print(
        f"  infer_rows          wall {w2 - w1:6.2f} s  cpu {c2 - c1:6.2f} s  "
        f"{n_windows / (w2 - w1):,.0f} windows/s (cpu {n_windows / (c2 - c1):,.0f})"
    )
    rate = n_bars / (w2 - w0)
    print(
        f"  end to end          {rate:,.0f} bars/s (cpu {n_bars / (c2 - c0):,.0f})  "
        f"{'PASS' if max(rate, n_bars / (c2 - c0)) > PRECOMPUTE_GOAL_BARS_S else 'FAIL'} "
        f"(goal > {PRECOMPUTE_GOAL_BARS_S:,.0f} bars/s)"
    )
    reference = RegimeModelBundle.from_config(REFERENCE_BUNDLE, seed=0)
    sel = windows_from_rows(reference.select_rows(rows.to_numpy()[-20_000:]), reference.window_length)[-500:]
    t0 = time.perf_counter()
    reference.infer_batch(sel)
    ref_rate = len(sel) / (time.perf_counter() - t0)
    print(f"  reference infer_batch  {ref_rate:,.0f} windows/s")
    return {
        "precompute_bars_per_s": float(rate),
        "precompute_bars_per_s_cpu": float(n_bars / (c2 - c0)),
        "reference_infer_batch_windows_per_s": float(ref_rate),
    }


def exactness(bundle: RegimeModelBundle, n: int) -> dict[str, float]:
    print(f"\n4. streaming vs precompute exactness ({n:,d} real windows)")
    bars = generate_bars(SyntheticMarketConfig(seed=TEST_SEED + 2, n_bars=n + 600))
    sel = bundle.select_rows(strategic_rows(bars))
    windows = windows_from_rows(sel, bundle.window_length)[-n:]
    batch = bundle.infer_batch(windows)
    equal = all(
        np.array_equal(a, b)
        for i in range(n)
        for a, b in zip(bundle.infer(windows[i]), (batch.vectors[i], batch.probs[i], batch.quantiles[i]))
    )
    print(f"  engine: infer(w) == infer_batch(W)[i] bitwise for all {n:,d} windows: {equal}")
    x = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
    with torch.inference_mode():
        batched = bundle.net.infer(x)
        single = [torch.cat(t) for t in zip(*(bundle.net.infer(x[i : i + 1]) for i in range(n)))]
    diffs = [float((a - b).abs().max()) for a, b in zip(batched, single)]
    labels_differ = int((batched[1].argmax(1) != single[1].argmax(1)).sum())
    print(
        f"  eager torch for contrast: batch vs batch-1 max |diff| vector {diffs[0]:.2e}, probs {diffs[1]:.2e}, "
        f"quantiles {diffs[2]:.2e}; labels differing: {labels_differ}"
    )
    return {"stream_equals_batch": float(equal), "torch_batch_labels_differing": float(labels_differ)}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default="default", help="bundle name or directory (default: the shipped model)"
    )
    parser.add_argument("--quick", action="store_true", help="smaller market and fewer calls")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    bundle = RegimeModelBundle.load(args.model)
    print(f"sage.models benchmark: {bundle!r}")
    q = args.quick
    results = accuracy(
        bundle, n_bars=30_000 if q else 100_000, hmm_rows=60_000 if q else 150_000, hmm_iter=20 if q else 40
    )
    results.update(latency(bundle, n=2_000 if q else 20_000))
    results.update(throughput(bundle, n_bars=200_000 if q else 1_000_000))
    results.update(exactness(bundle, n=500 if q else 3_000))
    return results


if __name__ == "__main__":
    main()
