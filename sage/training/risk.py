"""Train and evaluate M-RMS -- ``sage train risk`` and ``sage evaluate risk``.

Recipe (one frozen :class:`RiskTrainConfig`; defaults = the shipped ``mrms-default`` weights):

* **Data.** Seeded synthetic markets (``sage.data.synthetic``, default parameters, ES-like contract: tick
  0.25, point value 50), aggregated to 5-minute bars; candidate trades from the rule proxies of
  ``sage.risk.simulate``; for every candidate the outcome of *every* bracket on the grid (6 stops x 5
  reward:risk) from the following bars -- labels only, never inputs. Each candidate is paired with
  ``accounts_per_candidate`` random account states (equity spanning 0.03 %..3 % risk per unit at one ATR).
* **Objective** (a contextual bandit with full-information feedback, so no policy-gradient variance):
  the three sub-agents' distributions ``pi_k`` (units), ``pi_s`` (stop), ``pi_r`` (reward:risk) maximise
  the exact expected utility ``sum_{k,s,r} pi_k pi_s pi_r U(k, s, r)`` plus ``entropy`` x their entropies,
  with ``U = log(1 + lam g) / lam`` of the account return ``g = k (s rho R[s, r] - cost)`` (``rho`` = equity
  fraction one unit risks per ATR, ``R`` = outcome in R multiples, ``cost`` = commission per unit / equity).
  ``lam = risk_aversion`` makes it a *fractional Kelly* objective: its optimum bets ``1/lam`` of the Kelly
  fraction. The entropy term keeps the distributions honest (a soft-max of expected utility), which is
  what the ensemble's confidence reads.
* **Determinism.** ``torch.manual_seed``, ``numpy.random.Generator(PCG64(seed))`` for account draws and a
  seeded ``torch.Generator`` for minibatches, ``torch.use_deterministic_algorithms(True)``, one thread:
  the same config gives bitwise-identical weights (tested), so ``sage train risk --out
  sage/assets/models/mrms-default`` reproduces the shipped file.

Evaluation (:func:`walk_forward`, ``sage evaluate risk``): expanding-window walk-forward on a long synthetic
market never used in training -- each fold retrains on everything before it (purged by the outcome
horizon) and trades the next block sequentially (one position at a time, costs included) with M-RMS,
the rule fallback and a fixed-size baseline; plus the shipped model on a held-out synthetic seed and the
real ES and EUR/USD sample bars.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import torch

from sage.data.sample import REPO_ROOT
from sage.models.mrms import DEFAULT_MRMS, MRMSConfig, MRMSNet, save_mrms
from sage.risk.context import INPUT_NAMES, RAW_TRADE, AccountContext, TradeContext, risk_input_matrix
from sage.risk.simulate import (
    SimulationConfig,
    account_raw,
    find_candidates,
    grid_outcomes,
    regime_probabilities,
    resample,
    run_bracket,
)

DEFAULT_OUT = REPO_ROOT / "runs" / "mrms-default"
SHIPPED_COMMAND = "sage train risk --out sage/assets/models/mrms-default"


class RiskTrainConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Everything that determines an M-RMS training run; equal configs give bitwise-equal weights."""

    seed: int = 0
    """Seed of initialisation, account draws and minibatches (default 0)."""
    train_seeds: tuple[int, ...] = (101, 102, 103)
    """Synthetic markets trained on (default 101-103)."""
    bars_per_seed: int = 300_000
    """1-minute bars per training market (default 300,000 = 60,000 five-minute bars, ~5,000 candidates)."""
    val_seed: int = 201
    """Validation market for the manifest metrics (default 201)."""
    val_bars: int = 200_000
    """1-minute bars of the validation market (default 200,000)."""
    tick_size: float = 0.25
    """Tick of the synthetic contract (default 0.25, ES-like)."""
    point_value: float = 50.0
    """Point value of the synthetic contract (default 50, ES-like)."""
    simulation: SimulationConfig = SimulationConfig()
    """Candidate and bracket simulation (see ``sage.risk.simulate``)."""
    architecture: MRMSConfig = DEFAULT_MRMS
    """Sub-agent sizes and grids (default 40 -> 32 -> 32 -> bins)."""
    accounts_per_candidate: int = 4
    """Random account states per candidate (default 4)."""
    steps: int = 1500
    """Adam steps (default 1500)."""
    batch: int = 2048
    """Samples per step (default 2048)."""
    lr: float = 3e-3
    """Adam learning rate, cosine-decayed to 10 % (default 3e-3)."""
    weight_decay: float = 1e-4
    """AdamW weight decay (default 1e-4)."""
    risk_aversion: float = 4.0
    """``lam`` of the utility: the optimum bets 1/lam of the Kelly fraction (default 4 = quarter Kelly)."""
    entropy: float = 0.02
    """Entropy bonus per sub-agent (default 0.02, in units of the normalised utility)."""
    name: str = "mrms-default"
    """Model name in the manifest."""
    version: str = "1.0.0"
    """Model version in the manifest."""

    def __post_init__(self) -> None:
        if not self.train_seeds or self.val_seed in self.train_seeds:
            raise ValueError("need >= 1 training seed, and val_seed must not be one of them")
        if self.steps < 1 or self.batch < 1 or self.accounts_per_candidate < 1:
            raise ValueError("steps, batch and accounts_per_candidate must be >= 1")
        if not self.risk_aversion > 0:
            raise ValueError("risk_aversion must be > 0")


# -- data ---------------------------------------------------------------------------------------------


@dataclass
class SeriesData:
    """One bar series with its features, regimes and candidates."""

    name: str
    bars: pd.DataFrame
    raw_trade: np.ndarray
    index: np.ndarray
    side: np.ndarray
    outcomes: np.ndarray | None  # (n, S, R) or None when not needed
    tick_size: float
    point_value: float
    contract_size: float
    commission: float


def series_from_bars(
    name: str,
    bars: pd.DataFrame,
    *,
    tick_size: float,
    point_value: float,
    contract_size: float = 1.0,
    sim: SimulationConfig,
    grid: MRMSConfig | None,
    rng: np.random.Generator | None = None,
    minutes: int | None = None,
) -> SeriesData:
    """Resample (1-minute input), compute features and regimes, find candidates, play the grid."""
    from sage.features import compute

    bars = resample(bars, sim.bar_minutes if minutes is None else minutes)
    features = compute(bars)
    probs = regime_probabilities(features)
    cand = find_candidates(
        bars, features, probs, tick_size=tick_size, point_value=point_value, contract_size=contract_size,
        config=sim, rng=rng,
    )  # fmt: skip
    outcomes = None
    if grid is not None:
        outcomes = grid_outcomes(bars, cand, grid.stop_grid, grid.rr_grid, tick_size=tick_size, config=sim)
    return SeriesData(name, bars, cand.raw_trade, cand.index, cand.side, outcomes, tick_size, point_value,
                      contract_size, sim.commission)  # fmt: skip


def synthetic_series(seed: int, n_bars: int, cfg: RiskTrainConfig, rng: np.random.Generator | None) -> SeriesData:
    from sage.data.synthetic import SyntheticMarketConfig, generate_bars

    bars = generate_bars(SyntheticMarketConfig(seed=seed, n_bars=n_bars, price_tick=cfg.tick_size))
    return series_from_bars(
        f"synthetic-{seed}", bars, tick_size=cfg.tick_size, point_value=cfg.point_value,
        sim=cfg.simulation, grid=cfg.architecture, rng=rng,
    )  # fmt: skip


@dataclass
class TrainingSet:
    x: np.ndarray  # (n, 40) float32
    outcomes: np.ndarray  # (n, S, R) float32, R multiples
    unit_risk: np.ndarray  # (n,) equity fraction one unit risks at one ATR
    cost: np.ndarray  # (n,) commission per sizing unit round trip / equity


def training_set(series: list[SeriesData], mask: list[np.ndarray] | None, cfg: RiskTrainConfig, rng) -> TrainingSet:
    """Pair candidates with random accounts and build the model inputs and utility ingredients."""
    xs, outs, risks, costs = [], [], [], []
    for k, s in enumerate(series):
        sel = np.ones(s.index.size, bool) if mask is None else mask[k]
        raw_t = np.repeat(s.raw_trade[sel], cfg.accounts_per_candidate, axis=0)
        out = np.repeat(s.outcomes[sel], cfg.accounts_per_candidate, axis=0)
        money_per_atr = raw_t[:, 5] * raw_t[:, 4] * raw_t[:, 2]
        acct = account_raw(raw_t.shape[0], money_per_atr, rng)
        xs.append(risk_input_matrix(np.concatenate([raw_t, acct], axis=1)))
        outs.append(out)
        risks.append(money_per_atr / acct[:, 0])
        costs.append(np.full(raw_t.shape[0], 2.0 * s.commission) / acct[:, 0])  # per sizing unit, entry + exit
    return TrainingSet(
        np.concatenate(xs), np.concatenate(outs).astype(np.float32),
        np.concatenate(risks).astype(np.float32), np.concatenate(costs).astype(np.float32),
    )  # fmt: skip


# -- training -----------------------------------------------------------------------------------------


def _utility(batch_out, unit_risk, cost, stop_grid, n_sizes, lam):
    """U[b, k, s, r] = log(1 + lam g) / lam / unit_risk, g = k (s rho R - cost): utility in ATR-risk units."""
    k = torch.arange(n_sizes, dtype=torch.float32).view(1, -1, 1, 1)
    per_unit = stop_grid.view(1, 1, -1, 1) * unit_risk.view(-1, 1, 1, 1) * batch_out.unsqueeze(1) - cost.view(-1, 1, 1, 1)
    g = (k * per_unit).clamp_min(-0.95 / lam)
    return torch.log1p(lam * g) / lam / unit_risk.view(-1, 1, 1, 1)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log(p.clamp_min(1e-12))).sum(-1)


def expected_utility(net: MRMSNet, data: TrainingSet, cfg: RiskTrainConfig, *, temperature_free: bool = False):
    """Mean expected utility of the policy on ``data`` (and, for reference, of the grid-best fixed action)."""
    with torch.no_grad():
        x = torch.from_numpy(data.x)
        logits = net(x)
        ps, pst, pr = (torch.softmax(t, -1) for t in logits)
        u = _utility(torch.from_numpy(data.outcomes), torch.from_numpy(data.unit_risk), torch.from_numpy(data.cost),
                     torch.tensor(cfg.architecture.stop_grid), cfg.architecture.n_sizes, cfg.risk_aversion)
        j = torch.einsum("bk,bs,br,bksr->b", ps, pst, pr, u)
        best_fixed = u.mean(0).max()
        return float(j.mean()), float(best_fixed)


def train(cfg: RiskTrainConfig, data: TrainingSet, *, log=None) -> tuple[MRMSNet, dict[str, float]]:
    """Fit the three sub-agents on ``data`` (deterministic for a config and data)."""
    torch.set_num_threads(1)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(cfg.seed)
        net = MRMSNet(cfg.architecture)
        gen = torch.Generator().manual_seed(cfg.seed)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps))
        )
        x = torch.from_numpy(data.x)
        out = torch.from_numpy(data.outcomes)
        risk = torch.from_numpy(data.unit_risk)
        cost = torch.from_numpy(data.cost)
        stop_grid = torch.tensor(cfg.architecture.stop_grid, dtype=torch.float32)
        n = x.shape[0]
        last = {}
        for step in range(cfg.steps):
            idx = torch.randint(0, n, (min(cfg.batch, n),), generator=gen)
            u = _utility(out[idx], risk[idx], cost[idx], stop_grid, cfg.architecture.n_sizes, cfg.risk_aversion)
            logits = net(x[idx])
            ps, pst, pr = (torch.softmax(t, -1) for t in logits)
            j = torch.einsum("bk,bs,br,bksr->b", ps, pst, pr, u).mean()
            h = (_entropy(ps) + _entropy(pst) + _entropy(pr)).mean()
            loss = -j - cfg.entropy * h
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            if log is not None and (step % 250 == 0 or step == cfg.steps - 1):
                log(f"step {step:5d}  utility {float(j.detach()):+.4f}  entropy {float(h.detach()):.3f}")
            last = {"train_utility": float(j.detach()), "train_entropy": float(h.detach())}
    finally:
        torch.use_deterministic_algorithms(prev)
    return net.eval(), last


# -- sequential evaluation ----------------------------------------------------------------------------


class FixedSizeModel:
    """Baseline: always ``units`` units, stop ``stop_atr`` ATRs, reward:risk ``reward_risk``."""

    source = "rule"

    def __init__(self, units: int = 1, stop_atr: float = 1.5, reward_risk: float = 2.0) -> None:
        self.units, self.stop_atr, self.rr = units, stop_atr, reward_risk
        self.model_version = f"fixed-{units}u"

    def propose(self, trade: TradeContext, account: AccountContext):
        from sage.risk.decision import N_SIZES, make_decision

        probs = [0.0] * N_SIZES
        probs[self.units] = 1.0
        return make_decision(trade, units=self.units, size_probabilities=tuple(probs), stop_atr_multiple=self.stop_atr,
                             reward_risk=self.rr, confidence=1.0, source="rule", model_version=self.model_version)


def trade_context_from_raw(r: np.ndarray) -> TradeContext:
    """A :class:`TradeContext` from one row of raw trade values (``RAW_TRADE`` order)."""
    assert r.shape[0] == len(RAW_TRADE)
    return TradeContext(
        side=int(r[0]), entry_price=float(r[1]), atr=float(r[2]), tick_size=float(r[3]), point_value=float(r[4]),
        contract_size=float(r[5]), agent_directions=tuple(int(v) for v in r[6:11]),
        agent_strengths=tuple(float(v) for v in r[11:16]), combined_signal=float(r[16]),
        combined_uncertainty=float(r[17]), regime_probabilities=tuple(float(v) for v in r[18:22]),
        regime_level=int(r[22]), regime_uncertainty=float(r[23]), volatility=float(r[24]),
        fvg_state=tuple(float(v) for v in r[25:29]), rsi=float(r[29]), bb_pctb=float(r[30]), momentum=float(r[31]),
        volume_ratio=float(r[32]),
    )  # fmt: skip


def run_account(series: SeriesData, model, *, equity0: float = 100_000.0, start: int = 0, end: int | None = None,
                sim: SimulationConfig) -> dict[str, Any]:
    """Trade ``series``' candidates in bars ``[start, end)`` one position at a time with ``model``.

    Honest: decision at bar i's close from data up to i; fill at bar i+1's open plus slippage; bracket as
    proposed (distances from the reference entry, applied to the fill); costs per contract per fill.
    Returns metrics and the per-day return series (for pooled statistics).
    """
    bars = series.bars
    o, h, lo, c = (np.ascontiguousarray(bars[k].to_numpy(np.float64)) for k in ("open", "high", "low", "close"))
    end = len(bars) if end is None else end
    day = (bars.index.asi8 // 86_400_000_000_000).astype(np.int64)
    equity, peak, busy_until = equity0, equity0, -1
    wins: list[float] = []
    consecutive, last_entry = 0, -(10**9)
    day_start, cur_day = equity0, None
    daily_pnl: dict[int, float] = {}
    n_trades, units_sum, risk_frac = 0, 0, []
    max_dd = 0.0
    for k, i in enumerate(series.index):
        if i < start or i + 1 >= end or i <= busy_until:
            continue
        if cur_day != day[i]:
            cur_day, day_start = day[i], equity
        trade = trade_context_from_raw(series.raw_trade[k])
        account = AccountContext(
            equity=equity, drawdown=1.0 - equity / peak, daily_pnl=equity - day_start,
            recent_win_rate=float(np.mean(wins[-20:])) if wins else 0.5, consecutive_losses=consecutive,
            bars_since_last_trade=int(min(i - last_entry, 10**6)),
        )  # fmt: skip
        d = model.propose(trade, account)
        if d.units == 0:
            continue
        stop_dist = abs(d.entry_price - d.stop_price)
        target_dist = abs(d.target_price - d.entry_price)
        entry, exit_px, j, _ = run_bracket(o, h, lo, c, int(i), int(d.side), stop_dist, target_dist,
                                           sim.horizon, sim.slippage_ticks * series.tick_size)  # fmt: skip
        j = min(j, end - 1) if j >= end else j
        qty = d.quantity
        pnl = qty * series.point_value * d.side * (exit_px - entry) - 2.0 * series.commission * d.units
        risk_frac.append(d.risk_amount / equity)
        equity += pnl
        peak = max(peak, equity)
        max_dd = max(max_dd, 1.0 - equity / peak)
        daily_pnl[int(day[j])] = daily_pnl.get(int(day[j]), 0.0) + pnl
        wins.append(1.0 if pnl > 0 else 0.0)
        consecutive = 0 if pnl > 0 else consecutive + 1
        busy_until, last_entry = j, int(i)
        n_trades += 1
        units_sum += d.units
        if equity <= 0:
            break
    days = np.arange(day[min(start, len(day) - 1)], day[end - 1] + 1)
    # daily returns on the running equity (pnl of the day / equity at its start)
    eq, rets = equity0, []
    for dd in days:
        p = daily_pnl.get(int(dd), 0.0)
        rets.append(p / eq if eq > 0 else 0.0)
        eq += p
    rets = np.asarray(rets)
    sd = rets.std(ddof=1) if rets.size > 1 else 0.0
    sharpe = float(rets.mean() / sd * math.sqrt(252.0)) if sd > 0 else 0.0
    total = equity / equity0 - 1.0
    return {
        "total_return": float(total),
        "sharpe": sharpe,
        "max_drawdown": float(max_dd),
        "return_over_max_dd": float(total / max_dd) if max_dd > 0 else float("nan"),
        "n_trades": n_trades,
        "win_rate": float(np.mean(wins)) if wins else float("nan"),
        "mean_units": float(units_sum / n_trades) if n_trades else 0.0,
        "mean_risk_pct": float(100 * np.mean(risk_frac)) if risk_frac else 0.0,
        "days": int(days.size),
        "_daily_returns": rets,
    }


# -- entry points ---------------------------------------------------------------------------------------


def build_training_data(cfg: RiskTrainConfig, log=None) -> tuple[list[SeriesData], TrainingSet, np.random.Generator]:
    rng = np.random.Generator(np.random.PCG64(cfg.seed))
    series = []
    for seed in cfg.train_seeds:
        series.append(synthetic_series(seed, cfg.bars_per_seed, cfg, rng))
        if log:
            log(f"synthetic seed {seed}: {series[-1].index.size:,d} candidates")
    return series, training_set(series, None, cfg, rng), rng


def train_and_save(cfg: RiskTrainConfig, out: Path, *, log=print) -> dict[str, Any]:
    started = time.perf_counter()
    _series, data, rng = build_training_data(cfg, log)
    net, last = train(cfg, data, log=log)
    val = synthetic_series(cfg.val_seed, cfg.val_bars, cfg, rng)
    val_data = training_set([val], None, cfg, rng)
    u_model, u_best_fixed = expected_utility(net, val_data, cfg)
    metrics: dict[str, Any] = {
        **last,
        "val_expected_utility": u_model,
        "val_best_fixed_action_utility": u_best_fixed,
        "train_samples": int(data.x.shape[0]),
        "val_candidates": int(val.index.size),
    }
    from sage.risk.models import MRMS, RuleRiskModel

    model = MRMS.from_net(net, f"{cfg.name}@{cfg.version}")
    for label, m in (("mrms", model), ("rule", RuleRiskModel()), ("fixed_1u", FixedSizeModel())):
        r = run_account(val, m, sim=cfg.simulation)
        r.pop("_daily_returns")
        metrics[f"val_{label}"] = r
    training = {
        "config": msgspec.to_builtins(cfg),
        "command": SHIPPED_COMMAND,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "torch": str(torch.__version__),
    }
    # created is fixed so the manifest (not only the weights) is reproducible byte for byte
    manifest = save_mrms(out, net, input_names=INPUT_NAMES, name=cfg.name, version=cfg.version,
                         training=training, metrics=metrics, created="2025-01-01T00:00:00+00:00")  # fmt: skip
    return {"manifest": manifest, "metrics": metrics}


def add_train_risk_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"checkpoint directory (default {DEFAULT_OUT})")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the recipe's 1500)")
    parser.add_argument("--bars-per-seed", type=int, default=None, help="1-minute bars per training market")


def run_train_risk(args: argparse.Namespace, console) -> int:
    overrides: dict[str, Any] = {"seed": args.seed}
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.bars_per_seed is not None:
        overrides["bars_per_seed"] = args.bars_per_seed
    cfg = RiskTrainConfig(**overrides)
    result = train_and_save(cfg, Path(args.out), log=console.print)
    m = result["manifest"]
    console.print(f"wrote {args.out} (sha256 {m.weights_sha256[:16]}...)")
    console.print(json.dumps({k: v for k, v in result["metrics"].items()}, indent=1, default=str), markup=False)
    return 0


# -- walk-forward evaluation ------------------------------------------------------------------------


class EvaluateConfig(msgspec.Struct, frozen=True, kw_only=True):
    """``sage evaluate risk``: the walk-forward market and the real-data rows."""

    market_seed: int = 301
    """Synthetic market of the walk-forward (default 301; never used in training)."""
    market_bars: int = 600_000
    """Its 1-minute bars (default 600,000 = 120,000 five-minute bars, ~417 days)."""
    blocks: int = 6
    """Contiguous blocks; fold k trains on blocks < k and tests on block k (default 6 -> 5 folds)."""
    fold_steps: int = 600
    """Training steps per fold (default 600; the shipped recipe uses 1500 on more data)."""
    holdout_seed: int = 202
    """Held-out synthetic seed the *shipped* model is also evaluated on (default 202)."""
    holdout_bars: int = 200_000
    catalog: str | None = "catalogs/sample"
    """Catalog with the real sample bars (default the sample catalog; None = skip the real rows)."""
    equity: float = 100_000.0
    """Starting equity of every run (default 100,000)."""


def _pooled(daily: list[np.ndarray]) -> dict[str, float]:
    r = np.concatenate(daily) if daily else np.zeros(0)
    eq = np.cumprod(1.0 + r) if r.size else np.ones(1)
    peak = np.maximum.accumulate(eq)
    sd = r.std(ddof=1) if r.size > 1 else 0.0
    return {
        "sharpe": float(r.mean() / sd * math.sqrt(252.0)) if sd > 0 else 0.0,
        "total_return": float(eq[-1] - 1.0),
        "max_drawdown": float((1.0 - eq / peak).max()),
        "days": int(r.size),
    }


def walk_forward(cfg: RiskTrainConfig, ev: EvaluateConfig, *, log=print, shipped: str | None = "default") -> dict:
    """Run the evaluation described in the module docstring; returns a JSON-able report."""
    from sage.risk.models import MRMS, RuleRiskModel

    rng = np.random.Generator(np.random.PCG64(cfg.seed))
    market = synthetic_series(ev.market_seed, ev.market_bars, cfg, None)
    n = len(market.bars)
    edges = np.linspace(0, n, ev.blocks + 1).astype(int)
    fold_cfg = msgspec.structs.replace(cfg, steps=ev.fold_steps)
    folds, daily = [], {"mrms": [], "rule": [], "fixed_1u": []}
    for k in range(1, ev.blocks):
        lo, hi = edges[k], edges[k + 1]
        train_mask = market.index + cfg.simulation.horizon < lo  # purge: labels must end before the test block
        data = training_set([market], [train_mask], fold_cfg, rng)
        net, _ = train(fold_cfg, data)
        models = {"mrms": MRMS.from_net(net, f"fold{k}"), "rule": RuleRiskModel(), "fixed_1u": FixedSizeModel()}
        row = {"fold": k, "train_candidates": int(train_mask.sum()), "test_bars": [int(lo), int(hi)]}
        for name, model in models.items():
            r = run_account(market, model, equity0=ev.equity, start=lo, end=hi, sim=cfg.simulation)
            daily[name].append(r.pop("_daily_returns"))
            row[name] = r
        folds.append(row)
        log(f"fold {k}: " + ", ".join(f"{m} sharpe {row[m]['sharpe']:+.2f}" for m in models))
    report: dict[str, Any] = {
        "walk_forward": {"market_seed": ev.market_seed, "bars_5m": n, "folds": folds,
                         "pooled": {m: _pooled(d) for m, d in daily.items()}},
    }  # fmt: skip
    others: dict[str, Any] = {}
    if shipped is not None:
        shipped_model = MRMS.load(shipped)
        models = {"mrms": shipped_model, "rule": RuleRiskModel(), "fixed_1u": FixedSizeModel()}
        hold = synthetic_series(ev.holdout_seed, ev.holdout_bars, cfg, None)
        others[f"synthetic-{ev.holdout_seed} (held out)"] = _row(hold, models, ev, cfg.simulation)
        if ev.catalog:
            for name, series in _real_series(ev, cfg).items():
                others[name] = _row(series, models, ev, series_sim(cfg, series))
        report["shipped_model"] = {"model": shipped_model.model_version, "datasets": others}
    return report


def series_sim(cfg: RiskTrainConfig, series: SeriesData) -> SimulationConfig:
    return msgspec.structs.replace(cfg.simulation, commission=series.commission)


def _row(series: SeriesData, models: dict, ev: EvaluateConfig, sim: SimulationConfig) -> dict:
    out = {"candidates": int(series.index.size)}
    for name, model in models.items():
        r = run_account(series, model, equity0=ev.equity, sim=sim)
        r.pop("_daily_returns")
        out[name] = r
    return out


def _real_series(ev: EvaluateConfig, cfg: RiskTrainConfig) -> dict[str, SeriesData]:
    """ES 1-minute bars (-> 5-minute) and EUR/USD hourly bars from the sample catalog."""
    from nautilus_trader.persistence.catalog import ParquetDataCatalog

    path = Path(ev.catalog)
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not path.exists():
        return {}
    catalog = ParquetDataCatalog(str(path))
    out = {}
    specs = [
        ("ESU3.XCME-1-MINUTE-LAST-EXTERNAL", "ES 5-minute (real)", 0.25, 50.0, 1.0, 2.5, None),
        ("EUR/USD.SIM-1-HOUR-MID-EXTERNAL", "EUR/USD 1-hour (real)", 1e-5, 1.0, 100_000.0, 2.0, 1),
    ]
    for bar_type, label, tick, pv, csize, commission, minutes in specs:
        bars = catalog.bars(bar_types=[bar_type])
        if not bars:
            continue
        df = pd.DataFrame(
            {"open": [b.open.as_double() for b in bars], "high": [b.high.as_double() for b in bars],
             "low": [b.low.as_double() for b in bars], "close": [b.close.as_double() for b in bars],
             "volume": [b.volume.as_double() for b in bars]},
            index=pd.to_datetime([b.ts_event for b in bars], utc=True),
        )  # fmt: skip
        sim = msgspec.structs.replace(cfg.simulation, commission=commission)
        out[label] = series_from_bars(label, df, tick_size=tick, point_value=pv, contract_size=csize, sim=sim,
                                      grid=None, minutes=minutes)  # fmt: skip
    return out


def report_markdown(report: dict) -> str:
    """The evaluation report as markdown tables."""
    cols = ("sharpe", "total_return", "max_drawdown", "return_over_max_dd", "n_trades", "win_rate", "mean_units",
            "mean_risk_pct")  # fmt: skip

    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["# M-RMS evaluation", ""]
    wf = report["walk_forward"]
    lines += [f"## Walk-forward on synthetic market seed {wf['market_seed']} ({wf['bars_5m']:,d} five-minute bars)", "",
              ("Each fold retrains M-RMS on all earlier blocks (purged by the outcome horizon) and trades the next "
               "block one position at a time, costs included. Starting equity 100,000 per fold."), ""]  # fmt: skip
    lines += ["| fold | model | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for f in wf["folds"]:
        for m in ("mrms", "rule", "fixed_1u"):
            lines.append(f"| {f['fold']} | {m} | " + " | ".join(fmt(f[m].get(c)) for c in cols) + " |")
    lines += ["", "Pooled over all test days (daily returns chained):", "",
              "| model | sharpe | total_return | max_drawdown | days |", "|---|---|---|---|---|"]  # fmt: skip
    for m, p in wf["pooled"].items():
        lines.append(f"| {m} | {p['sharpe']:.3f} | {p['total_return']:.3f} | {p['max_drawdown']:.3f} | {p['days']} |")
    if "shipped_model" in report:
        sm = report["shipped_model"]
        lines += ["", f"## Shipped model `{sm['model']}` on data it was not trained on", ""]
        lines += ["| dataset | candidates | model | " + " | ".join(cols) + " |", "|---|---|---|" + "---|" * len(cols)]
        for ds, row in sm["datasets"].items():
            for m in ("mrms", "rule", "fixed_1u"):
                lines.append(f"| {ds} | {row['candidates']} | {m} | " + " | ".join(fmt(row[m].get(c)) for c in cols) + " |")
    lines.append("")
    return "\n".join(lines)


def run_evaluate_risk(args: argparse.Namespace, console) -> int:
    cfg = RiskTrainConfig()
    ev = EvaluateConfig(market_bars=args.bars, fold_steps=args.fold_steps)
    report = walk_forward(cfg, ev, log=console.print, shipped=args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "risk_evaluation.json").write_text(json.dumps(report, indent=1, default=float))
    md = report_markdown(report)
    (out / "risk_evaluation.md").write_text(md)
    console.print(md, markup=False, highlight=False)
    console.print(f"wrote {out / 'risk_evaluation.md'} and {out / 'risk_evaluation.json'}")
    return 0
