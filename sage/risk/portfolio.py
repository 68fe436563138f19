"""Portfolio risk: the limits every new entry must pass, and by how much it is cut to pass them.

:meth:`PortfolioRisk.check_entry` applies, in order (each may only shrink the trade):

1. **hard stops** -- drawdown >= ``max_drawdown`` or today's loss >= ``max_daily_loss``: refused;
2. **correlation shock** -- while the EWMA correlation detector reports a shock, the exposure and risk
   limits are multiplied by its ``leverage_factor``;
3. **per-trade risk** -- money at risk <= ``min(max_risk_per_trade, Kelly cap) * equity``; the Kelly cap is
   ``kelly_fraction * f*`` from the last ``kelly_lookback`` realised trades (in R multiples), limited to
   ``[kelly_floor, max_risk_per_trade]``, used once ``kelly_min_trades`` trades exist;
4. **gross exposure** -- sum of |notional| after the trade <= ``max_gross_exposure * equity``;
5. **VaR** -- the portfolio's one-step VaR (``var_method`` at ``var_confidence``) including the new
   position <= ``max_var * equity``; the largest scale passing is found by bisection.

The result's ``quantity`` is rounded *down* to the lot; ``allowed`` is False when nothing is left, and
``reasons`` names every limit that cut or refused the trade. Everything is plain Python/numpy: the
Nautilus strategy feeds returns (:meth:`update_returns`), positions (:meth:`set_position`), equity
(:meth:`update_equity`) and closed trades (:meth:`record_trade`).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Literal

import msgspec
import numpy as np

from sage.risk.correlation import CorrelationConfig, EWMACorrelation
from sage.risk.kelly import kelly_from_outcomes
from sage.risk.var import VaRResult, historical_var, monte_carlo_var, parametric_var_portfolio

VaRMethod = Literal["historical", "parametric", "monte_carlo"]


class PortfolioRiskConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Portfolio limits (fractions of equity unless stated)."""

    max_risk_per_trade: float = 0.01
    """Money at risk at the stop per trade (default 1 % of equity)."""
    max_gross_exposure: float = 4.0
    """Gross notional / equity (default 4x)."""
    max_daily_loss: float = 0.03
    """Loss since the day's start that refuses new entries (default 3 %)."""
    max_drawdown: float = 0.10
    """Drawdown from the equity peak that refuses new entries (default 10 %)."""
    kelly_fraction: float = 0.25
    """Multiplier of the estimated Kelly fraction (default 1/4 Kelly)."""
    kelly_floor: float = 0.0025
    """Smallest per-trade risk cap the Kelly rule sets, so a cold streak does not stop learning about the
    edge entirely (default 0.25 %; the kill switch handles real damage)."""
    kelly_min_trades: int = 30
    """Realised trades needed before the Kelly cap applies (default 30)."""
    kelly_lookback: int = 200
    """Realised trades the Kelly estimate uses (default 200)."""
    max_var: float = 0.03
    """One-step portfolio VaR limit (default 3 % of equity)."""
    var_confidence: float = 0.99
    """VaR confidence level (default 0.99)."""
    var_method: VaRMethod = "historical"
    """``historical`` (default), ``parametric`` (EWMA covariance) or ``monte_carlo`` (EWMA covariance)."""
    var_lookback: int = 500
    """Return steps kept for historical VaR (default 500)."""
    var_min_periods: int = 100
    """Steps needed before the VaR limit applies (default 100; the check is skipped, and said so, before)."""
    mc_sims: int = 2000
    """Monte Carlo scenarios (default 2000)."""
    seed: int = 0
    """Monte Carlo seed (default 0)."""
    correlation: CorrelationConfig = CorrelationConfig()
    """EWMA correlation and shock detection (see ``sage.risk.correlation``)."""

    def __post_init__(self) -> None:
        for name in ("max_risk_per_trade", "max_gross_exposure", "max_daily_loss", "max_drawdown", "max_var"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 < self.kelly_fraction <= 1.0:
            raise ValueError(f"kelly_fraction must be in (0, 1], got {self.kelly_fraction}")
        if not 0.0 <= self.kelly_floor <= self.max_risk_per_trade:
            raise ValueError("kelly_floor must be in [0, max_risk_per_trade]")
        if self.var_method not in ("historical", "parametric", "monte_carlo"):
            raise ValueError(f"var_method must be historical, parametric or monte_carlo, got {self.var_method!r}")


class EntryCheck(msgspec.Struct, frozen=True, kw_only=True):
    """Verdict on one proposed entry."""

    allowed: bool
    """False when the trade is refused or cut to nothing."""
    quantity: float
    """Quantity allowed (rounded down to the lot; <= the requested quantity)."""
    scale: float
    """Allowed / requested quantity before lot rounding (1.0 = untouched)."""
    reasons: tuple[str, ...] = ()
    """Each limit that cut or refused the trade, e.g. ``per_trade_risk``, ``correlation_shock``."""
    var_after: float = math.nan
    """Portfolio VaR including the allowed trade (NaN when unavailable)."""
    risk_cap: float = math.nan
    """Per-trade money-at-risk cap that applied (account currency)."""


class _Position(msgspec.Struct):
    quantity: float
    price: float
    point_value: float

    @property
    def exposure(self) -> float:
        return self.quantity * self.price * self.point_value


class PortfolioRisk:
    """Stateful portfolio risk manager (pure Python; see the module docstring)."""

    def __init__(self, config: PortfolioRiskConfig | None = None) -> None:
        self.config = config or PortfolioRiskConfig()
        self.correlation = EWMACorrelation(self.config.correlation)
        self._rows: deque[np.ndarray] = deque(maxlen=self.config.var_lookback)
        self._pending: dict[str, float] = {}
        self._pending_ts: int | None = None
        self._expected: set[str] = set()
        self.positions: dict[str, _Position] = {}
        self.outcomes: deque[float] = deque(maxlen=self.config.kelly_lookback)
        self.peak_equity = math.nan
        self.day_start_equity = math.nan
        self.equity = math.nan
        self.day: int | None = None

    # -- feeds ----------------------------------------------------------------------------------------

    def update_returns(self, instrument_id: str, ret: float, ts: int | None = None) -> None:
        """One bar's return of one instrument at bar time ``ts``.

        Returns of equal ``ts`` form one step (one row of the EWMA/VaR history). A step is committed as
        soon as every instrument of the previous step has reported, or when a return with a later ``ts``
        (or, without ``ts``, a second return of the same instrument) arrives; instruments missing from a
        step count as 0 for it. The very first step waits for the second timestamp (the set of
        instruments is not known before).
        """
        name = str(instrument_id)
        if self._pending and (name in self._pending or (ts is not None and ts != self._pending_ts)):
            self.commit()
        self._pending[name] = float(ret)
        self._pending_ts = ts
        if self._expected and self._expected <= set(self._pending):
            self.commit()

    def commit(self) -> bool:
        """Close the current step (feeds EWMA correlation and the VaR history); True on a new shock."""
        if not self._pending:
            return False
        shock = self.correlation.update(self._pending)
        row = np.zeros(len(self.correlation.names))
        for name, value in self._pending.items():
            row[self.correlation.names.index(name)] = value if math.isfinite(value) else 0.0
        self._rows.append(row)
        self._expected = set(self._pending)
        self._pending = {}
        return shock

    def set_position(self, instrument_id: str, quantity: float, price: float, point_value: float = 1.0) -> None:
        """Current signed position (instrument units) and mark price; quantity 0 removes it."""
        name = str(instrument_id)
        self.correlation.index(name)
        if quantity == 0.0:
            self.positions.pop(name, None)
        else:
            self.positions[name] = _Position(float(quantity), float(price), float(point_value))

    def update_equity(self, equity: float, day: int | None = None) -> None:
        """Mark equity; ``day`` (any int, e.g. ``ts // 86400e9``) starts a new daily-loss window when it changes."""
        if not (math.isfinite(equity) and equity > 0.0):
            raise ValueError(f"equity must be finite and > 0, got {equity!r}")
        self.equity = float(equity)
        if not math.isfinite(self.peak_equity) or equity > self.peak_equity:
            self.peak_equity = float(equity)
        if day is not None and day != self.day:
            self.day = day
            self.day_start_equity = float(equity)
        elif not math.isfinite(self.day_start_equity):
            self.day_start_equity = float(equity)

    def record_trade(self, r_multiple: float) -> None:
        """A closed trade's PnL divided by the money it risked at entry (feeds the Kelly estimate)."""
        if math.isfinite(r_multiple):
            self.outcomes.append(float(r_multiple))

    # -- measures -------------------------------------------------------------------------------------

    @property
    def drawdown(self) -> float:
        if not math.isfinite(self.peak_equity):
            return 0.0
        return max(0.0, 1.0 - self.equity / self.peak_equity)

    @property
    def daily_pnl(self) -> float:
        if not math.isfinite(self.day_start_equity):
            return 0.0
        return self.equity - self.day_start_equity

    @property
    def gross_exposure(self) -> float:
        return float(sum(abs(p.exposure) for p in self.positions.values()))

    def kelly_risk_fraction(self) -> float | None:
        """Per-trade risk cap from realised outcomes (None before ``kelly_min_trades``)."""
        c = self.config
        if len(self.outcomes) < c.kelly_min_trades:
            return None
        _, _, f = kelly_from_outcomes(np.fromiter(self.outcomes, float))
        return min(c.max_risk_per_trade, max(c.kelly_floor, c.kelly_fraction * f))

    def exposures(self, extra: dict[str, float] | None = None) -> np.ndarray:
        """Signed money exposure per instrument (``correlation.names`` order), plus ``extra``."""
        for name in extra or {}:
            self.correlation.index(name)  # register a new instrument before sizing the vector
        e = np.zeros(len(self.correlation.names))
        for name, pos in self.positions.items():
            e[self.correlation.names.index(name)] += pos.exposure
        for name, value in (extra or {}).items():
            e[self.correlation.names.index(name)] += value
        return e

    def var(self, exposures: np.ndarray | None = None) -> VaRResult | None:
        """One-step portfolio VaR/CVaR in money for ``exposures`` (default: current positions); None in warm-up."""
        c = self.config
        w = self.exposures() if exposures is None else np.asarray(exposures, dtype=np.float64)
        n = len(self.correlation.names)
        if len(self._rows) < c.var_min_periods or w.size != n:
            return None
        if c.var_method == "historical":
            scen = np.zeros((len(self._rows), n))
            for i, row in enumerate(self._rows):
                scen[i, : row.size] = row
            return historical_var(scen, w, c.var_confidence)
        cov = self.correlation.covariance()
        if not np.isfinite(cov).all():
            return None
        if c.var_method == "parametric":
            return parametric_var_portfolio(w, cov, c.var_confidence)
        return monte_carlo_var(w, cov, c.var_confidence, n_sims=c.mc_sims, seed=c.seed)

    # -- the check ------------------------------------------------------------------------------------

    def check_entry(
        self,
        instrument_id: str,
        quantity: float,
        risk_amount: float,
        notional: float,
        equity: float,
        *,
        side: int = 1,
        lot: float = 1.0,
        daily_pnl: float | None = None,
        drawdown: float | None = None,
    ) -> EntryCheck:
        """Limit a proposed entry (``quantity`` units, ``risk_amount`` money at the stop, ``notional``
        money value, on ``side``). ``daily_pnl``/``drawdown`` default to the tracked values."""
        c = self.config
        if not (math.isfinite(equity) and equity > 0.0):
            return EntryCheck(allowed=False, quantity=0.0, scale=0.0, reasons=("invalid_equity",))
        if not (quantity > 0.0 and math.isfinite(risk_amount) and math.isfinite(notional)):
            return EntryCheck(allowed=False, quantity=0.0, scale=0.0, reasons=("nothing_to_check",))
        dd = self.drawdown if drawdown is None else drawdown
        day = self.daily_pnl if daily_pnl is None else daily_pnl
        refused = []
        if dd >= c.max_drawdown:
            refused.append("max_drawdown")
        if -day >= c.max_daily_loss * equity:
            refused.append("max_daily_loss")
        if refused:
            return EntryCheck(allowed=False, quantity=0.0, scale=0.0, reasons=tuple(refused))

        reasons: list[str] = []
        scale = 1.0
        leverage = self.correlation.leverage_scale
        if leverage < 1.0:
            reasons.append("correlation_shock")
            scale *= leverage
        kelly = self.kelly_risk_fraction()
        cap_fraction = c.max_risk_per_trade if kelly is None else min(c.max_risk_per_trade, kelly)
        risk_cap = cap_fraction * equity * leverage
        if risk_amount * scale > risk_cap:
            reasons.append("per_trade_risk" if kelly is None or kelly >= c.max_risk_per_trade else "kelly_cap")
            scale = risk_cap / risk_amount
        room = c.max_gross_exposure * equity * leverage - self.gross_exposure
        if abs(notional) * scale > room:
            reasons.append("gross_exposure")
            scale = max(0.0, room / abs(notional))
        var_after = math.nan
        signed = math.copysign(abs(notional), side)
        if scale > 0.0:
            name = str(instrument_id)
            base = self.exposures({name: 0.0})
            k = self.correlation.names.index(name)

            def var_at(s: float) -> float:
                e = base.copy()
                e[k] += signed * s
                result = self.var(e)
                return math.nan if result is None else result.var

            limit = c.max_var * equity * leverage
            var_after = var_at(scale)
            if math.isfinite(var_after) and var_after > limit:
                lo, hi = 0.0, scale
                for _ in range(20):
                    mid = 0.5 * (lo + hi)
                    if var_at(mid) <= limit:
                        lo = mid
                    else:
                        hi = mid
                reasons.append("var_limit")
                scale = lo
                var_after = var_at(scale)
        allowed_qty = math.floor(quantity * scale / lot + 1e-9) * lot
        allowed_qty = min(allowed_qty, quantity)
        if allowed_qty <= 0.0 and "cut_to_zero" not in reasons:
            reasons.append("cut_to_zero")
        return EntryCheck(
            allowed=allowed_qty > 0.0,
            quantity=float(allowed_qty),
            scale=float(scale),
            reasons=tuple(reasons),
            var_after=float(var_after),
            risk_cap=float(risk_cap),
        )

    # -- persistence ----------------------------------------------------------------------------------

    def to_state(self) -> dict[str, bytes]:
        state = {
            "correlation": self.correlation.to_state(),
            "rows": [r.tolist() for r in self._rows],
            "pending": self._pending,
            "pending_ts": self._pending_ts,
            "expected": sorted(self._expected),
            "positions": {k: [p.quantity, p.price, p.point_value] for k, p in self.positions.items()},
            "outcomes": list(self.outcomes),
            "peak_equity": self.peak_equity,
            "day_start_equity": self.day_start_equity,
            "equity": self.equity,
            "day": self.day,
        }
        return {"sage.portfolio_risk": msgspec.json.encode(state)}

    def load_state(self, state: dict[str, bytes]) -> None:
        raw = state.get("sage.portfolio_risk")
        if raw is None:
            return
        s = msgspec.json.decode(raw)
        self.correlation.load_state(s["correlation"])
        self._rows = deque((np.asarray(r, dtype=np.float64) for r in s["rows"]), maxlen=self.config.var_lookback)
        self._pending = dict(s["pending"])
        self._pending_ts = s["pending_ts"]
        self._expected = set(s["expected"])
        self.positions = {k: _Position(*v) for k, v in s["positions"].items()}
        self.outcomes = deque(s["outcomes"], maxlen=self.config.kelly_lookback)
        nan = lambda v: math.nan if v is None else float(v)
        self.peak_equity, self.day_start_equity, self.equity = nan(s["peak_equity"]), nan(s["day_start_equity"]), nan(s["equity"])
        self.day = s["day"]
