"""Performance metrics and causal baselines against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sage.training.metrics import (
    MetricsError,
    buy_and_hold_positions,
    ema,
    ema_cross_positions,
    evaluate_positions,
    flat_positions,
    forward_returns,
    max_drawdown,
    performance,
    random_positions,
)


def test_performance_hand_computed() -> None:
    positions = [1.0, 1.0, -1.0, 0.0]
    returns = [0.01, -0.02, -0.01, 0.05]
    m = performance(positions, returns, cost_bps=10.0, periods_per_year=4.0)
    # Costs: entry 1 (0.001), flip 2 (0.002), exit 1 (0.001).
    net = [0.01 - 0.001, -0.02, 0.01 - 0.002, 0.0 - 0.001]
    equity = np.cumprod(1.0 + np.array(net))
    assert m.total_return == pytest.approx(equity[-1] - 1.0, abs=1e-15)
    mean = sum(net) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in net) / 3)
    assert m.sharpe == pytest.approx(mean / sd * 2.0, rel=1e-12)
    # Peak 1.009 after bar 0, trough 1.009 * 0.98 after bar 1 -> 2 % drawdown (then 0.98 * 1.008 * 0.999).
    trough = min(equity[1:])
    assert m.max_drawdown == pytest.approx((1.009 - trough) / 1.009, rel=1e-12)
    assert m.turnover == 4.0 and m.n_trades == 3 and m.n_periods == 4
    assert m.total_cost == pytest.approx(0.004, abs=1e-15)
    assert m.exposure == pytest.approx(0.75)
    assert m.hit_rate == pytest.approx(2 / 3)  # long +1 %, long -2 %, short -1 %


def test_flat_and_constant_series() -> None:
    m = performance(flat_positions(5), [0.01, -0.01, 0.02, 0.0, 0.01], cost_bps=5.0)
    assert (m.sharpe, m.total_return, m.max_drawdown, m.turnover, m.n_trades) == (0.0, 0.0, 0.0, 0.0, 0)
    m = performance(buy_and_hold_positions(3), [0.01, 0.01, 0.01], cost_bps=0.0)
    assert m.sharpe == 0.0  # zero variance: defined as 0, not inf
    assert m.total_return == pytest.approx(1.01**3 - 1.0)
    assert m.n_trades == 1 and m.turnover == 1.0
    assert max_drawdown(np.array([-0.5, 1.0, -0.5])) == pytest.approx(0.5)


def test_evaluate_positions_aligns_decisions_with_next_return() -> None:
    close = np.array([100.0, 110.0, 99.0, 99.0])
    assert forward_returns(close).tolist() == pytest.approx([0.1, -0.1, 0.0])
    m = evaluate_positions([1.0, 0.0, 1.0, -1.0], close)  # last position has no next bar: dropped
    assert m.total_return == pytest.approx(0.1)
    assert m.n_periods == 3


def test_ema_cross_is_causal_and_hand_checked() -> None:
    x = np.array([1.0, 2.0, 3.0])
    assert ema(x, 3).tolist() == pytest.approx([1.0, 1.5, 2.25])  # alpha 0.5
    rng = np.random.default_rng(0)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, 300)))
    pos = ema_cross_positions(close, fast=5, slow=20)
    assert set(np.unique(pos)) <= {-1.0, 0.0, 1.0}
    assert (pos[:19] == 0.0).all() and (pos[19:] != 0.0).all()
    for t in (50, 150, 250):
        future = close.copy()
        future[t + 1 :] *= rng.uniform(0.5, 1.5, future.size - t - 1)
        assert np.array_equal(ema_cross_positions(future, 5, 20)[: t + 1], pos[: t + 1])
    up = np.linspace(100.0, 200.0, 60)
    assert (ema_cross_positions(up, 5, 20)[19:] == 1.0).all()
    assert (ema_cross_positions(up[::-1], 5, 20, long_only=True)[19:] == 0.0).all()


def test_random_positions_are_seeded() -> None:
    a = random_positions(100, seed=3, hold=4)
    assert np.array_equal(a, random_positions(100, seed=3, hold=4))
    assert not np.array_equal(a, random_positions(100, seed=4, hold=4))
    assert a.size == 100 and set(np.unique(a)) <= {-1.0, 0.0, 1.0}
    assert all(len(set(a[i : i + 4])) == 1 for i in range(0, 100, 4))


def test_bad_inputs_raise() -> None:
    with pytest.raises(MetricsError, match="equal length"):
        performance([1.0, 0.0], [0.01])
    with pytest.raises(MetricsError, match="NaN"):
        performance([1.0, np.nan], [0.01, 0.02])
    with pytest.raises(MetricsError, match="fast < slow"):
        ema_cross_positions(np.ones(10), fast=30, slow=10)
    with pytest.raises(MetricsError, match="cost_bps"):
        performance([1.0], [0.01], cost_bps=-1.0)
