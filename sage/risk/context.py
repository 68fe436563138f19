"""What the risk models see: a candidate trade (:class:`TradeContext`) and the account (:class:`AccountContext`).

Both are frozen msgspec structs; :func:`risk_input_vector` turns a pair into the documented 40-dim float32
input of M-RMS (30 trade + 10 account features, :data:`INPUT_NAMES`). The same arithmetic, vectorised, is
:func:`risk_input_matrix`, which the training pipeline uses -- so training and inference read exactly
the same features (a test holds the two together).

Why these transforms: the network sees scale-free, roughly unit-sized numbers. Prices, ATRs and account
currency never enter raw -- what matters for sizing is *how much of the account one unit risks at one
ATR* (feature ``acct_log_unit_risk``), and for the bracket *how many ticks an ATR is* (costs in R units).
Every feature is clipped to a documented range, so an absurd input cannot push the network far outside
what it was trained on. Non-finite inputs raise :class:`RiskInputError` (fail closed).
"""

from __future__ import annotations

import math

import msgspec
import numpy as np
from numba import njit

N_AGENTS: int = 5
"""Agents in ``sage.agents.observation.AGENTS`` order: fvg, momentum, entry, trend, mean_reversion."""

AGENT_NAMES: tuple[str, ...] = ("fvg", "momentum", "entry", "trend", "mean_reversion")
"""Agent order of ``agent_directions``/``agent_strengths`` (the MARL contract's ``AGENTS``)."""

N_REGIMES: int = 4

TRADE_FEATURES: tuple[str, ...] = (
    "side",  # 0: +1 long / -1 short
    *(f"agent_dir_{a}" for a in AGENT_NAMES),  # 1-5: direction / 2, in [-1, 1]
    *(f"agent_strength_{a}" for a in AGENT_NAMES),  # 6-10: in [-1, 1]
    "combined_signal_x_side",  # 11: combined signal x side, [-1, 1]: > 0 agrees with the trade
    "combined_uncertainty",  # 12: [0, 1]
    "regime_p_bull",  # 13
    "regime_p_bear",  # 14
    "regime_p_sideways",  # 15
    "regime_p_volatile",  # 16
    "regime_level",  # 17: (level - 1) / 4 in [0, 1]
    "regime_uncertainty",  # 18: [0, 1]
    "volatility_pct",  # 19: per-bar return volatility x 100, clipped [0, 5]
    "atr_pct",  # 20: ATR / entry price x 100, clipped [0, 10]
    "log_atr_ticks",  # 21: log10(ATR / tick), clipped [-1, 5]: tick coarseness vs the stop (costs in R)
    "fvg_balance_x_side",  # 22: (bullish - bearish active gaps) / 3 x side, clipped [-2, 2]
    "fvg_nearest_level_atr",  # 23: (nearest gap edge - price) in ATRs x side, clipped [-5, 5]
    "fvg_mitigation_signal",  # 24: [0, 1]
    "rsi_x_side",  # 25: (RSI - 50) / 50 x side, [-1, 1]
    "bb_pctb_x_side",  # 26: (%b - 0.5) x side, clipped [-2, 2]
    "momentum_x_side",  # 27: momentum in sigmas x side, clipped [-5, 5], / 5
    "log_volume_ratio",  # 28: ln(volume ratio), clipped [-3, 3]
    "agreement",  # 29: (agents agreeing - disagreeing) / agents with a direction, [-1, 1]
)
"""The 30 trade-context features (index 0..29), in input order."""

ACCOUNT_FEATURES: tuple[str, ...] = (
    "acct_log_unit_risk",  # log10(contract_size * point_value * ATR / equity) + 3, clipped [-3, 3]
    "acct_open_risk",  # open risk / equity x 10, clipped [0, 5]
    "acct_drawdown",  # drawdown fraction x 10, clipped [0, 5]
    "acct_daily_pnl",  # daily PnL / equity x 10, clipped [-5, 5]
    "acct_recent_win_rate",  # recent win rate - 0.5, [-0.5, 0.5]
    "acct_consecutive_losses",  # losses / 5, clipped [0, 2]
    "acct_open_positions",  # open positions / 5, clipped [0, 2]
    "acct_gross_exposure",  # gross notional / equity / 5, clipped [0, 4]
    "acct_position_x_side",  # current position in sizing units, signed by side, / 5, clipped [-2, 2]
    "acct_bars_since_trade",  # log1p(bars since the last trade) / 5, clipped [0, 2]
)
"""The 10 account features (index 30..39), in input order."""

INPUT_NAMES: tuple[str, ...] = TRADE_FEATURES + ACCOUNT_FEATURES
"""All 40 input names of M-RMS, in order."""

INPUT_DIM: int = len(INPUT_NAMES)
assert len(TRADE_FEATURES) == 30 and len(ACCOUNT_FEATURES) == 10 and INPUT_DIM == 40


class RiskInputError(ValueError):
    """A trade or account context is unusable (non-finite value, non-positive price/ATR/tick, bad side)."""


class TradeContext(msgspec.Struct, frozen=True, kw_only=True):
    """A candidate trade as the strategy sees it at decision time (nothing from the future)."""

    side: int
    """+1 long, -1 short."""
    entry_price: float
    """Reference entry price (the decision bar's close)."""
    atr: float
    """Average true range in price units at decision time (> 0)."""
    tick_size: float
    """Instrument price increment (> 0); stop and target are rounded to it."""
    point_value: float = 1.0
    """Account currency per 1.0 price move per instrument unit (the futures multiplier; default 1)."""
    contract_size: float = 1.0
    """Instrument units per sizing unit (default 1): quantity = units x contract_size."""
    agent_directions: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)
    """Each agent's direction -2..2, in :data:`AGENT_NAMES` order (default all 0)."""
    agent_strengths: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)
    """Each agent's strength in [-1, 1] (default all 0)."""
    combined_signal: float = 0.0
    """The combiner's signal in [-1, 1] (default 0)."""
    combined_uncertainty: float = 0.5
    """The combiner's uncertainty in [0, 1] (default 0.5)."""
    regime_probabilities: tuple[float, float, float, float] = (0.25, 0.25, 0.25, 0.25)
    """BULL, BEAR, SIDEWAYS, VOLATILE probabilities (default uniform)."""
    regime_level: int = 1
    """Fallback level of the regime estimate, 1 (full model) .. 5 (last known) (default 1)."""
    regime_uncertainty: float = 0.5
    """Regime uncertainty in [0, 1] (default 0.5)."""
    volatility: float = 0.0
    """Per-bar return volatility (e.g. the ``ewma_vol`` feature; default 0)."""
    fvg_state: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    """FVG summary: (bullish_active, bearish_active, nearest_level, mitigation_signal) -- the
    ``fvg_*`` features of ``sage.features``; ``nearest_level`` is relative to price ((level - close) / close)."""
    rsi: float = 50.0
    """RSI in [0, 100] (default 50)."""
    bb_pctb: float = 0.5
    """Bollinger %b (default 0.5)."""
    momentum: float = 0.0
    """Fast momentum in sigmas (the ``mom_fast`` feature; default 0)."""
    volume_ratio: float = 1.0
    """Bar volume / its recent mean (default 1)."""

    def __post_init__(self) -> None:
        if self.side not in (-1, 1):
            raise RiskInputError(f"TradeContext.side must be +1 or -1, got {self.side!r}")
        for name in ("entry_price", "atr", "tick_size", "point_value", "contract_size"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise RiskInputError(f"TradeContext.{name} must be finite and > 0, got {value!r}")
        if len(self.agent_directions) != N_AGENTS or len(self.agent_strengths) != N_AGENTS:
            raise RiskInputError("TradeContext needs 5 agent directions and 5 agent strengths")
        if len(self.regime_probabilities) != N_REGIMES or len(self.fvg_state) != 4:
            raise RiskInputError("TradeContext needs 4 regime probabilities and a 4-value fvg_state")
        if not 1 <= self.regime_level <= 5:
            raise RiskInputError(f"TradeContext.regime_level must be in 1..5, got {self.regime_level!r}")


class AccountContext(msgspec.Struct, frozen=True, kw_only=True):
    """The account at decision time."""

    equity: float
    """Account equity in account currency (> 0)."""
    open_risk: float = 0.0
    """Money currently at risk to open stops (default 0)."""
    drawdown: float = 0.0
    """Drawdown from the equity peak as a fraction in [0, 1] (default 0)."""
    daily_pnl: float = 0.0
    """Today's PnL in account currency (default 0)."""
    recent_win_rate: float = 0.5
    """Share of recent trades that won (default 0.5 = no information)."""
    consecutive_losses: int = 0
    """Losing trades in a row (default 0)."""
    open_positions: int = 0
    """Number of open positions across instruments (default 0)."""
    gross_exposure: float = 0.0
    """Gross notional of open positions in account currency (default 0)."""
    position_units: float = 0.0
    """Signed position in this instrument, in sizing units (default 0)."""
    bars_since_last_trade: int = 1000
    """Bars since the last entry (default 1000 = long ago)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.equity) and self.equity > 0.0):
            raise RiskInputError(f"AccountContext.equity must be finite and > 0, got {self.equity!r}")
        for name in ("open_risk", "drawdown", "daily_pnl", "recent_win_rate", "gross_exposure", "position_units"):
            if not math.isfinite(getattr(self, name)):
                raise RiskInputError(f"AccountContext.{name} must be finite, got {getattr(self, name)!r}")



RAW_TRADE: tuple[str, ...] = (
    "side", "entry_price", "atr", "tick_size", "point_value", "contract_size",
    *(f"agent_direction_{i}" for i in range(N_AGENTS)), *(f"agent_strength_{i}" for i in range(N_AGENTS)),
    "combined_signal", "combined_uncertainty", *(f"regime_probability_{i}" for i in range(N_REGIMES)),
    "regime_level", "regime_uncertainty", "volatility", *(f"fvg_state_{i}" for i in range(4)),
    "rsi", "bb_pctb", "momentum", "volume_ratio",
)  # fmt: skip
"""Raw (untransformed) trade values in the order :func:`raw_values` lays them out (33)."""

RAW_ACCOUNT: tuple[str, ...] = (
    "equity", "open_risk", "drawdown", "daily_pnl", "recent_win_rate", "consecutive_losses",
    "open_positions", "gross_exposure", "position_units", "bars_since_last_trade",
)  # fmt: skip
"""Raw account values (10), after the trade values."""

RAW_NAMES: tuple[str, ...] = RAW_TRADE + RAW_ACCOUNT
RAW_DIM: int = len(RAW_NAMES)


def raw_values(trade: TradeContext, account: AccountContext, out: np.ndarray | None = None) -> np.ndarray:
    """The 43 raw values of a (trade, account) pair as float64, in :data:`RAW_NAMES` order."""
    t, a = trade, account
    values = (
        t.side, t.entry_price, t.atr, t.tick_size, t.point_value, t.contract_size,
        *t.agent_directions, *t.agent_strengths, t.combined_signal, t.combined_uncertainty,
        *t.regime_probabilities, t.regime_level, t.regime_uncertainty, t.volatility, *t.fvg_state,
        t.rsi, t.bb_pctb, t.momentum, t.volume_ratio,
        a.equity, a.open_risk, a.drawdown, a.daily_pnl, a.recent_win_rate, a.consecutive_losses,
        a.open_positions, a.gross_exposure, a.position_units, a.bars_since_last_trade,
    )  # fmt: skip
    if out is None:
        return np.array(values, dtype=np.float64)
    out[:] = values
    return out


@njit(cache=True, inline="always")
def _c(x: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, x))


@njit(cache=True)
def _features_row(r: np.ndarray, x: np.ndarray) -> bool:  # pragma: no cover - numba
    """Raw values ``r`` (43) -> features ``x`` (40, float32). False if any raw value is not finite."""
    for j in range(r.shape[0]):
        if not np.isfinite(r[j]):
            return False
    side, price, atr, tick, pv, csize = r[0], r[1], r[2], r[3], r[4], r[5]
    x[0] = side
    voters = 0.0
    agree = 0.0
    for i in range(5):
        d = r[6 + i]
        x[1 + i] = _c(d / 2.0, -1.0, 1.0)
        x[6 + i] = _c(r[11 + i], -1.0, 1.0)
        if d != 0.0:
            voters += 1.0
            agree += side if d > 0.0 else -side
    x[11] = _c(r[16] * side, -1.0, 1.0)
    x[12] = _c(r[17], 0.0, 1.0)
    for i in range(4):
        x[13 + i] = _c(r[18 + i], 0.0, 1.0)
    x[17] = _c((r[22] - 1.0) / 4.0, 0.0, 1.0)
    x[18] = _c(r[23], 0.0, 1.0)
    x[19] = _c(r[24] * 100.0, 0.0, 5.0)
    x[20] = _c(atr / price * 100.0, 0.0, 10.0)
    x[21] = _c(np.log10(atr / tick), -1.0, 5.0)
    x[22] = _c((r[25] - r[26]) / 3.0 * side, -2.0, 2.0)
    x[23] = _c(r[27] * price / atr * side, -5.0, 5.0)
    x[24] = _c(r[28], 0.0, 1.0)
    x[25] = _c((r[29] - 50.0) / 50.0 * side, -1.0, 1.0)
    x[26] = _c((r[30] - 0.5) * side, -2.0, 2.0)
    x[27] = _c(r[31] * side, -5.0, 5.0) / 5.0
    x[28] = _c(np.log(max(r[32], 1e-6)), -3.0, 3.0)
    x[29] = agree / voters if voters > 0.0 else 0.0
    eq = r[33]
    x[30] = _c(np.log10(max(csize * pv * atr / eq, 1e-12)) + 3.0, -3.0, 3.0)
    x[31] = _c(r[34] / eq * 10.0, 0.0, 5.0)
    x[32] = _c(r[35] * 10.0, 0.0, 5.0)
    x[33] = _c(r[36] / eq * 10.0, -5.0, 5.0)
    x[34] = _c(r[37] - 0.5, -0.5, 0.5)
    x[35] = _c(r[38] / 5.0, 0.0, 2.0)
    x[36] = _c(r[39] / 5.0, 0.0, 2.0)
    x[37] = _c(r[40] / eq / 5.0, 0.0, 4.0)
    x[38] = _c(r[41] * side / 5.0, -2.0, 2.0)
    x[39] = _c(np.log1p(max(r[42], 0.0)) / 5.0, 0.0, 2.0)
    return True


@njit(cache=True)
def _features_many(raw: np.ndarray, out: np.ndarray) -> int:  # pragma: no cover - numba
    """Row-wise :func:`_features_row`; returns the first bad row index or -1."""
    for i in range(raw.shape[0]):
        if not _features_row(raw[i], out[i]):
            return i
    return -1


def risk_input_vector(
    trade: TradeContext, account: AccountContext, out: np.ndarray | None = None
) -> np.ndarray:
    """The documented 40-dim float32 M-RMS input of one candidate (see :data:`INPUT_NAMES`, docs/risk.md)."""
    x = np.empty(INPUT_DIM, dtype=np.float32) if out is None else out
    if not _features_row(raw_values(trade, account), x):
        raise RiskInputError("trade/account context holds a non-finite value")
    return x


def risk_input_matrix(raw: np.ndarray) -> np.ndarray:
    """(n, 43) raw values (:data:`RAW_NAMES` order) -> (n, 40) float32 inputs, by the very kernel
    :func:`risk_input_vector` runs (training and inference cannot disagree)."""
    raw = np.ascontiguousarray(raw, dtype=np.float64)
    if raw.ndim != 2 or raw.shape[1] != RAW_DIM:
        raise RiskInputError(f"raw risk inputs must have shape (n, {RAW_DIM}), got {raw.shape}")
    out = np.empty((raw.shape[0], INPUT_DIM), dtype=np.float32)
    bad = _features_many(raw, out)
    if bad >= 0:
        raise RiskInputError(f"raw risk input row {bad} holds a non-finite value")
    return out
