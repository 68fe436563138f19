"""SAGE combiner benchmark: per-decision latency of the strategy's pure decision step.

Run from the repo root::

    python -m benchmarks.bench_combiner             # 20,000 decisions (~10 s)
    python -m benchmarks.bench_combiner --n 5000

Times, call by call (``time.perf_counter_ns``), on the same pre-generated random decision inputs (five
agents with random action distributions, random regime probabilities, levels and widths, a random-walk
close):

* ``baseline``  -- a plain weighted average of the agents' strengths with fixed weights (numpy ``dot``
  on the inputs), the cheapest thing a strategy could do instead;
* ``combine``   -- :meth:`SageCombiner.combine` alone (pure);
* ``step``      -- :meth:`SageCombiner.step`: credit due returns, combine, record the signals;
* ``build``     -- :func:`build_decision`: action, contract details, compact JSON, explanation;
* ``decision``  -- ``step`` + ``build``: what the strategy pays per decision bar for this package.

Prints p50/p99 in microseconds, wall clock and thread CPU time (the CPU clock excludes time the thread
was preempted, so on a shared machine it is the better measure of the code's own cost), and the CPU p50
ratio against the baseline measured in the same run. The inputs are moved out of the garbage collector's
view (``gc.freeze``) so full collections of the harness's own heap do not pollute the tail.
"""

from __future__ import annotations

import argparse
import gc
import math
import time
from collections.abc import Callable

import numpy as np

from sage.strategy import DEFAULT_AGENTS, BarInfo, CombinerConfig, RegimeInfo, SageCombiner, build_decision

_TIMEFRAMES = ("5m", "5m", "5m", "30m", "30m")


def _inputs(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    close = 4500.0
    out = []
    for t in range(n):
        close *= math.exp(rng.normal(0, 0.001))
        probs = rng.dirichlet(np.full(5, 0.7), size=5)
        strengths = (probs @ np.array([-2, -1, 0, 1, 2])) / 2
        directions = probs.argmax(axis=1) - 2
        regime = rng.dirichlet(np.ones(4))
        out.append(
            {
                "close": close,
                "agents": DEFAULT_AGENTS,
                # what the strategy has in hand: agent outputs as python values
                "directions": tuple(int(d) for d in directions),
                "strengths": tuple(float(s) for s in strengths),
                "probabilities": tuple(tuple(float(x) for x in p) for p in probs),
                "regime_probabilities": tuple(float(x) for x in regime),
                "regime_label": int(regime.argmax()),
                "regime_level": int(rng.choice([1, 1, 1, 2, 3, 4, 5])),
                "regime_uncertainty": float(rng.uniform(0.002, 0.006)),
                "ts": 1_700_000_000_000_000_000 + t * 300_000_000_000,
            }
        )
    return out


def _time(fn: Callable[[dict], object], inputs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Wall-clock and thread-CPU microseconds per call. On a shared machine the wall clock includes
    time the thread was preempted; the CPU clock does not, so it is the cost of the code itself."""
    wall, cpu = time.perf_counter_ns, time.thread_time_ns
    w = np.empty(len(inputs))
    c = np.empty(len(inputs))
    for k, x in enumerate(inputs):
        t0, c0 = wall(), cpu()
        fn(x)
        c1, t1 = cpu(), wall()
        w[k] = t1 - t0
        c[k] = c1 - c0
    return w / 1e3, c / 1e3


def main(argv: list[str]) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_combiner")
    parser.add_argument("--n", type=int, default=20_000, help="decisions timed per variant")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    inputs = _inputs(args.n, args.seed)
    fixed_w = np.full(len(DEFAULT_AGENTS), 1.0 / len(DEFAULT_AGENTS))

    def baseline(x: dict) -> float:
        return float(np.dot(fixed_w, np.asarray(x["strengths"])))

    pure = SageCombiner(CombinerConfig())

    def combine(x: dict):
        return pure.combine(
            x["agents"],
            x["directions"],
            x["strengths"],
            x["probabilities"],
            regime_label=x["regime_label"],
            regime_probabilities=x["regime_probabilities"],
            regime_level=x["regime_level"],
            regime_uncertainty=x["regime_uncertainty"],
        )

    def make_step() -> Callable[[dict], object]:
        comb = SageCombiner(CombinerConfig())

        def step(x: dict):
            res = comb.step(
                close=x["close"],
                risk_unit=0.001,
                agents=x["agents"],
                directions=x["directions"],
                strengths=x["strengths"],
                probabilities=x["probabilities"],
                regime_label=x["regime_label"],
                regime_probabilities=x["regime_probabilities"],
                regime_level=x["regime_level"],
                regime_uncertainty=x["regime_uncertainty"],
            )
            x["_combined"] = res
            return res

        return step

    risk = {
        "side": 1,
        "units": 2,
        "quantity": 2.0,
        "stop_price": 4495.0,
        "target_price": 4510.0,
        "risk_amount": 500.0,
        "reward_risk": 2.0,
        "stop_atr_multiple": 1.5,
        "confidence": 0.6,
        "source": "mrms",
        "scale": 1.0,
    }
    portfolio = {"allowed": True, "scale": 1.0, "reasons": []}
    kill = {"active": False, "reason": None}
    execution = {"algorithm": "TWAP", "params": {"horizon_secs": 300.0, "interval_secs": 60.0}}
    attributions = [
        {"agent": a, "feature": "fvg_bull_distance", "lag": k, "score": 0.1}
        for a in DEFAULT_AGENTS[:3]
        for k in range(5)
    ]

    def build(x: dict):
        c = x["_combined"]
        passed = c.passed
        side = 1 if c.signal > 0 else -1
        agents = [
            {"agent": a, "timeframe": tf, "direction": d, "strength": s, "probabilities": p, "value": 0.0}
            for a, tf, d, s, p in zip(
                x["agents"], _TIMEFRAMES, x["directions"], x["strengths"], x["probabilities"]
            )
        ]
        return build_decision(
            instrument_id="ESU3.XCME",
            bar=BarInfo("ESU3.XCME-5-MINUTE-LAST-INTERNAL", x["ts"], x["close"], 4.0),
            regime=RegimeInfo(
                x["regime_label"],
                x["regime_level"],
                x["regime_probabilities"],
                x["regime_uncertainty"],
                0.6,
                x["ts"],
            ),
            agents=agents,
            combined=c,
            risk=dict(risk, side=side) if passed else None,
            portfolio=portfolio if passed else None,
            kill_switch=kill,
            execution=execution if passed else None,
            attributions=attributions,
        )

    step_for_decision = make_step()

    def decision(x: dict):
        step_for_decision(x)
        return build(x)

    variants: dict[str, Callable[[dict], object]] = {
        "baseline": baseline,
        "combine": combine,
        "step": make_step(),
        "decision": decision,
    }
    # Move the inputs (and everything imported) out of the collector's view: a full collection would
    # otherwise traverse 20k input dicts and show up as multi-millisecond p99 spikes that are a property
    # of this harness's heap, not of the code measured. Collections of the objects the code creates
    # still happen and are measured.
    gc.collect()
    gc.freeze()
    warm = inputs[: min(500, len(inputs))]
    results: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, fn in variants.items():
        for x in warm:
            fn(x)
        if name == "step":  # re-run cleanly after warm-up so every variant sees the same sequence
            fn = variants[name] = make_step()
        results[name] = _time(fn, inputs)
        if name == "step":
            results["build"] = _time(build, inputs)  # on the step results just computed
            for x in inputs:  # the step results are kept for build: freeze them too
                x.pop("_combined", None)

    actions: dict[str, int] = {}
    for x in inputs:
        a = build(x).action
        actions[a] = actions.get(a, 0) + 1
    base = float(np.median(results["baseline"][1]))
    print(f"{'':<10} {'wall clock':^17}  {'thread CPU':^28}")
    print(f"{'variant':<10} {'p50 us':>8} {'p99 us':>8}  {'p50 us':>8} {'p99 us':>8} {'p50/baseline':>12}")
    out: dict[str, float] = {}
    for name in ("baseline", "combine", "step", "build", "decision"):
        w, c = results[name]
        w50, w99 = float(np.median(w)), float(np.percentile(w, 99))
        c50, c99 = float(np.median(c)), float(np.percentile(c, 99))
        print(f"{name:<10} {w50:8.2f} {w99:8.2f}  {c50:8.2f} {c99:8.2f} {c50 / base:12.1f}")
        out[f"{name}_p50_us"] = w50
        out[f"{name}_p99_us"] = w99
        out[f"{name}_cpu_p50_us"] = c50
        out[f"{name}_cpu_p99_us"] = c99
    out["decision_vs_baseline"] = out["decision_cpu_p50_us"] / base
    print(f"{args.n} decisions; actions: {dict(sorted(actions.items()))}")
    return out


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
