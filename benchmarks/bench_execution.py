"""Execution benchmark: realised TCA of every exec algorithm and of the selector, against the cost model.

Run from the repo root::

    python -m benchmarks.bench_execution            # ES trade ticks + synthetic market (~1-2 min)
    python -m benchmarks.bench_execution --reps 2   # fewer parents per size, faster

For each market - the real ES trade ticks of the sample catalog (US session of 2013-09-03) and a seeded
synthetic regime market replayed as trade ticks - the same schedule of parent orders is executed in a
real Nautilus ``BacktestEngine`` once per route: IMMEDIATE, TWAP, VWAP, STEALTH and ICEBERG with a fixed
10-minute horizon, and the :class:`~sage.execution.selector.AlgorithmSelector` (urgency 0.5, horizons 2,
5 or 10 minutes). Parents arrive every 15 minutes, alternate buy/sell, and their size is a multiple of
the trailing average volume per minute at arrival (``--sizes``, in minutes of volume), so the same
parent has the same size in every run and the comparison is paired.

Realised costs come from the simulated venue, so the venue model decides what "impact" means here:
trades are replayed with ``trade_execution=True`` (every trade moves the simulated market), market
orders fill against :class:`~sage.execution.impact.SquareRootBookFillModel` (a square-root-shaped book
scaled by the trailing per-minute volume and volatility, with transient memory and half a tick of
spread), and resting limit orders (ICEBERG clips) fill at their price whenever the tape trades at or
through it - front of the queue, which flatters passive execution. ``docs/execution_costs.md`` has the
numbers of a run and their reading.

Printed per market: the TCA table (realised implementation shortfall, slippage, cost vs the passive TWAP
benchmark, participation, duration, fill rate) next to the modelled cost, per route and size; then the
selector against the best and worst fixed algorithm, on the model and realised. The TCA tables are
written to ``benchmarks/results/execution/`` as Parquet (see ``sage.execution.tca``) plus a markdown
summary.

Finally the selector's own latency: ``AlgorithmSelector.select`` p50/p99 (µs) on seeded inputs, against
the DataFrame-based ``select`` it replaced (a labelled copy kept below as the baseline, timed in the same
run, interleaved call by call), with a check that both give identical selections.
``main`` returns the headline numbers (modelled/realised selector costs per market, latencies, ratios).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.config import LoggingConfig, StrategyConfig
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import TradeTick
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide
from nautilus_trader.model.identifiers import Venue
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.model.objects import Money
from nautilus_trader.persistence.catalog import ParquetDataCatalog
from nautilus_trader.trading.strategy import Strategy

from sage.data.instruments import es_future
from sage.data.sample import DEFAULT_CATALOG, ES_BAR_TYPE, build_sample_catalog
from sage.data.synthetic import SyntheticMarketConfig, generate_bars, generate_trades, synthetic_instrument
from sage.execution import (
    IcebergExecAlgorithm,
    ImmediateExecAlgorithm,
    StealthExecAlgorithm,
    TWAPExecAlgorithm,
    VolumeProfile,
    VWAPConfig,
    VWAPExecAlgorithm,
)
from sage.execution import selector as selector_module
from sage.execution.impact import (
    MarketStats,
    SquareRootBookFillModel,
    SquareRootImpact,
    market_stats_frame,
    stats_at,
)
from sage.execution.selector import AlgorithmSelector, Selection, SelectorConfig, build_order
from sage.execution.tca import market_frame, tca_from_backtest, tca_markdown, write_tca_parquet

RESULTS_DIR = Path(__file__).resolve().parent / "results" / "execution"

#: Fixed routes and their horizon (secs); the selector competes against these.
FIXED: tuple[tuple[str, float], ...] = (
    ("IMMEDIATE", 0.0),
    ("TWAP", 600.0),
    ("VWAP", 600.0),
    ("STEALTH", 600.0),
    ("ICEBERG", 600.0),
)
SELECTOR = "SELECTOR"
URGENCY = 0.5
SPACING_MIN = 15.0
#: The selector may pick horizons up to the fixed routes' 10 minutes (parents must not overlap).
SELECTOR_CONFIG = SelectorConfig(horizons_secs=(120.0, 300.0, 600.0))


@dataclass(frozen=True)
class Market:
    """One market to execute in: instrument, replayed ticks, causal per-bar statistics, VWAP profile."""

    name: str
    instrument: Instrument
    ticks: list[TradeTick]
    stats: pd.DataFrame
    profile: VolumeProfile
    start: pd.Timestamp
    end: pd.Timestamp
    note: str


@dataclass(frozen=True)
class PlannedParent:
    ts: int
    side: OrderSide
    size_min: float  # size in minutes of trailing volume


@dataclass
class Decision:
    """What the driver did for one parent: its size and the route's (modelled) selection."""

    ts: int
    size_min: float
    qty: float
    selection: Selection


# -- Markets ------------------------------------------------------------------------------------------------


def es_market() -> Market:
    """ES trade ticks over the US session of 2013-09-03; statistics from all 1-minute bars (causal)."""
    build_sample_catalog(DEFAULT_CATALOG)
    catalog = ParquetDataCatalog(str(DEFAULT_CATALOG))
    es = es_future()
    start, end = pd.Timestamp("2013-09-03 13:30", tz="UTC"), pd.Timestamp("2013-09-03 18:52", tz="UTC")
    bars = catalog.bars(bar_types=[ES_BAR_TYPE])
    stats = market_stats_frame(bars, tick_size=float(es.price_increment))
    history = [b for b in bars if b.ts_event <= start.value]  # the VWAP profile must not know the future
    ticks = catalog.trade_ticks(instrument_ids=[str(es.id)], start=start - pd.Timedelta(minutes=5), end=end)
    return Market(
        "ES",
        es,
        ticks,
        stats,
        VolumeProfile.from_bars(history),
        start,
        end,
        f"ESU3 trade ticks {start:%Y-%m-%d %H:%M}-{end:%H:%M} UTC ({len(ticks):,} trades)",
    )


def synthetic_market(seed: int = 7) -> Market:
    """Seeded regime market, 6 h of 1-minute bars replayed as 40 trades per bar; flat VWAP profile.

    Trades are replayed without their aggressor side, like the ES file: the simulated touch is then the
    last trade price and the fill model adds the half spread (with aggressors Nautilus keeps bid and ask
    at the last buyer/seller prints, which go stale in a trend).
    """
    config = SyntheticMarketConfig(seed=seed, n_bars=360, trades_per_bar=40, start="2024-01-02T13:30:00Z")
    bars = generate_bars(config)
    trades = generate_trades(config, bars)
    instrument = synthetic_instrument(config)
    ts = trades.index.asi8.astype(np.uint64)
    ticks = TradeTick.from_raw_arrays_to_list(
        instrument.id,
        instrument.price_precision,
        instrument.size_precision,
        trades["price"].to_numpy(),
        trades["size"].to_numpy(),
        np.zeros(len(trades), np.uint8),
        [str(i) for i in range(len(trades))],
        ts,
        ts,
    )
    stats = market_stats_frame(bars, tick_size=config.price_tick)
    start = bars.index[0] - pd.Timedelta(minutes=1)
    end = bars.index[-1]
    return Market(
        "synthetic",
        instrument,
        ticks,
        stats,
        VolumeProfile.flat(),
        start + pd.Timedelta(minutes=30),
        end,
        f"synthetic seed {seed}: {len(bars)} bars, {len(ticks):,} trades (30 min warm-up)",
    )


def plan_parents(market: Market, sizes: Sequence[float], reps: int) -> list[PlannedParent]:
    """Arrivals every 15 min from the window start (5 min in), sizes cycling, sides alternating."""
    plan = []
    t = market.start + pd.Timedelta(minutes=5)
    last = market.end - pd.Timedelta(minutes=12)
    i = 0
    while t <= last and i < len(sizes) * reps:
        side = OrderSide.BUY if i % 2 == 0 else OrderSide.SELL
        plan.append(PlannedParent(int(t.value), side, float(sizes[i % len(sizes)])))
        t += pd.Timedelta(minutes=SPACING_MIN)
        i += 1
    return plan


# -- Driver -------------------------------------------------------------------------------------------------


class ParentDriver(Strategy):
    """Submits the planned parents through one route; sizes and selections use causal statistics only."""

    def __init__(
        self,
        market: Market,
        plan: Sequence[PlannedParent],
        route: str,
        selector: AlgorithmSelector,
        horizon_secs: float,
    ) -> None:
        super().__init__(StrategyConfig(order_id_tag="001"))
        self.market, self.plan, self.route = market, list(plan), route
        self.selector, self.horizon_secs = selector, horizon_secs
        self.decisions: dict[str, Decision] = {}

    def on_start(self) -> None:
        for i, parent in enumerate(self.plan):
            self.clock.set_time_alert_ns(f"parent-{i}", parent.ts, self._submitter(parent))

    def _submitter(self, parent: PlannedParent):
        def submit(_event: Any) -> None:
            self.submit_parent(parent)

        return submit

    def submit_parent(self, parent: PlannedParent) -> None:
        inst = self.market.instrument
        stats = stats_at(self.market.stats, pd.Timestamp(self.clock.timestamp_ns(), tz="UTC"))
        last = self.cache.trade_tick(inst.id)
        if last is not None:  # price the passive limit off the newest trade, not the last bar close
            stats = msgspec.structs.replace(stats, price=last.price.as_double())
        qty = max(1.0, round(parent.size_min * stats.volume_per_min))
        kwargs = {
            "urgency": URGENCY,
            "tick_size": float(inst.price_increment),
            "volume_profile": self.market.profile,
        }
        if self.route == SELECTOR:
            sel = self.selector.select(parent.side, qty, stats, **kwargs)
        else:
            sel = self.selector.evaluate(self.route, self.horizon_secs, parent.side, qty, stats, **kwargs)
        order = build_order(self.order_factory, inst, parent.side, qty, sel)
        self.decisions[order.client_order_id.value] = Decision(parent.ts, parent.size_min, qty, sel)
        self.submit_order(order)


def run_route(
    market: Market, plan: Sequence[PlannedParent], route: str, horizon_secs: float, seed: int = 1
) -> tuple[pd.DataFrame, dict[str, Decision]]:
    """One backtest of ``plan`` through ``route``; returns its TCA table (with size/model columns)."""
    engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(bypass_logging=True)))
    engine.add_venue(
        Venue(market.instrument.id.venue.value),
        OmsType.NETTING,
        AccountType.MARGIN,
        [Money(10**10, USD)],
        base_currency=USD,
        trade_execution=True,
        fill_model=SquareRootBookFillModel(market.stats, seed=seed),
    )
    engine.add_instrument(market.instrument)
    engine.add_data(market.ticks)
    selector = AlgorithmSelector(SELECTOR_CONFIG)
    driver = ParentDriver(market, plan, route, selector, horizon_secs)
    engine.add_strategy(driver)
    vwap = VWAPExecAlgorithm(VWAPConfig())
    vwap.set_profile(market.instrument.id, market.profile)
    algorithms = [
        ImmediateExecAlgorithm(),
        TWAPExecAlgorithm(),
        vwap,
        StealthExecAlgorithm(),
        IcebergExecAlgorithm(),
    ]
    for algo in algorithms:
        engine.add_exec_algorithm(algo)
    try:
        engine.run()
        reports = {str(k): r for a in algorithms for k, r in a.reports.items()}
        table = tca_from_backtest(engine, market_frame(market.ticks), parent_reports=reports)
    finally:
        engine.dispose()
    d = driver.decisions
    table["route"] = route
    table["size_min"] = [d[p].size_min for p in table.parent_id]
    table["chosen"] = [d[p].selection.algorithm_id for p in table.parent_id]
    table["chosen_horizon"] = [d[p].selection.horizon_secs for p in table.parent_id]
    table["model_cost_bps"] = [d[p].selection.expected_cost_bps for p in table.parent_id]
    table["model_score_bps"] = [d[p].selection.score_bps for p in table.parent_id]
    table["status"] = [str(reports[p].status) if p in reports else "?" for p in table.parent_id]
    return table, d


# -- Reporting ----------------------------------------------------------------------------------------------


def summarise(all_runs: pd.DataFrame) -> pd.DataFrame:
    """Per route and size, means over the bucket's parents: realised costs (slippage and vs-TWAP over the
    parents with fills), the paired difference to IMMEDIATE and to TWAP (same parents: mean of per-parent
    shortfall differences) and the modelled cost/score. (``tca_summary`` weights by notional instead;
    here sizes within a bucket are close, and plain means keep the paired columns consistent.)"""
    by_parent = all_runs.pivot_table(index="arrival_ts", columns="route", values="shortfall_bps")
    rows = []
    for (route, size), g in all_runs.groupby(["route", "size_min"], sort=False):
        own = by_parent.loc[g.arrival_ts, route]
        rows.append(
            {
                "route": route,
                "size_min": size,
                "qty": g.quantity.mean(),
                "shortfall_bps": g.shortfall_bps.mean(),
                "slippage_bps": g.slippage_bps.mean(),
                "vs_twap_bps": g.vs_twap_bps.mean(),
                "participation": g.participation.mean(),
                "duration_s": g.duration_secs.mean(),
                "fill_rate": g.filled_qty.sum() / g.quantity.sum(),
                "minus_immediate_bps": float((own - by_parent.loc[g.arrival_ts, "IMMEDIATE"]).mean()),
                "minus_twap_bps": float((own - by_parent.loc[g.arrival_ts, "TWAP"]).mean()),
                "model_cost_bps": g.model_cost_bps.mean(),
                "model_score_bps": g.model_score_bps.mean(),
            }
        )
    return pd.DataFrame(rows)


def selector_vs_fixed(all_runs: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Per size: the selector's modelled score and realised shortfall vs the best/worst fixed route.

    Paired per parent (same arrival, same size): the modelled comparison is per parent (the count of
    parents where the selector scored worse than the worst fixed route is returned - 0 by construction);
    realised costs are averaged per size first (single executions are dominated by price noise).
    """
    fixed = all_runs[all_runs.route != SELECTOR]
    sel = all_runs[all_runs.route == SELECTOR].set_index("arrival_ts")
    worse = 0
    for ts, g in fixed.groupby("arrival_ts"):
        if sel.loc[ts, "model_score_bps"] > g.model_score_bps.max() + 1e-9:
            worse += 1
    rows = []
    for size, g in all_runs.groupby("size_min"):
        per_route = g.groupby("route").agg(
            model=("model_score_bps", "mean"), realised=("shortfall_bps", "mean")
        )
        f = per_route.drop(index=SELECTOR)
        s = per_route.loc[SELECTOR]
        chosen = all_runs[(all_runs.route == SELECTOR) & (all_runs.size_min == size)]
        picks = chosen.groupby(["chosen", "chosen_horizon"]).size()
        rows.append(
            {
                "size_min": size,
                "selector_picks": ", ".join(
                    f"{a}/{h / 60:g}m x{n}" if h else f"{a} x{n}" for (a, h), n in picks.items()
                ),
                "model_selector": s.model,
                "model_best_fixed": f.model.min(),
                "model_worst_fixed": f.model.max(),
                "realised_selector": s.realised,
                "realised_best_fixed": f.realised.min(),
                "best_fixed": f.realised.idxmin(),
                "realised_worst_fixed": f.realised.max(),
                "worst_fixed": f.realised.idxmax(),
            }
        )
    return pd.DataFrame(rows), worse


def run_market(market: Market, sizes: Sequence[float], reps: int, out: Path | None) -> dict[str, Any]:
    plan = plan_parents(market, sizes, reps)
    print(f"\n## {market.name}: {market.note}; {len(plan)} parents per route", flush=True)
    tables = []
    for route, horizon in (*FIXED, (SELECTOR, 0.0)):
        t0 = time.perf_counter()
        table, _ = run_route(market, plan, route, horizon)
        tables.append(table)
        print(f"  {route:<10} {len(table):>3} parents, {time.perf_counter() - t0:5.1f} s", flush=True)
    all_runs = pd.concat(tables, ignore_index=True)
    summary = summarise(all_runs)
    versus, worse = selector_vs_fixed(all_runs)
    print(
        "\nTCA per route and size (size in minutes of trailing volume; costs in bps of arrival, + = cost;"
        " minus_* = paired shortfall difference to IMMEDIATE / TWAP on the same parents):\n"
    )
    print(tca_markdown(summary.set_index(["route", "size_min"]), digits=2))
    print(
        "\nSelector vs fixed routes (model = mean score = cost + lambda(0.5) x risk; realised = mean shortfall):\n"
    )
    print(tca_markdown(versus.set_index("size_min"), digits=2))
    print(
        f"\nParents where the selector's modelled score exceeds the worst fixed route's: {worse} of {len(plan)}"
    )
    statuses = all_runs.groupby(["route", "status"]).size()
    print("Parent outcomes: " + "; ".join(f"{r} {s}: {n}" for (r, s), n in statuses.items()))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        base = all_runs.drop(
            columns=[
                "route",
                "size_min",
                "chosen",
                "chosen_horizon",
                "model_cost_bps",
                "model_score_bps",
                "status",
            ]
        )
        for route, g in all_runs.groupby("route"):
            write_tca_parquet(
                base.loc[g.index],
                out / f"tca_{market.name}_{route.lower()}.parquet",
                metadata={
                    "market": market.note,
                    "route": route,
                    "urgency": URGENCY,
                    "sizes_min": list(sizes),
                    "reps": reps,
                },
            )
        all_runs.to_parquet(out / f"runs_{market.name}.parquet")
        (out / f"summary_{market.name}.md").write_text(
            tca_markdown(summary.set_index(["route", "size_min"]))
            + "\n\n"
            + tca_markdown(versus.set_index("size_min"))
            + "\n"
        )
    return {"summary": summary, "versus": versus, "worse": worse, "runs": all_runs}


# -- Selector latency: the array path vs the DataFrame path it replaced -----------------------------------------
#
# BASELINE ONLY. ``_legacy_*`` below is a private copy of the pandas-based ``price_candidates`` /
# ``profile_weights`` / ``select`` of sage.execution.selector before its array rewrite (one DataFrame per
# algorithm + concat, ``iloc``, ``groupby().idxmin()``, ``itertuples()``, and one
# ``VolumeProfile.fraction_between`` call per minute). It reuses the module's private pricing helpers, whose
# arithmetic is unchanged (their Iceberg/VWAP sweep now asks the model for its impact only, a little cheaper
# than before, so the baseline is if anything slightly faster than the original). Never use it elsewhere.


def _legacy_profile_weights(profile: Any, start_ns: int, minutes: int) -> np.ndarray:
    return np.array(
        [
            profile.fraction_between(start_ns + m * 60_000_000_000, start_ns + (m + 1) * 60_000_000_000)
            for m in range(minutes)
        ]
    )


def _legacy_price_candidates(
    qty: float,
    stats: MarketStats,
    urgency: float,
    cfg: SelectorConfig,
    tick_size: float | None,
    volume_weights: np.ndarray | None,
) -> pd.DataFrame:
    m = selector_module
    model = SquareRootImpact(cfg.impact)
    beta = cfg.impact.exponent
    V, sig, s = stats.volume_per_min, stats.sigma_per_min, stats.half_spread_bps
    horizons = np.array(sorted(set(cfg.horizons_secs)), dtype=np.float64)
    h_min = horizons / 60.0
    if volume_weights is not None:
        volume_weights = np.asarray(volume_weights, dtype=np.float64)
    leak = 1.0 + cfg.predictability_penalty
    rows: list[tuple[str, np.ndarray, Any]] = []
    for algo in cfg.algorithms:
        if algo == m.IMMEDIATE:
            rows.append((algo, np.array([0.0]), model.cost(qty, V, sig, 0.0, s, urgency=urgency)))
        elif algo == m.TWAP:
            k = m._twap_factors(volume_weights, h_min, beta) * leak
            rows.append((algo, horizons, model.cost(qty, V, sig, h_min, s, impact_factor=k, urgency=urgency)))
        elif algo == m.STEALTH:
            k = m._twap_factors(volume_weights, h_min, beta) * m._stealth_factor(
                *cfg.stealth_slice_fraction, beta
            )
            rows.append((algo, horizons, model.cost(qty, V, sig, h_min, s, impact_factor=k, urgency=urgency)))
        elif algo == m.VWAP:
            rows.append((algo, horizons, m._vwap_cost(model, cfg, qty, V, sig, s, h_min, leak, urgency)))
        elif algo == m.ICEBERG and tick_size is not None:
            d = cfg.passive_offset_ticks * tick_size / stats.price * 1e4
            rows.append((algo, horizons, m._iceberg_cost(model, cfg, qty, V, sig, s, h_min, d, urgency)))
    frames = []
    for algo, hs, c in rows:
        n = hs.shape[0]
        frames.append(
            pd.DataFrame(
                {
                    "algorithm_id": [algo] * n,
                    "horizon_secs": hs,
                    "participation": np.broadcast_to(c.participation, (n,)),
                    "spread_bps": np.broadcast_to(c.spread_bps, (n,)),
                    "impact_bps": np.broadcast_to(c.impact_bps, (n,)),
                    "risk_bps": np.broadcast_to(c.risk_bps, (n,)),
                    "cost_bps": np.broadcast_to(c.cost_bps, (n,)),
                    "score_bps": np.broadcast_to(c.score_bps, (n,)),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)[list(m._CANDIDATE_COLUMNS)]


def _legacy_select(
    selector: AlgorithmSelector,
    side: OrderSide | str,
    qty: float,
    stats: MarketStats,
    urgency: float = 0.5,
    tick_size: float | None = None,
    volume_profile: Any = None,
    size_increment: float = 1.0,
) -> Selection:
    """BASELINE: the DataFrame-based ``AlgorithmSelector.select`` as it was before the array rewrite."""
    cfg = selector.config
    is_buy = selector_module._is_buy(side)
    weights = None
    if volume_profile is not None:
        minutes = int(np.ceil(max(cfg.horizons_secs) / 60.0 - 1e-9))
        weights = _legacy_profile_weights(volume_profile, stats.ts_ns, minutes)
    table = _legacy_price_candidates(qty, stats, urgency, cfg, tick_size, weights)
    scores = table["score_bps"].to_numpy()
    finite = np.where(np.isfinite(scores), scores, np.inf)
    if not np.isfinite(finite.min()):
        raise ValueError("no candidate has a finite score")
    best = int(np.flatnonzero(finite <= float(finite.min()) + 1e-9)[0])
    row = table.iloc[best]
    per_algo = table.loc[table.groupby("algorithm_id", sort=False)["score_bps"].idxmin()]
    algo = str(row["algorithm_id"])
    horizon = float(row["horizon_secs"])
    limit_price = None
    if algo == "ICEBERG":
        assert tick_size is not None
        offset = cfg.passive_offset_ticks * tick_size
        limit_price = stats.price - offset if is_buy else stats.price + offset
        limit_price = round(round(limit_price / tick_size) * tick_size, 10)
    return Selection(
        algorithm_id=algo,
        params=selector.params_for(algo, horizon, qty, stats, size_increment),
        horizon_secs=horizon,
        order_type="LIMIT" if algo == "ICEBERG" else "MARKET",
        limit_price=limit_price,
        expected_cost_bps=float(row["cost_bps"]),
        risk_bps=float(row["risk_bps"]),
        score_bps=float(row["score_bps"]),
        per_algorithm_costs={str(r.algorithm_id): float(r.score_bps) for r in per_algo.itertuples()},
        per_algorithm_horizons={str(r.algorithm_id): float(r.horizon_secs) for r in per_algo.itertuples()},
    )


#: (label, selector config, with a volume profile?): what SageStrategy calls (default config, no profile)
#: and what this benchmark's driver calls (three horizons, the VWAP profile).
SELECT_CASES: tuple[tuple[str, SelectorConfig, bool], ...] = (
    ("strategy", SelectorConfig(), False),
    ("bench_driver", SELECTOR_CONFIG, True),
)


def selector_latency(calls: int, seed: int = 0) -> dict[str, float]:
    """p50/p99 latency (µs) of ``select`` vs the legacy DataFrame path on the same seeded inputs.

    Inputs: ES-like statistics (price ~1640, 100-3000 contracts/min, 1-4 bps/min volatility, half a
    0.25 tick of spread), parents of 0.01-50 minutes of volume, urgency in [0.05, 0.95], buy/sell, arrival
    times spread over a day; the profile is a seeded 30-minute UTC profile. The two paths run alternately
    per input (same cache/CPU conditions); their selections must be identical.
    """
    rng = np.random.default_rng(seed)
    fractions = rng.gamma(2.0, 1.0, 48)
    profile = VolumeProfile(fractions=tuple(float(f) for f in fractions / fractions.sum()))
    day0 = pd.Timestamp("2024-01-02", tz="UTC").value
    inputs = []
    for _ in range(calls):
        vpm = float(rng.uniform(100.0, 3000.0))
        stats = MarketStats(
            price=float(rng.uniform(1500.0, 1800.0)),
            volume_per_min=vpm,
            sigma_per_min=float(rng.uniform(1e-4, 4e-4)),
            half_spread_bps=0.76,
            ts_ns=day0 + int(rng.integers(0, 86_400)) * 1_000_000_000,
        )
        qty = float(max(1.0, round(vpm * 10 ** rng.uniform(-2.0, np.log10(50.0)))))
        side = OrderSide.BUY if rng.random() < 0.5 else OrderSide.SELL
        inputs.append((side, qty, stats, float(rng.uniform(0.05, 0.95))))
    out: dict[str, float] = {}
    print("\n## Selector latency: AlgorithmSelector.select vs the legacy DataFrame path (baseline)\n")
    print(f"{calls} seeded parents per case, tick 0.25; µs per call\n")
    print("| case | new p50 | new p99 | legacy p50 | legacy p99 | speed-up p50 | speed-up p99 | identical |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for label, cfg, with_profile in SELECT_CASES:
        selector = AlgorithmSelector(cfg)
        prof = profile if with_profile else None
        new_ns, old_ns = [], []
        identical = True
        for side, qty, stats, urgency in inputs[:20]:  # warm-up (imports, caches)
            selector.select(side, qty, stats, urgency, 0.25, prof)
            _legacy_select(selector, side, qty, stats, urgency, 0.25, prof)
        for side, qty, stats, urgency in inputs:
            t0 = time.perf_counter_ns()
            a = selector.select(side, qty, stats, urgency, 0.25, prof)
            t1 = time.perf_counter_ns()
            b = _legacy_select(selector, side, qty, stats, urgency, 0.25, prof)
            t2 = time.perf_counter_ns()
            new_ns.append(t1 - t0)
            old_ns.append(t2 - t1)
            identical &= msgspec.to_builtins(a) == msgspec.to_builtins(b) and list(
                a.per_algorithm_costs.items()
            ) == list(b.per_algorithm_costs.items())
        n50, n99 = (float(x) / 1e3 for x in np.percentile(new_ns, [50, 99]))
        o50, o99 = (float(x) / 1e3 for x in np.percentile(old_ns, [50, 99]))
        print(
            f"| {label} | {n50:.0f} | {n99:.0f} | {o50:.0f} | {o99:.0f} | {o50 / n50:.1f}x | {o99 / n99:.1f}x"
            f" | {'yes' if identical else 'NO'} |"
        )
        out |= {
            f"select_{label}_p50_us": n50,
            f"select_{label}_p99_us": n99,
            f"select_{label}_legacy_p50_us": o50,
            f"select_{label}_legacy_p99_us": o99,
            f"select_{label}_speedup_p50": o50 / n50,
            f"select_{label}_speedup_p99": o99 / n99,
            f"select_{label}_identical": float(identical),
        }
    return out


def headline(market: str, result: dict[str, Any]) -> dict[str, float]:
    """Per market: the selector's mean modelled score and realised shortfall vs the fixed routes'."""
    runs = result["runs"]
    per_route = runs.groupby("route").agg(
        model=("model_score_bps", "mean"), realised=("shortfall_bps", "mean")
    )
    fixed = per_route.drop(index=SELECTOR)
    return {
        f"{market}_selector_model_score_bps": float(per_route.loc[SELECTOR, "model"]),
        f"{market}_best_fixed_model_score_bps": float(fixed.model.min()),
        f"{market}_selector_shortfall_bps": float(per_route.loc[SELECTOR, "realised"]),
        f"{market}_best_fixed_shortfall_bps": float(fixed.realised.min()),
        f"{market}_worst_fixed_shortfall_bps": float(fixed.realised.max()),
        f"{market}_parents_selector_worse_than_worst_fixed": float(result["worse"]),
        f"{market}_parents": float(runs[runs.route == SELECTOR].shape[0]),
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes",
        type=float,
        nargs="+",
        default=[0.05, 0.25, 1.0, 5.0, 20.0],
        help="parent sizes in minutes of trailing volume (default 0.05 0.25 1 5 20)",
    )
    parser.add_argument("--reps", type=int, default=4, help="parents per size and market (default 4)")
    parser.add_argument("--markets", nargs="+", default=["es", "synthetic"], choices=["es", "synthetic"])
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR, help=f"output directory (default {RESULTS_DIR})"
    )
    parser.add_argument(
        "--select-calls",
        type=int,
        default=500,
        help="seeded parents timed per case in the selector latency table (default 500; 0 skips it)",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results: dict[str, float] = {}
    for name in args.markets:
        market = es_market() if name == "es" else synthetic_market()
        results |= headline(market.name, run_market(market, args.sizes, args.reps, args.out))
    if args.select_calls > 0:
        results |= selector_latency(args.select_calls)
    results["total_secs"] = time.perf_counter() - started
    print(f"\n(total {results['total_secs']:.0f} s; TCA tables in {args.out})")
    return results


if __name__ == "__main__":
    main()
