"""PortfolioRisk.check_entry limits, Kelly cap, VaR limit, state round trip; KillSwitch.check (pure)."""

from __future__ import annotations

import numpy as np
import pytest

from sage.risk import CorrelationConfig, KillSwitch, KillSwitchConfig, PortfolioRisk, PortfolioRiskConfig


def _risk(**kw) -> PortfolioRisk:
    pr = PortfolioRisk(PortfolioRiskConfig(**kw))
    pr.update_equity(100_000.0, day=0)
    return pr


def test_per_trade_risk_cap_cuts_quantity():
    pr = _risk(max_risk_per_trade=0.01)
    check = pr.check_entry("ES", 5, risk_amount=2500.0, notional=5 * 200_000 / 10, equity=100_000.0)
    assert check.allowed and check.quantity == 2.0  # 1000 / 2500 * 5 = 2
    assert check.reasons == ("per_trade_risk",) and check.risk_cap == pytest.approx(1000.0)


def test_gross_exposure_limit():
    pr = _risk(max_gross_exposure=2.0)
    pr.set_position("A", 1000, 150.0)  # 150k exposure
    check = pr.check_entry("B", 1000, risk_amount=100.0, notional=100_000.0, equity=100_000.0)
    assert check.quantity == 500.0 and "gross_exposure" in check.reasons


def test_drawdown_and_daily_loss_refuse():
    pr = _risk(max_drawdown=0.1, max_daily_loss=0.03)
    pr.update_equity(89_000.0, day=0)
    check = pr.check_entry("ES", 1, risk_amount=10.0, notional=1000.0, equity=89_000.0)
    assert not check.allowed and set(check.reasons) == {"max_drawdown", "max_daily_loss"}
    pr.update_equity(89_000.0, day=1)  # new day: daily loss resets, drawdown does not
    assert pr.check_entry("ES", 1, 10.0, 1000.0, 89_000.0).reasons == ("max_drawdown",)


def test_kelly_cap_after_enough_trades():
    pr = _risk(max_risk_per_trade=0.02, kelly_fraction=0.5, kelly_min_trades=10, kelly_floor=0.001)
    for r in [1.0, -1.0] * 10:  # p = 0.5, b = 1 -> f* = 0 -> floor
        pr.record_trade(r)
    assert pr.kelly_risk_fraction() == 0.001
    check = pr.check_entry("ES", 10, risk_amount=1000.0, notional=1.0, equity=100_000.0)
    assert check.quantity == 1.0 and check.reasons == ("kelly_cap",)
    for r in [2.0, -1.0] * 10:  # 40 trades: 20 wins of mean 1.5R, 20 losses of 1R
        pr.record_trade(r)
    p_win, b = 0.5, 1.5
    assert 0.5 * (p_win - (1 - p_win) / b) == pytest.approx(1 / 12)
    assert pr.kelly_risk_fraction() == 0.02  # half Kelly (8.3 %) capped at max_risk_per_trade


def test_var_limit_found_by_bisection():
    pr = _risk(max_var=0.01, var_min_periods=100, max_risk_per_trade=1.0, max_gross_exposure=100.0)
    rng = np.random.default_rng(0)
    for r in rng.normal(0.0, 0.01, 400):
        pr.update_returns("ES", r)
    check = pr.check_entry("ES", 100, risk_amount=1.0, notional=1_000_000.0, equity=100_000.0)
    assert "var_limit" in check.reasons
    assert check.var_after == pytest.approx(1000.0, rel=1e-3)  # exactly at the limit (VaR is linear in size)
    assert 0 < check.quantity < 100


def test_correlation_shock_cuts_entry():
    cfg = CorrelationConfig(lam=0.9, min_periods=20, shock_window=20, shock_threshold=0.3, leverage_factor=0.5,
                            cooldown=100)
    pr = _risk(correlation=cfg, max_gross_exposure=1.0)
    rng = np.random.default_rng(2)
    for t in range(100):
        pr.update_returns("A", rng.normal(0, 0.01), ts=t)
        pr.update_returns("B", rng.normal(0, 0.01), ts=t)
    before = pr.check_entry("A", 100, risk_amount=10.0, notional=100_000.0, equity=100_000.0)
    for t in range(100, 130):
        r = rng.normal(0, 0.01)
        pr.update_returns("A", r, ts=t)
        pr.update_returns("B", r, ts=t)
    assert pr.correlation.count == 130 and pr.correlation.shocks == 1
    after = pr.check_entry("A", 100, risk_amount=10.0, notional=100_000.0, equity=100_000.0)
    assert before.quantity == 100 and before.reasons == ()
    assert after.quantity == 50 and "correlation_shock" in after.reasons


def test_portfolio_state_round_trip():
    pr = _risk()
    rng = np.random.default_rng(1)
    for r in rng.normal(0, 0.01, 150):
        pr.update_returns("ES", r)
    pr.set_position("ES", 2, 4000.0, 50.0)
    pr.record_trade(1.5)
    restored = PortfolioRisk(pr.config)
    restored.load_state(pr.to_state())
    assert restored.var() == pr.var() and restored.gross_exposure == pr.gross_exposure
    assert restored.check_entry("ES", 3, 900.0, 600_000.0, 100_000.0) == pr.check_entry("ES", 3, 900.0, 600_000.0, 100_000.0)


def test_kill_switch_check_is_pure_arithmetic():
    ks = KillSwitch(KillSwitchConfig(max_drawdown=0.1, max_daily_loss=0.05, max_consecutive_losses=4))
    assert ks.check(equity=100_000.0, day=0) is None
    assert ks.check(equity=110_000.0, day=0) is None  # new peak
    assert ks.check(equity=100_000.0, day=1) is None  # 9.1 % drawdown, new day
    assert "drawdown" in ks.check(equity=98_900.0, day=1)
    ks2 = KillSwitch(KillSwitchConfig(max_daily_loss=0.05))
    ks2.check(equity=100_000.0, day=0)
    assert "daily loss" in ks2.check(equity=100_000.0, daily_pnl=-5_000.0)
    assert "consecutive" in ks.check(equity=120_000.0, consecutive_losses=4)
    assert not ks.active  # check never engages by itself
    restored = KillSwitch(ks.config)
    restored.from_state(ks.to_state())
    assert restored.state == ks.state
