"""Out-of-sample evaluation of the trained agents -- ``sage evaluate agents``.

For every dataset the agents never trained on, the ensemble is run bar by bar through the very
inference path a strategy uses (``AgentEnsemble.act_tactical`` / ``act_strategic``, greedy directions),
its joint position is the environment's mapping (mean direction / 2), and the account vector is kept
up to date as the env does. Positions are scored with ``sage.training.metrics.performance`` (costs on
turnover) next to the causal baselines -- buy-and-hold, EMA(10/30) cross, flat and seeded random --
on exactly the same bars. Walk-forward: the evaluated span is cut into consecutive folds (time order,
nothing reused), each reported on its own and in total.

Datasets (whatever they show is reported):

* **synthetic, held-out seeds** -- the trending market the default agents train on, and the default
  (weaker-trend) market, with seeds used by no training run;
* **ES 1-minute** (sample catalog, 3 days): only ~450 5-minute bars and 75 30-minute bars -- far less
  than the strategic matrix's warm-up (539 + 48 thirty-minute bars) -- so only the three *tactical*
  agents can run there; their position is the tactical agents' mean direction / 2;
* **EUR/USD hourly** (sample catalog): a timeframe transfer -- hourly bars feed the tactical agents and
  6-hour aggregates the strategic ones (the same 1:6 ratio as 5m:30m); features are scale-free, but
  the agents never saw hourly dynamics, so this is a robustness check, not their home ground.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd

from sage.agents.observation import (
    ACTION_DIRECTIONS,
    STRATEGIC_SHAPE,
    TACTICAL_SHAPE,
    account_features,
    align_strategic,
)


class EvaluationConfig(msgspec.Struct, frozen=True, kw_only=True):
    """What ``sage evaluate agents`` runs."""

    model: str = "default"
    """Agents checkpoint (default: the shipped ``agents-default``)."""
    catalog: str | None = None
    """Sample catalog with the ES and EUR/USD bars (default ``catalogs/sample``; skipped if missing)."""
    synthetic_seeds: tuple[int, ...] = (2024,)
    """Held-out synthetic market seeds (default 2024; training uses 7, pretraining 11)."""
    synthetic_bars: int = 60_000
    """1-minute bars per synthetic market (default 60,000)."""
    folds: int = 3
    """Walk-forward folds per dataset (default 3)."""
    cost_bps: float = 1.5
    """Cost per unit of turnover in basis points (default 1.5 = the env's 1.0 cost + 0.5 slippage)."""
    random_seed: int = 0
    """Seed of the random baseline (default 0)."""


@dataclass
class Series:
    """Bars prepared for one evaluation: the tactical timeframe's closes/ATR and both matrices' rows."""

    name: str
    close: np.ndarray  # (T,) tactical-timeframe closes
    atr: np.ndarray  # (T,)
    tactical_rows: np.ndarray  # (T, 7)
    strategic_rows: np.ndarray | None  # (S, 13) or None (tactical agents only)
    strategic_index: np.ndarray | None  # (T,)
    periods_per_year: float
    note: str = ""


def prepare_series(
    bars: pd.DataFrame, name: str, *, tactical_minutes: int | None, strategic_minutes: int,
    periods_per_year: float, note: str = "",
) -> Series:  # fmt: skip
    """Aggregate ``bars`` (``tactical_minutes`` None = use them as they are) and compute the matrices."""
    from sage.features import compute, strategic_rows, tactical_rows
    from sage.training.env import aggregate_bars

    tac_bars = bars[["open", "high", "low", "close", "volume"]] if tactical_minutes is None else aggregate_bars(bars, tactical_minutes)
    strat_bars = aggregate_bars(bars, strategic_minutes)
    tac = tactical_rows(tac_bars).to_numpy().astype(np.float32)
    strat = strategic_rows(strat_bars).to_numpy().astype(np.float32) if len(strat_bars) else np.empty((0, 13), np.float32)
    atr = compute(tac_bars)["atr"].to_numpy()
    s_index = align_strategic(tac_bars.index.as_unit("ns").asi8, strat_bars.index.as_unit("ns").asi8)
    has_strategic = _strategic_ready(strat, s_index).any()
    return Series(
        name, tac_bars["close"].to_numpy(dtype=np.float64), atr, tac,
        strat if has_strategic else None, s_index if has_strategic else None, periods_per_year, note,
    )  # fmt: skip


def _window_ok(rows: np.ndarray, length: int) -> np.ndarray:
    """``ok[t]``: the window of ``length`` rows ending at ``t`` exists and is finite."""
    bad = np.r_[0, np.cumsum(~np.isfinite(rows).all(axis=1))]
    t = np.arange(rows.shape[0])
    return (t >= length - 1) & (bad[t + 1] - bad[np.maximum(t + 1 - length, 0)] == 0)


def _strategic_ready(strat: np.ndarray, s_index: np.ndarray) -> np.ndarray:
    if strat.shape[0] == 0:
        return np.zeros(s_index.shape[0], dtype=bool)
    ok = _window_ok(strat, STRATEGIC_SHAPE[0])
    return (s_index >= 0) & ok[np.maximum(s_index, 0)]


def evaluable(series: Series) -> np.ndarray:
    """Bars where every agent that runs on this series has a complete observation (and ATR)."""
    ok = _window_ok(series.tactical_rows, TACTICAL_SHAPE[0]) & np.isfinite(series.atr) & (series.atr > 0)
    if series.strategic_rows is not None:
        ok &= _strategic_ready(series.strategic_rows, series.strategic_index)
    return ok


def agent_positions(ensemble: Any, series: Series, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy joint positions for bars ``start .. end - 1`` and every agent's directions ``(n, N)``.

    Each bar: account vector from the running book (position, entry, drawdown, holding time), strategic
    agents (if the series has them) then tactical agents on their matrices, position = mean direction / 2
    clipped to [-1, 1] (the env's mapping with equal weights), held from this close to the next.
    """
    n = end - start
    positions = np.zeros(n)
    directions = np.zeros((n, len(ensemble.agents)), dtype=np.int64)
    index = {a: i for i, a in enumerate(ensemble.agents)}
    pos, entry, equity, peak, held = 0.0, 0.0, 1.0, 1.0, 0
    lt, ls = TACTICAL_SHAPE[0], STRATEGIC_SHAPE[0]
    ensemble.reset()
    for k, t in enumerate(range(start, end)):
        c = series.close[t]
        if k > 0:  # mark the book to this close
            equity *= 1.0 + pos * (c / series.close[t - 1] - 1.0)
            peak = max(peak, equity)
        account = account_features(pos, entry, c, series.atr[t], (peak - equity) / peak, held)
        outs = []
        if series.strategic_rows is not None:
            s = int(series.strategic_index[t])
            outs += ensemble.act_strategic(series.strategic_rows[s - ls + 1 : s + 1], account)
        outs += ensemble.act_tactical(series.tactical_rows[t - lt + 1 : t + 1], account)
        for o in outs:
            directions[k, index[o.agent]] = o.direction
        new = float(np.clip(np.mean([o.direction for o in outs]) / 2.0, -1.0, 1.0))
        if new == 0.0:
            entry, held = 0.0, 0
        elif pos == 0.0 or np.sign(new) != np.sign(pos):
            entry, held = c, 0
        else:
            if abs(new) > abs(pos):  # adding: average entry
                entry = (entry * abs(pos) + c * (abs(new) - abs(pos))) / abs(new)
            held += 1
        pos = new
        positions[k] = pos
    return positions, directions


def _row(name: str, m: Any) -> dict[str, Any]:
    return {
        "strategy": name, "sharpe": m.sharpe, "total_return": m.total_return, "max_drawdown": m.max_drawdown,
        "turnover": m.turnover, "n_trades": m.n_trades, "exposure": m.exposure, "n_periods": m.n_periods,
    }  # fmt: skip


def evaluate_series(ensemble: Any, series: Series, config: EvaluationConfig) -> dict[str, Any]:
    """Agents vs baselines on one series: whole evaluable span and each walk-forward fold."""
    from sage.training import metrics as M

    ok = np.flatnonzero(evaluable(series))
    if ok.size < 10:
        return {"dataset": series.name, "skipped": "fewer than 10 bars with a complete observation", "note": series.note}
    start, end = int(ok[0]), int(ok[-1]) + 1  # contiguous span after warm-up
    pos, dirs = agent_positions(ensemble, series, start, end)
    close = series.close[start:end]
    returns = M.forward_returns(close)
    ppy = series.periods_per_year
    strategies = {
        "agents": pos,
        "buy_and_hold": M.buy_and_hold_positions(close.size),
        "ema_cross_10_30": M.ema_cross_positions(close, 10, 30),
        "flat": M.flat_positions(close.size),
        "random": M.random_positions(close.size, seed=config.random_seed),
    }
    total = [_row(k, M.performance(v[:-1], returns, config.cost_bps, ppy)) for k, v in strategies.items()]
    folds = []
    edges = np.linspace(0, close.size - 1, config.folds + 1).astype(int)
    for f in range(config.folds):
        a, b = int(edges[f]), int(edges[f + 1])
        if b - a < 2:
            continue
        folds.append({
            "fold": f, "start_bar": start + a, "end_bar": start + b,
            "rows": [_row(k, M.performance(v[a:b], returns[a:b], config.cost_bps, ppy)) for k, v in strategies.items()],
        })  # fmt: skip
    share = {
        a: {str(d): float(np.mean(dirs[:, i] == d)) for d in ACTION_DIRECTIONS}
        for i, a in enumerate(ensemble.agents)
        if series.strategic_rows is not None or a in ensemble.config.tactical_agents
    }
    return {
        "dataset": series.name, "note": series.note, "bars": int(close.size), "periods_per_year": ppy,
        "agents_running": list(share), "total": total, "folds": folds, "direction_share": share,
    }  # fmt: skip


@dataclass
class EvaluationReport:
    results: list[dict[str, Any]]
    markdown: str


def to_markdown(results: list[dict[str, Any]], config: EvaluationConfig, model_version: str) -> str:
    """The results as a markdown table (whole span per dataset) plus per-fold agent Sharpe."""
    lines = [
        f"# Agents out-of-sample evaluation ({model_version})",
        "",
        (
            f"Costs {config.cost_bps:g} bp per unit of turnover; Sharpe annualised; positions held close to "
            f"close; {config.folds} walk-forward folds."
        ),
        "",
        "| dataset | strategy | Sharpe | return | max DD | turnover | trades | exposure |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['dataset']} | (skipped: {r['skipped']}) | | | | | | |")
            continue
        for row in r["total"]:
            lines.append(
                f"| {r['dataset']} ({r['bars']} bars) | {row['strategy']} | {row['sharpe']:.2f} | "
                f"{row['total_return']:+.2%} | {row['max_drawdown']:.2%} | {row['turnover']:.1f} | "
                f"{row['n_trades']} | {row['exposure']:.2f} |"
            )
    lines += ["", "Walk-forward folds (Sharpe: agents / buy-and-hold / EMA cross):", ""]
    for r in results:
        if "skipped" in r:
            continue
        parts = []
        for f in r["folds"]:
            s = {row["strategy"]: row["sharpe"] for row in f["rows"]}
            parts.append(f"fold {f['fold']}: {s['agents']:.2f} / {s['buy_and_hold']:.2f} / {s['ema_cross_10_30']:.2f}")
        lines.append(f"* {r['dataset']}: " + "; ".join(parts) + (f" -- {r['note']}" if r["note"] else ""))
    return "\n".join(lines) + "\n"


def build_datasets(config: EvaluationConfig, log: Callable[[str], None] = lambda _: None) -> list[Series]:
    """The held-out synthetic markets and (if the catalog exists) ES 1-minute and EUR/USD hourly."""
    from sage.data.sample import DEFAULT_CATALOG, ES_BAR_TYPE, EURUSD_BAR_TYPE
    from sage.data.synthetic import SyntheticMarketConfig, generate_bars
    from sage.training.agents import trending_market

    out = []
    for seed in config.synthetic_seeds:
        for label, market in (
            ("trending", trending_market(seed, config.synthetic_bars)),
            ("default", SyntheticMarketConfig(seed=seed, n_bars=config.synthetic_bars)),
        ):
            log(f"synthetic {label} market, held-out seed {seed}")
            out.append(prepare_series(
                generate_bars(market), f"synthetic {label} seed {seed}", tactical_minutes=5, strategic_minutes=30,
                periods_per_year=365 * 288,
            ))  # fmt: skip
    catalog = Path(config.catalog) if config.catalog else DEFAULT_CATALOG
    if catalog.exists():
        from sage.training.regime import load_catalog_bars

        log(f"ES 1-minute from {catalog}")
        out.append(prepare_series(
            load_catalog_bars(catalog, ES_BAR_TYPE), "ES 1-min -> 5m", tactical_minutes=5, strategic_minutes=30,
            periods_per_year=252 * 23 * 12,
            note="3 days: strategic matrix never warms up, tactical agents only",
        ))  # fmt: skip
        log(f"EUR/USD hourly from {catalog}")
        out.append(prepare_series(
            load_catalog_bars(catalog, EURUSD_BAR_TYPE), "EUR/USD 1-hour", tactical_minutes=None,
            strategic_minutes=360, periods_per_year=252 * 24,
            note="timeframe transfer: hourly bars as tactical, 6-hour as strategic",
        ))  # fmt: skip
    else:
        log(f"catalog {catalog} not found: real-data evaluation skipped (build it with `sage catalog build`)")
    return out


def run_evaluation(
    config: EvaluationConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    ensemble: Any = None,
    datasets: list[Series] | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> EvaluationReport:
    """Evaluate, write ``agents_evaluation.md`` / ``.json`` to ``out_dir`` (if given), return the report."""
    from sage.agents.ensemble import AgentEnsemble

    config = config if config is not None else EvaluationConfig()
    ensemble = ensemble if ensemble is not None else AgentEnsemble.load(config.model)
    datasets = datasets if datasets is not None else build_datasets(config, log)
    results = []
    for series in datasets:
        log(f"evaluating on {series.name}")
        results.append(evaluate_series(ensemble, series, config))
    markdown = to_markdown(results, config, ensemble.model_version)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "agents_evaluation.md").write_text(markdown)
        payload = {"model": ensemble.model_version, "config": msgspec.to_builtins(config), "results": results}
        (out / "agents_evaluation.json").write_text(json.dumps(payload, indent=1, default=_json_default) + "\n")
    return EvaluationReport(results, markdown)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
