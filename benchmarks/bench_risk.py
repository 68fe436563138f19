"""Risk benchmark: M-RMS proposal latency (numba engine vs torch forward) and VaR kernels (numba vs numpy).

Run: ``python -m benchmarks risk`` or ``python benchmarks/bench_risk.py``. Goals: proposal p99 < 200 us;
historical VaR over 1,000 scenarios x 10 instruments < 1 ms.
"""

from __future__ import annotations

import sys
import time

import numpy as np


def _percentiles(samples_ns: list[int]) -> tuple[float, float]:
    a = np.asarray(samples_ns, dtype=np.float64) / 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def main(argv: list[str] | None = None) -> dict[str, float]:
    import torch

    from sage.models.mrms import ensemble_torch
    from sage.risk import MRMS, AccountContext, TradeContext, risk_input_vector
    from sage.risk.var import historical_var, monte_carlo_var, numpy_historical_var, parametric_var_portfolio

    torch.set_num_threads(1)
    n = 5000
    model = MRMS.load("default")
    rng = np.random.default_rng(0)
    trades = [
        TradeContext(side=int(rng.choice([-1, 1])), entry_price=4000 + rng.normal() * 20, atr=5 + rng.random() * 3,
                     tick_size=0.25, point_value=50.0, agent_directions=tuple(int(v) for v in rng.integers(-2, 3, 5)),
                     agent_strengths=tuple(float(v) for v in rng.uniform(-1, 1, 5)), combined_signal=float(rng.uniform(-1, 1)),
                     regime_probabilities=(0.4, 0.2, 0.3, 0.1), volatility=0.001)
        for _ in range(200)
    ]  # fmt: skip
    account = AccountContext(equity=100_000.0)
    for t in trades[:50]:
        model.propose(t, account)  # warm-up
    propose_ns, torch_ns, features_ns = [], [], []
    for i in range(n):
        t = trades[i % len(trades)]
        t0 = time.perf_counter_ns()
        model.propose(t, account)
        propose_ns.append(time.perf_counter_ns() - t0)
    with torch.inference_mode():
        for i in range(n):
            t = trades[i % len(trades)]
            t0 = time.perf_counter_ns()
            x = torch.from_numpy(risk_input_vector(t, account)).unsqueeze(0)
            ensemble_torch(model.net, x)
            torch_ns.append(time.perf_counter_ns() - t0)
    for i in range(n):
        t0 = time.perf_counter_ns()
        risk_input_vector(trades[i % len(trades)], account)
        features_ns.append(time.perf_counter_ns() - t0)
    p50, p99 = _percentiles(propose_ns)
    t50, t99 = _percentiles(torch_ns)
    f50, f99 = _percentiles(features_ns)

    scen = rng.standard_t(5, size=(1000, 10)) * 0.01
    w = rng.normal(size=10) * 1e5
    cov = np.cov(scen.T)
    historical_var(scen, w, 0.99)
    monte_carlo_var(w, cov, 0.99, n_sims=1000, seed=0)
    reps = 2000

    def timed(fn) -> tuple[float, float]:
        samples = []
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            fn()
            samples.append(time.perf_counter_ns() - t0)
        return _percentiles(samples)

    h50, h99 = timed(lambda: historical_var(scen, w, 0.99))
    n50, n99 = timed(lambda: numpy_historical_var(scen, w, 0.99))
    m50, m99 = timed(lambda: monte_carlo_var(w, cov, 0.99, n_sims=1000, seed=0))
    pp50, pp99 = timed(lambda: parametric_var_portfolio(w, cov, 0.99))

    rows = [
        ("M-RMS propose (features + numba ensemble + decision)", p50, p99, "goal p99 < 200"),
        ("  of which: 40-dim input vector", f50, f99, ""),
        ("baseline: input + torch forward of the 3 sub-agents", t50, t99, f"propose is {t50 / p50:.1f}x faster (p50)"),
        ("historical VaR+CVaR, 1000 scen x 10 inst (numba)", h50, h99, "goal < 1000"),
        ("baseline: same in numpy", n50, n99, f"numba is {n50 / h50:.1f}x faster (p50)"),
        ("Monte Carlo VaR, 1000 sims x 10 inst", m50, m99, ""),
        ("parametric VaR, 10 inst", pp50, pp99, ""),
    ]
    print(f"{'measure':58s} {'p50 us':>9s} {'p99 us':>9s}  note")
    for name, a, b, note in rows:
        print(f"{name:58s} {a:9.1f} {b:9.1f}  {note}")
    return {
        "mrms_propose_p50_us": p50,
        "mrms_propose_p99_us": p99,
        "torch_forward_p50_us": t50,
        "torch_forward_p99_us": t99,
        "propose_speedup_vs_torch": t50 / p50,
        "historical_var_p50_us": h50,
        "historical_var_p99_us": h99,
        "numpy_var_p50_us": n50,
        "var_speedup_vs_numpy": n50 / h50,
        "monte_carlo_var_p50_us": m50,
    }


if __name__ == "__main__":
    main(sys.argv[1:])
