"""Walk-forward evaluation of the full SAGE strategy in a real ``BacktestNode`` -- ``sage evaluate strategy``.

What runs. For each real sample dataset the very run of ``configs/sage_backtest.yaml`` (config (a)) is
rewritten for that instrument (:func:`sage.nodes.overrides.apply_overrides`): the ``RegimeActor`` live on
the base bars, the ``SageStrategy`` and sage's exec algorithms, the venue's 1 ms latency model (an order
decided on bar t fills at a later bar), the seeded one-tick slippage model and fees -- ES 2.50 USD per
contract as in the config, the other instruments their own taker fee (EUR/USD 0.2 bp, SPX 1 bp, GOOG
5 bp; Nautilus's maker/taker fee model). Two baselines run in the same engine set-up on the same bars:
buy-and-hold (:class:`BuyAndHold`, below) and Nautilus's own ``EMACross`` example (EMA 10/30, always in
the market, long or short).

Sizing, so the three are comparable. Buy-and-hold and EMACross trade one *base quantity*: the starting
equity's worth of the instrument at the first close of the run (1x notional). SAGE's sizing unit
(``contract_size``) is a fifth of it, so the M-RMS maximum of 5 units is the same 1x; the portfolio limits
(1 % risk per trade at the stop, VaR, exposure) usually cut it further. ``exposure`` in the results says
how much of the time-averaged equity each strategy actually had in the market.

Timeframes. The agents were trained on 5-minute (tactical) and 30-minute (strategic) bars of a synthetic
market; the strategic matrix needs 539 + 48 strategic bars before it is complete. Per dataset
(:data:`DATASETS`): ES 1-minute keeps the strategy's defaults for the tactical bars (5-minute INTERNAL)
and disables the strategic agents (1.5 days = 75 thirty-minute bars, they could never warm up); EUR/USD
hourly decides on the hourly bars and feeds the strategic agents 6-hour INTERNAL bars (the same 1:6 ratio;
they join after ~3,500 hours, in the last part of the data); SPX daily decides on daily bars with 5-day
INTERNAL strategic bars (they join after ~8 years); GOOG daily has too few days for any coarser
strategic timeframe to warm up, so it runs the tactical agents only.

Walk-forward. The shipped models were trained on synthetic data only, so every real bar is
out-of-sample. Each dataset's bars after a warm-up prefix are cut into ``folds`` consecutive test windows
(time order, nothing reused) and every strategy is scored per window and pooled over all windows:

* ``continuous`` (default): one run per dataset and strategy walks forward through all the data. What the
  strategy adapts online (the combiner's per-regime weights, Kelly statistics, the kill switch) learns
  only from the past, exactly as it would live; a kill switch that engages stays engaged (it needs an
  operator), and later windows show that.
* ``independent``: a fresh engine per window, fed ``warmup_bars`` base bars before the window: each window
  is a new deployment (fresh combiner, fresh kill switch). Strategic agents rarely warm up this way.

Scoring (one definition for every strategy, costs included because they are in the fills). Equity is
marked to market on every base bar (:func:`sage.reports.stats.equity_curves`: fills + bar closes, fees
deducted); a window's returns are the bar-to-bar equity returns of its bars, the first measured from the
last bar before the window, so windows partition the pooled series exactly. Sharpe = mean / std (ddof 1)
of those returns x sqrt(bars per year of the dataset) as in :mod:`sage.training.metrics`; total return
compounds them; max drawdown is the largest fall of the compounded equity from its peak; turnover is traded
notional over mean equity; trades counts entries (flat -> position, or a reversal); exposure is the mean
|position notional| / equity.

Determinism: the regime detector's wall-clock latency guard (a model call slower than
``latency_budget_us`` degrades the regime level) depends on machine load, so the evaluation sets the
budget out of reach; everything else is seeded, and two runs give identical numbers.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
from nautilus_trader.config import StrategyConfig
from nautilus_trader.examples.strategies.ema_cross import EMACross
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.trading.strategy import Strategy

from sage.data.bar_types import instrument_of

__all__ = [
    "DATASETS",
    "BuyAndHold",
    "BuyAndHoldConfig",
    "DatasetSpec",
    "PatientEMACross",
    "StrategyEvaluationConfig",
    "StrategyEvaluationError",
    "StrategyEvaluationReport",
    "build_run_config",
    "run_strategy_evaluation",
    "score_window",
    "sizing",
    "to_markdown",
    "window_bounds",
]

STRATEGIES: tuple[str, ...] = ("sage", "buy_and_hold", "ema_cross_10_30")
_MAX_UNITS = 5  # M-RMS proposes 0..5 sizing units


class StrategyEvaluationError(ValueError):
    """An evaluation that cannot run as configured (unknown dataset, too few bars, missing catalog)."""


# -- the buy-and-hold baseline -------------------------------------------------------------------------


class BuyAndHoldConfig(StrategyConfig, frozen=True, kw_only=True):
    """Configuration for :class:`BuyAndHold`.

    Parameters
    ----------
    instrument_id : str
        The instrument bought.
    bar_type : str
        Bars whose first close triggers the purchase.
    trade_size : Decimal
        Quantity bought (the evaluation passes the starting equity's worth at the first close).
    """

    instrument_id: str
    bar_type: str
    trade_size: Decimal


class BuyAndHold(Strategy):
    """Buys ``trade_size`` at market on the first bar and holds it; flattens when stopped.

    The passive benchmark run through the same venue, latency, slippage and fees as the strategies it is
    compared with (so its one entry pays the same costs), not computed from closes on the side.
    """

    def __init__(self, config: BuyAndHoldConfig) -> None:
        super().__init__(config)
        self.instrument_id = InstrumentId.from_str(config.instrument_id)
        self.bar_type = BarType.from_str(config.bar_type)
        self.bought = False

    def on_start(self) -> None:
        self.instrument = self.cache.instrument(self.instrument_id)
        if self.instrument is None:
            self.log.error(f"instrument {self.instrument_id} not in the cache; stopping")
            self.stop()
            return
        self.subscribe_bars(self.bar_type)

    def on_bar(self, bar: Bar) -> None:
        if self.bought:
            return
        self.bought = True
        self.submit_order(
            self.order_factory.market(
                instrument_id=self.instrument_id,
                order_side=OrderSide.BUY,
                quantity=self.instrument.make_qty(self.config.trade_size),
            )
        )

    def on_stop(self) -> None:
        self.close_all_positions(self.instrument_id)


class PatientEMACross(EMACross):
    """Nautilus's ``EMACross`` example, unchanged except that it decides only when none of its own orders is
    still working.

    Why: the example assumes an order fills before the next bar. Under the evaluation's 1 ms latency model
    an order sent on bar t fills at bar t+1's close, *after* ``on_bar(t+1)`` has run, so the unmodified
    example sees itself still flat (or still on the wrong side) and sends the same order again: measured
    on the sample data, its exposure reached 2x (ES, EUR/USD) to 8x (SPX) of the intended size. Waiting
    for its own fills keeps it at the configured ``trade_size``, as its author intended.
    """

    def on_bar(self, bar: Bar) -> None:
        if self.cache.orders_open_count(strategy_id=self.id) or self.cache.orders_inflight_count(
            strategy_id=self.id
        ):
            return  # the EMAs still update: they are registered indicators, fed before on_bar
        super().on_bar(bar)


# -- configuration -------------------------------------------------------------------------------------


class DatasetSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One sample dataset and the timeframe choices the strategy runs it with (module docstring)."""

    key: str
    """Short name used on the command line (``es``, ``eurusd``, ``spx``, ``goog``)."""
    name: str
    """Name in the results."""
    bar_type: str
    """Base (finest) bars in the catalog."""
    tactical_bar_type: str | None
    """Bars the strategy decides on; None = the strategy's default (5-minute INTERNAL from the base)."""
    strategic_bar_type: str
    """Bars of the strategic agents; ``""`` = no strategic agents."""
    per_contract_fee: str | None
    """Commission per contract (e.g. ``"2.50 USD"``, as configs/sage_backtest.yaml); None = the
    instrument's own maker/taker fee (bps of notional)."""
    warmup_bars: int
    """Base bars before the first test window (and, in ``independent`` mode, before every window)."""
    bars_per_year: float
    """Annualisation of per-bar Sharpe (ES 252 x 23 h x 60; FX 252 x 24; daily 252)."""
    note: str = ""
    """What the reader must know about this dataset."""


DATASETS: dict[str, DatasetSpec] = {
    "es": DatasetSpec(
        key="es",
        name="ES 1-minute",
        bar_type="ESU3.XCME-1-MINUTE-LAST-EXTERNAL",
        tactical_bar_type=None,
        strategic_bar_type="",
        per_contract_fee="2.50 USD",
        warmup_bars=400,
        bars_per_year=252 * 23 * 60,
        note="1.5 days of data: 5-minute tactical decisions, strategic agents off (75 thirty-minute bars "
        "< 587 needed); every window is a few hours, read its numbers as anecdotes",
    ),
    "eurusd": DatasetSpec(
        key="eurusd",
        name="EUR/USD 1-hour",
        bar_type="EUR/USD.SIM-1-HOUR-MID-EXTERNAL",
        tactical_bar_type="EUR/USD.SIM-1-HOUR-MID-EXTERNAL",
        strategic_bar_type="EUR/USD.SIM-6-HOUR-MID-INTERNAL@1-HOUR-EXTERNAL",
        per_contract_fee=None,
        warmup_bars=100,
        bars_per_year=252 * 24,
        note="hourly tactical decisions, 6-hour strategic bars (ready after ~3,500 hours); a timeframe the "
        "agents never trained on",
    ),
    "spx": DatasetSpec(
        key="spx",
        name="SPX daily",
        bar_type="SPX.SIM-1-DAY-LAST-EXTERNAL",
        tactical_bar_type="SPX.SIM-1-DAY-LAST-EXTERNAL",
        strategic_bar_type="SPX.SIM-5-DAY-LAST-INTERNAL@1-DAY-EXTERNAL",
        per_contract_fee=None,
        warmup_bars=100,
        bars_per_year=252,
        note="daily tactical decisions, 5-day strategic bars (ready after ~8 years); a timeframe the agents "
        "never trained on",
    ),
    "goog": DatasetSpec(
        key="goog",
        name="GOOG daily",
        bar_type="GOOG.XNAS-1-DAY-LAST-EXTERNAL",
        tactical_bar_type="GOOG.XNAS-1-DAY-LAST-EXTERNAL",
        strategic_bar_type="",
        per_contract_fee=None,
        warmup_bars=100,
        bars_per_year=252,
        note="daily tactical decisions; strategic agents off (no coarser timeframe warms up in 2,148 days)",
    ),
}


class StrategyEvaluationConfig(msgspec.Struct, frozen=True, kw_only=True):
    """What ``sage evaluate strategy`` runs."""

    catalog: str | None = None
    """Catalog holding the sample bars (default ``catalogs/sample``)."""
    datasets: tuple[str, ...] = ("es", "eurusd", "spx", "goog")
    """Keys of :data:`DATASETS` to evaluate (default: all four)."""
    folds: int = 4
    """Consecutive test windows per dataset (default 4)."""
    mode: str = "continuous"
    """``continuous`` (one walk through the data, windows scored separately) or ``independent`` (a fresh
    engine per window after ``warmup_bars``); see the module docstring."""
    max_bars: int | None = None
    """Use only the first ``max_bars`` base bars of each dataset (default: all); for quick runs and tests."""
    warmup_bars: int | None = None
    """Override every dataset's warm-up (default: each dataset's own)."""
    starting_balance: float = 1_000_000.0
    """Starting equity of every run, in USD (default 1,000,000, as the shipped configs)."""
    agents: str = "default"
    """Agents checkpoint for the SageStrategy (default: the shipped ensemble)."""
    risk_model: str = "default"
    """M-RMS checkpoint for the SageStrategy (default: shipped), or ``"rules"``."""
    regime_model: str = "default"
    """Regime model of the RegimeActor (default: shipped)."""
    ema_fast: int = 10
    """Fast EMA period of the EMACross baseline (default 10, as configs/demo.yaml)."""
    ema_slow: int = 30
    """Slow EMA period of the EMACross baseline (default 30)."""
    ema_patient: bool = True
    """Run EMACross as :class:`PatientEMACross` (waits for its own fills; default) rather than the raw
    example, which stacks positions under the latency model (see the class docstring)."""
    template: str | None = None
    """Backtest config the runs are derived from (default ``configs/sage_backtest.yaml``)."""


# -- run configs ---------------------------------------------------------------------------------------


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def _template_path(config: StrategyEvaluationConfig) -> Path:
    return Path(config.template) if config.template else _repo_root() / "configs" / "sage_backtest.yaml"


def build_run_config(
    template: dict[str, Any],
    spec: DatasetSpec,
    strategy: str,
    *,
    catalog: Path,
    start_ns: int,
    end_ns: int,
    base_quantity: Decimal,
    sage_unit: Decimal,
    config: StrategyEvaluationConfig,
    run_id: str,
) -> Any:
    """The ``BacktestRunConfig`` of one strategy on ``spec``'s bars in ``[start_ns, end_ns]``.

    ``template`` is the raw mapping of ``configs/sage_backtest.yaml``; the instrument/bar-type overrides
    rewrite it for ``spec``, then the fee model, the time range and the strategy are set.
    """
    from nautilus_trader.config import BacktestRunConfig

    from sage.nodes.overrides import apply_overrides

    raw = apply_overrides(template, bar_type=spec.bar_type)
    instrument = instrument_of(spec.bar_type)
    for venue in raw["venues"]:
        venue["starting_balances"] = [f"{config.starting_balance:.2f} USD"]
        if spec.per_contract_fee is None:
            venue["fee_model"] = {
                "fee_model_path": "nautilus_trader.backtest.models:MakerTakerFeeModel",
                "config_path": "nautilus_trader.backtest.config:MakerTakerFeeModelConfig",
                "config": {},
            }
        else:
            venue["fee_model"]["config"] = {"commission": spec.per_contract_fee}
    for entry in raw["data"]:
        entry["catalog_path"] = str(Path(catalog).resolve())
        entry["start_time"] = int(start_ns)
        entry["end_time"] = int(end_ns)
    engine = raw["engine"]
    engine["trader_id"] = "EVAL-001"
    if strategy == "sage":
        for actor in engine.get("actors") or []:
            if actor.get("actor_path", "").endswith(":RegimeActor"):
                actor["config"]["model"] = config.regime_model
                # A wall-clock guard makes results depend on machine load; see the module docstring.
                actor["config"].setdefault("detector", {})["latency_budget_us"] = 1e12
        sage = engine["strategies"][0]["config"]
        sage.update(
            {
                "strategic_bar_type": spec.strategic_bar_type,
                "contract_size": str(sage_unit),
                "agents": config.agents,
                "risk_model": config.risk_model,
            }
        )
        if spec.tactical_bar_type is not None:
            sage["tactical_bar_type"] = spec.tactical_bar_type
    else:
        engine.pop("actors", None)
        if strategy == "buy_and_hold":
            engine["strategies"] = [
                {
                    "strategy_path": f"{__name__}:BuyAndHold",
                    "config_path": f"{__name__}:BuyAndHoldConfig",
                    "config": {
                        "order_id_tag": "BH",
                        "instrument_id": instrument,
                        "bar_type": spec.bar_type,
                        "trade_size": str(base_quantity),
                    },
                }
            ]
        elif strategy == "ema_cross_10_30":
            engine["strategies"] = [
                {
                    "strategy_path": f"{__name__}:PatientEMACross"
                    if config.ema_patient
                    else ("nautilus_trader.examples.strategies.ema_cross:EMACross"),
                    "config_path": "nautilus_trader.examples.strategies.ema_cross:EMACrossConfig",
                    "config": {
                        "order_id_tag": "EMA",
                        "instrument_id": instrument,
                        "bar_type": spec.bar_type,
                        "trade_size": str(base_quantity),
                        "fast_ema_period": config.ema_fast,
                        "slow_ema_period": config.ema_slow,
                        "subscribe_trade_ticks": False,
                        "request_bars": False,
                    },
                }
            ]
        else:
            raise StrategyEvaluationError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    raw["id"] = run_id
    raw["dispose_on_completion"] = False
    raw["raise_exception"] = True
    return BacktestRunConfig.parse(json.dumps(raw))


def _round_down(value: float, increment: float) -> Decimal:
    """``value`` rounded down to a multiple of ``increment`` (at least one increment), as a Decimal."""
    steps = max(1, math.floor(value / increment + 1e-9))
    inc = Decimal(str(increment))
    return (inc * steps).quantize(inc)


def sizing(
    first_close: float, multiplier: float, size_increment: float, equity: float
) -> tuple[Decimal, Decimal]:
    """(base quantity = 1x equity at ``first_close``, SAGE sizing unit = a fifth of it), both on the lot."""
    notional_per_unit = first_close * multiplier
    base = _round_down(equity / notional_per_unit, size_increment)
    unit = _round_down(float(base) / _MAX_UNITS, size_increment)
    return base, unit


# -- windows and scoring ---------------------------------------------------------------------------------


def window_bounds(n_bars: int, warmup: int, folds: int) -> list[tuple[int, int]]:
    """``folds`` consecutive ``[start, end)`` bar-index ranges covering ``warmup .. n_bars`` (time order)."""
    if folds < 1:
        raise StrategyEvaluationError(f"folds must be >= 1, got {folds}")
    if warmup < 1:
        raise StrategyEvaluationError(
            f"warmup_bars must be >= 1 (a window's first return needs a prior bar), got {warmup}"
        )
    if n_bars - warmup < 2 * folds:
        raise StrategyEvaluationError(
            f"{n_bars} bars leave {n_bars - warmup} after a {warmup}-bar warm-up: too few for {folds} windows"
        )
    edges = np.linspace(warmup, n_bars, folds + 1).round().astype(int)
    return [(int(edges[i]), int(edges[i + 1])) for i in range(folds)]


@dataclass
class RunSeries:
    """One finished run reduced to per-bar series on the base bars of its range."""

    ts: np.ndarray  # (n,) int64 bar close times
    equity: np.ndarray  # (n,) marked-to-market equity at each bar close (after that bar's fills)
    position: np.ndarray  # (n,) signed quantity held after each bar
    close: np.ndarray  # (n,)
    fills: pd.DataFrame  # fills_numeric frame
    multiplier: float
    decisions: pd.DataFrame = field(default_factory=pd.DataFrame)
    seconds: float = 0.0


def run_series(
    outcome: Any, bars: pd.DataFrame, instrument: str, multiplier: float, start_equity: float
) -> RunSeries:
    """Equity, position and fills of ``outcome`` on the run's base ``bars`` (module docstring: scoring)."""
    from sage.reports.stats import equity_curves, fills_numeric

    ts = bars.index.as_unit("ns").asi8
    fills = fills_numeric(outcome.fills)
    fills = fills[fills["instrument_id"] == instrument].reset_index(drop=True)
    curves = equity_curves(outcome.fills, outcome.account, {instrument: bars}, {instrument: multiplier})
    equity = np.full(len(ts), float(start_equity))
    if curves:
        curve = next(iter(curves.values())).equity
        grid = curve.index.as_unit("ns").asi8
        j = np.searchsorted(grid, ts, side="right") - 1
        equity = np.where(j >= 0, curve.to_numpy(dtype=float)[np.clip(j, 0, None)], float(start_equity))
    k = np.searchsorted(fills["ts"].to_numpy(dtype=np.int64), ts, side="right")
    position = np.concatenate(([0.0], np.cumsum(fills["signed_qty"].to_numpy(dtype=float))))[k]
    decisions = outcome.published.get("DecisionRecord", pd.DataFrame())
    return RunSeries(ts, equity, position, bars["close"].to_numpy(dtype=float), fills, multiplier, decisions)


def _entries(fills: pd.DataFrame, lo_ns: int, hi_ns: int) -> int:
    """Fills in ``(lo_ns, hi_ns]`` that open a position from flat or reverse it (one per trade)."""
    qty = fills["signed_qty"].to_numpy(dtype=float)
    after = np.cumsum(qty)
    before = after - qty
    opens = (np.abs(after) > 1e-12) & ((np.abs(before) <= 1e-12) | (np.sign(after) != np.sign(before)))
    # a sliced entry opens once: count a fill only when the position was flat or of the other sign
    ts = fills["ts"].to_numpy(dtype=np.int64)
    return int((opens & (ts > lo_ns) & (ts <= hi_ns)).sum())


def score_window(series: RunSeries, a: int, b: int, bars_per_year: float) -> dict[str, Any]:
    """Metrics of bars ``a .. b-1`` of ``series`` (``a >= 1``: the first return starts at bar ``a - 1``)."""
    eq = series.equity[a - 1 : b]
    returns = eq[1:] / eq[:-1] - 1.0
    lo, hi = int(series.ts[a - 1]), int(series.ts[b - 1])
    in_window = (series.fills["ts"] > lo) & (series.fills["ts"] <= hi)
    f = series.fills[in_window]
    notional = float(np.sum(np.abs(f["signed_qty"].to_numpy()) * f["price"].to_numpy()) * series.multiplier)
    mean_equity = float(np.mean(eq[1:]))
    exposure = np.abs(series.position[a:b] * series.close[a:b] * series.multiplier) / series.equity[a:b]
    return {
        "returns": returns,
        "start": pd.Timestamp(int(series.ts[a]), tz="UTC").isoformat(),
        "end": pd.Timestamp(hi, tz="UTC").isoformat(),
        "bars": int(b - a),
        "notional": notional,
        "mean_equity": mean_equity,
        "trades": _entries(series.fills, lo, hi),
        "fills": int(in_window.sum()),
        "exposure_sum": float(exposure.sum()),
        "ruined": bool((eq <= 0).any()),  # equity at or below zero: ratios beyond this are meaningless
        **_decision_counts(series.decisions, lo, hi),
    }


def _decision_counts(decisions: pd.DataFrame, lo: int, hi: int) -> dict[str, Any]:
    if decisions is None or len(decisions) == 0:
        return {}
    ts = decisions["ts_event"].to_numpy(dtype=np.int64)
    d = decisions[(ts > lo) & (ts <= hi)]
    actions = d["action"].astype(str).value_counts().to_dict()
    strategic = 0
    kill = False
    for text in d["details_json"]:
        details = json.loads(text)
        strategic += any(a.get("timeframe") not in (None, "5m") for a in details.get("agents") or [])
        kill = kill or bool((details.get("kill_switch") or {}).get("active"))
    return {
        "decisions": len(d),
        "actions": {k: int(v) for k, v in sorted(actions.items())},
        "strategic_decisions": int(strategic),
        "kill_switch": kill,
    }


def summarize(parts: Sequence[dict[str, Any]], bars_per_year: float) -> dict[str, Any]:
    """Sharpe/return/drawdown/turnover/trades of one window's parts or of all windows pooled."""
    from sage.training.metrics import max_drawdown

    returns = np.concatenate([p["returns"] for p in parts]) if parts else np.empty(0)
    n = returns.size
    sd = float(np.std(returns, ddof=1)) if n >= 2 else 0.0
    sharpe = float(np.mean(returns) / sd * math.sqrt(bars_per_year)) if sd > 0 else 0.0
    bars = sum(p["bars"] for p in parts)
    out: dict[str, Any] = {
        "sharpe": sharpe,
        "total_return": float(np.prod(1.0 + returns) - 1.0) if n else 0.0,
        "max_drawdown": max_drawdown(returns),
        "turnover": float(sum(p["notional"] / p["mean_equity"] for p in parts if p["mean_equity"] > 0)),
        "trades": int(sum(p["trades"] for p in parts)),
        "fills": int(sum(p["fills"] for p in parts)),
        "exposure": float(sum(p["exposure_sum"] for p in parts) / bars) if bars else 0.0,
        "bars": int(bars),
        "ruined": bool(any(p.get("ruined", False) for p in parts)),
        "start": parts[0]["start"] if parts else None,
        "end": parts[-1]["end"] if parts else None,
    }
    if parts and "decisions" in parts[0]:
        actions: dict[str, int] = {}
        for p in parts:
            for k, v in p.get("actions", {}).items():
                actions[k] = actions.get(k, 0) + v
        out["decisions"] = int(sum(p.get("decisions", 0) for p in parts))
        out["actions"] = dict(sorted(actions.items()))
        out["strategic_decisions"] = int(sum(p.get("strategic_decisions", 0) for p in parts))
        out["kill_switch"] = any(p.get("kill_switch", False) for p in parts)
    return out


# -- the evaluation --------------------------------------------------------------------------------------


@dataclass
class StrategyEvaluationReport:
    """Results per dataset (``windows`` and ``pooled`` per strategy), the markdown table, equity curves."""

    results: list[dict[str, Any]]
    markdown: str
    equity: pd.DataFrame  #: columns dataset, strategy, ts, equity (pooled, compounded over windows)
    seconds: float


def _instrument_spec(catalog: Path, instrument: str) -> tuple[float, float]:
    from nautilus_trader.persistence.catalog import ParquetDataCatalog

    found = ParquetDataCatalog(str(catalog)).instruments(instrument_ids=[instrument])
    if not found:
        raise StrategyEvaluationError(f"catalog {catalog} has no instrument {instrument}")
    return float(found[0].multiplier), float(found[0].size_increment)


def evaluate_dataset(
    spec: DatasetSpec,
    config: StrategyEvaluationConfig,
    *,
    catalog: Path,
    template: dict[str, Any],
    log: Callable[[str], None] = lambda _: None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Run SAGE and both baselines on ``spec`` and score them per window and pooled."""
    from sage.nodes.backtest import run_backtest
    from sage.training.regime import load_catalog_bars

    try:
        bars = load_catalog_bars(catalog, spec.bar_type)
    except ValueError as exc:
        raise StrategyEvaluationError(
            f"{spec.name}: {exc} (build the sample catalog: `sage catalog build`)"
        ) from None
    if config.max_bars is not None:
        bars = bars.iloc[: config.max_bars]
    warmup = config.warmup_bars if config.warmup_bars is not None else spec.warmup_bars
    windows = window_bounds(len(bars), warmup, config.folds)
    instrument = instrument_of(spec.bar_type)
    multiplier, increment = _instrument_spec(catalog, instrument)
    ts = bars.index.as_unit("ns").asi8

    if config.mode == "continuous":
        runs = [(0, len(bars), list(range(len(windows))))]
    elif config.mode == "independent":
        runs = [(max(0, a - warmup), b, [i]) for i, (a, b) in enumerate(windows)]
    else:
        raise StrategyEvaluationError(f"mode must be 'continuous' or 'independent', got {config.mode!r}")

    parts: dict[str, list[dict[str, Any] | None]] = {s: [None] * len(windows) for s in STRATEGIES}
    sizes: list[dict[str, str]] = []
    seconds: dict[str, float] = dict.fromkeys(STRATEGIES, 0.0)
    for r, (lo, hi, run_windows) in enumerate(runs):
        base, unit = sizing(float(bars["close"].iloc[lo]), multiplier, increment, config.starting_balance)
        sizes.append({"base_quantity": str(base), "sage_unit": str(unit)})
        run_bars = bars.iloc[lo:hi]
        for strategy in STRATEGIES:
            run_config = build_run_config(
                template, spec, strategy, catalog=catalog, start_ns=int(ts[lo]), end_ns=int(ts[hi - 1]),
                base_quantity=base, sage_unit=unit, config=config, run_id=f"{spec.key}-{strategy}-{r}",
            )  # fmt: skip
            started = time.perf_counter()
            outcome = run_backtest(run_config)
            elapsed = time.perf_counter() - started
            seconds[strategy] += elapsed
            series = run_series(outcome, run_bars, instrument, multiplier, config.starting_balance)
            log(
                f"  {spec.name} {strategy} run {r + 1}/{len(runs)}: {outcome.result.total_orders} orders, "
                f"{len(series.fills)} fills, {elapsed:.1f} s"
            )
            for w in run_windows:
                a, b = windows[w]
                parts[strategy][w] = score_window(series, a - lo, b - lo, spec.bars_per_year)

    rows: dict[str, Any] = {}
    curves = []
    for strategy in STRATEGIES:
        done = [p for p in parts[strategy] if p is not None]
        rows[strategy] = {
            "pooled": summarize(done, spec.bars_per_year),
            "windows": [summarize([p], spec.bars_per_year) for p in done],
        }
        returns = np.concatenate([p["returns"] for p in done])
        curves.append(
            pd.DataFrame(
                {
                    "dataset": spec.name,
                    "strategy": strategy,
                    "ts": pd.DatetimeIndex(
                        ts[windows[0][0] : windows[-1][1]].view("datetime64[ns]")
                    ).tz_localize("UTC"),
                    "equity": np.cumprod(1.0 + returns),
                }
            )
        )
    result = {
        "dataset": spec.name,
        "key": spec.key,
        "bar_type": spec.bar_type,
        "tactical_bar_type": spec.tactical_bar_type or "5-MINUTE INTERNAL (strategy default)",
        "strategic_bar_type": spec.strategic_bar_type or "(none)",
        "note": spec.note,
        "bars": len(bars),
        "warmup_bars": int(warmup),
        "windows": [{"start_bar": a, "end_bar": b} for a, b in windows],
        "sizing": sizes,
        "fees": spec.per_contract_fee or "instrument maker/taker fee",
        "bars_per_year": spec.bars_per_year,
        "seconds": seconds,
        "strategies": rows,
    }
    return result, pd.concat(curves, ignore_index=True)


def _fmt_row(label: str, window: str, m: dict[str, Any]) -> str:
    return (
        f"| {label} | {window} | {m['sharpe']:.2f} | {m['total_return']:+.2%} | {m['max_drawdown']:.2%} | "
        f"{m['turnover']:.1f} | {m['trades']} | {m['exposure']:.2f} |"
    )


_LABELS = {"sage": "SAGE", "buy_and_hold": "buy & hold", "ema_cross_10_30": "EMACross 10/30"}


def to_markdown(results: Sequence[dict[str, Any]], config: StrategyEvaluationConfig) -> str:
    """Pooled table, per-window table and the notes, as markdown."""
    lines = [
        "# SAGE strategy: walk-forward out-of-sample evaluation",
        "",
        (
            f"Real `BacktestNode` runs ({config.mode} mode, {config.folds} consecutive test windows per dataset), "
            "costs included (fees + seeded slippage in the fills, 1 ms latency: fills at a later bar). Sharpe "
            "from per-bar mark-to-market equity returns, annualised per dataset; turnover = traded notional / "
            "mean equity; trades = entries and reversals; exposure = mean |notional| / equity. Models were "
            "trained on synthetic data only: every bar here is out-of-sample."
        ),
        "",
        "## Pooled over all test windows",
        "",
        "| dataset | strategy | Sharpe | return | max DD | turnover | trades | exposure |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        for s in STRATEGIES:
            pooled = r["strategies"][s]["pooled"]
            lines.append(_fmt_row(f"{r['dataset']} ({pooled['bars']} bars)", _LABELS[s], pooled))
    lines += [
        "",
        "## Per window",
        "",
        "| dataset | strategy | window | Sharpe | return | max DD | turnover | trades | exposure |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        for s in STRATEGIES:
            for i, m in enumerate(r["strategies"][s]["windows"]):
                span = f"{i}: {m['start'][:10]}..{m['end'][:10]}"
                lines.append(
                    f"| {r['dataset']} | {_LABELS[s]} | {span} | {m['sharpe']:.2f} | {m['total_return']:+.2%} | "
                    f"{m['max_drawdown']:.2%} | {m['turnover']:.1f} | {m['trades']} | {m['exposure']:.2f} |"
                )
    lines += ["", "## Notes", ""]
    for r in results:
        sage = r["strategies"]["sage"]["pooled"]
        acts = ", ".join(f"{k} {v}" for k, v in sage.get("actions", {}).items())
        kill = "; the kill switch engaged" if sage.get("kill_switch") else ""
        lines.append(
            f"* **{r['dataset']}**: {r['note']}. Tactical `{r['tactical_bar_type']}`, strategic "
            f"`{r['strategic_bar_type']}`; {r['warmup_bars']} warm-up bars; sizing {r['sizing'][0]}; fees: "
            f"{r['fees']}. SAGE decisions {sage.get('decisions', 0)} ({acts}), "
            f"{sage.get('strategic_decisions', 0)} with strategic agents{kill}."
        )
    return "\n".join(lines) + "\n"


def run_strategy_evaluation(
    config: StrategyEvaluationConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> StrategyEvaluationReport:
    """Evaluate every configured dataset; write ``strategy_evaluation.md``/``.json`` and
    ``strategy_equity.parquet`` to ``out_dir`` (if given)."""
    from sage.data.sample import DEFAULT_CATALOG
    from sage.nodes.backtest import read_yaml_mapping

    config = config if config is not None else StrategyEvaluationConfig()
    unknown = [d for d in config.datasets if d not in DATASETS]
    if unknown:
        raise StrategyEvaluationError(f"unknown dataset(s) {unknown}; expected some of {sorted(DATASETS)}")
    catalog = Path(config.catalog) if config.catalog else DEFAULT_CATALOG
    if not catalog.exists():
        raise StrategyEvaluationError(
            f"catalog {catalog} not found (build the sample catalog: `sage catalog build`)"
        )
    template = read_yaml_mapping(_template_path(config), "a mapping with venues/data/engine")
    started = time.perf_counter()
    results, curves = [], []
    for key in config.datasets:
        spec = DATASETS[key]
        log(f"{spec.name}: {config.folds} windows, {config.mode} mode")
        result, curve = evaluate_dataset(spec, config, catalog=catalog, template=template, log=log)
        results.append(result)
        curves.append(curve)
    markdown = to_markdown(results, config)
    equity = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()
    seconds = time.perf_counter() - started
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "strategy_evaluation.md").write_text(markdown)
        payload = {"config": msgspec.to_builtins(config), "seconds": seconds, "results": results}
        (out / "strategy_evaluation.json").write_text(json.dumps(_clean(payload), indent=1) + "\n")
        equity.to_parquet(out / "strategy_equity.parquet", index=False)
    return StrategyEvaluationReport(results, markdown, equity, seconds)


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf -> null, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
