"""Self-supervised pretraining of the BiLSTM bar-sequence encoder -- ``sage train encoder``.

Why pretrain: MAPPO's reward signal is noisy and sparse in information; an encoder that already knows
what bars and swings look like gives the agents useful features from the first update. The encoder
reads windows of the 11 **relative** features (``sage.features`` relative family: scale-free log
ratios, candle ratios and z-scores, so one encoder serves any instrument and price level) and learns
three tasks at once from the bars themselves (no labels needed):

=================  ==========================================================================  =========
task               target for the window ending at bar ``t``                                   classes
=================  ==========================================================================  =========
``expansion``      bar ``t+1``'s range ``log(h/l)`` exceeds ``expansion_factor`` x the mean      2
                   range of the window's last 20 bars (volatility expansion, predictive)
``swing``          bar ``t-k`` is a swing high (its high is the highest of bars ``t-2k..t``),    3
                   a swing low (lowest low), or neither (both counts as neither) -- confirmed
                   by bars inside the window, so the label is learnable without look-ahead
``candle``         bar ``t+1``'s body ``(c-o)/(h-l)``: bullish (>= +candle_body), bearish         3
                   (<= -candle_body), or small (doji / spinning top)
=================  ==========================================================================  =========

Targets may read bars after ``t`` (they are what is predicted); inputs never do. Rare classes
(expansion bars, swing points) are handled by a **focal loss** (Lin et al. 2017; ``gamma`` = 2) with
inverse-frequency class weights. The heads are thrown away after pretraining; the encoder's LSTM
transfers into every agent's encoder (``sage.models.encoder.transfer_weights``), the input projection
only where widths agree (the agents' matrices have 7 and 13 columns, not 11).

Input transform (:func:`pretrain_inputs`), every column bounded: ``rel_*`` divided by the bar's
``ewma_vol`` (returns in sigmas) then ``tanh(x / 2)``; the three candle ratios as they are; ``z_*``
through ``tanh(z / 2)``. Deterministic (seeded, one thread, deterministic algorithms): the command
reproduces the shipped ``encoder-default`` weights bit for bit.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from sage.features import compute
from sage.features.relative import COLUMNS as RELATIVE_COLUMNS
from sage.features.schema import DEFAULT_SCHEMA
from sage.models.encoder import EncoderConfig, SequenceEncoder
from sage.models.registry import ModelManifest, load_checkpoint, save_checkpoint, utc_now_iso

KIND: str = "sage.pretrained-encoder"
"""Registry kind of a pretrained encoder checkpoint."""

DEFAULT_NAME: str = "encoder-default"
"""Shipped checkpoint ``"default"`` resolves to."""

TASKS: dict[str, tuple[str, ...]] = {
    "expansion": ("normal", "expansion"),
    "swing": ("neither", "swing_high", "swing_low"),
    "candle": ("bullish", "bearish", "small"),
}
"""Pretraining tasks and their class names (class index = position)."""


class EncoderTrainError(ValueError):
    """A pretraining request that cannot run as given (missing bar type, too few windows)."""


# -- configuration -----------------------------------------------------------------------------------


class EncoderDataConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Which bars to pretrain on: a catalog bar type, or the seeded synthetic market."""

    catalog: str | None = None
    """Catalog directory (default None = the synthetic market)."""
    bar_type: str | None = None
    """Bar type in ``catalog`` (required with ``catalog``)."""
    synthetic_bars: int = 200_000
    """1-minute bars of the synthetic market (default 200,000 = 40,000 5-minute bars)."""
    seed: int = 11
    """Seed of the synthetic market (default 11; the agents train on other seeds)."""
    aggregate_minutes: int = 5
    """Bars finer than this many minutes are aggregated to it first (default 5: the tactical agents'
    timeframe); coarser bars (e.g. hourly) are used as they are."""
    holdout_fraction: float = 0.2
    """Tail share of the windows held out for the reported metrics (default 0.2)."""


class EncoderTrainConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Everything that determines a pretraining run; equal configs give bitwise-equal weights."""

    seed: int = 0
    """Seed of weight init and batch sampling (default 0)."""
    encoder: EncoderConfig = EncoderConfig()
    """Encoder sizes (default 11 inputs, d_model 8, hidden 8 -- as the agents' encoders)."""
    data: EncoderDataConfig = EncoderDataConfig()
    """Training bars (default: 200k synthetic 1-minute bars, seed 11, aggregated to 5 minutes)."""
    window: int = 60
    """Bars per window (default 60, the tactical matrix's length)."""
    swing_k: int = 3
    """Swing confirmation: bar ``t-k`` is compared with ``k`` bars on each side (default 3)."""
    expansion_factor: float = 1.5
    """Next-bar range above this multiple of the window's mean range = expansion (default 1.5)."""
    candle_body: float = 0.3
    """``|body ratio|`` at or above this makes a bullish/bearish candle (default 0.3)."""
    steps: int = 600
    """Optimizer steps (default 600, well under a minute on one core)."""
    batch_size: int = 128
    """Windows per step (default 128)."""
    lr: float = 3e-3
    """AdamW learning rate, cosine-decayed to 10 % (default 3e-3)."""
    weight_decay: float = 1e-4
    """AdamW weight decay (default 1e-4)."""
    focal_gamma: float = 2.0
    """Focal-loss focusing parameter (default 2.0; 0 = weighted cross-entropy)."""
    name: str = DEFAULT_NAME
    """Model name in the manifest (default ``encoder-default``)."""
    version: str = "1.0.0"
    """Model version in the manifest (default 1.0.0)."""

    def __post_init__(self) -> None:
        if self.encoder.n_features != len(RELATIVE_COLUMNS):
            raise ValueError(f"encoder.n_features must be {len(RELATIVE_COLUMNS)} (the relative features)")
        if self.window < 2 * self.swing_k + 1:
            raise ValueError("window must cover a whole swing (2 * swing_k + 1 bars)")
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError("steps must be >= 1 and batch_size >= 2")


# -- data ---------------------------------------------------------------------------------------------


def pretrain_inputs(features: pd.DataFrame) -> np.ndarray:
    """``(n, 11)`` float32 bounded encoder inputs from a ``sage.features.compute`` frame (see module doc)."""
    sigma = features["ewma_vol"].to_numpy(dtype=np.float64)
    out = np.empty((len(features), len(RELATIVE_COLUMNS)), dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        for j, name in enumerate(RELATIVE_COLUMNS):
            x = features[name].to_numpy(dtype=np.float64)
            if name.startswith("rel_"):
                z = np.where(sigma > 0, x / sigma, 0.0)
                out[:, j] = np.tanh(z / 2.0)
            elif name.startswith("z_"):
                out[:, j] = np.tanh(x / 2.0)
            else:
                out[:, j] = x
    out[~np.isfinite(sigma)] = np.nan
    return out.astype(np.float32)


def pretrain_targets(bars: pd.DataFrame, config: EncoderTrainConfig) -> np.ndarray:
    """``(n, 3)`` int64 targets (expansion, swing, candle) for the window ending at each bar; -1 where
    undefined (no next bar, not enough history)."""
    h = bars["high"].to_numpy(dtype=np.float64)
    lo = bars["low"].to_numpy(dtype=np.float64)
    o = bars["open"].to_numpy(dtype=np.float64)
    c = bars["close"].to_numpy(dtype=np.float64)
    n, k = len(bars), config.swing_k
    out = np.full((n, 3), -1, dtype=np.int64)
    rng = np.log(h / lo)  # bar range in log units
    mean20 = pd.Series(rng).rolling(20, min_periods=20).mean().to_numpy()
    nxt = np.r_[rng[1:], np.nan]
    ok = np.isfinite(mean20) & np.isfinite(nxt)
    out[ok, 0] = (nxt[ok] > config.expansion_factor * mean20[ok]).astype(np.int64)
    w = 2 * k + 1
    if n >= w:
        hi_win = np.lib.stride_tricks.sliding_window_view(h, w)  # row i: bars i .. i + 2k
        lo_win = np.lib.stride_tricks.sliding_window_view(lo, w)
        centre_h, centre_l = h[k : n - k], lo[k : n - k]
        is_high = centre_h >= hi_win.max(axis=1)
        is_low = centre_l <= lo_win.min(axis=1)
        swing = np.where(is_high & ~is_low, 1, np.where(is_low & ~is_high, 2, 0))
        out[2 * k :, 1] = swing  # label of the window ending at t = centre + k
    span = h - lo
    body = np.divide(c - o, span, out=np.zeros(n), where=span > 0)
    nxt_body = np.r_[body[1:], np.nan]
    has_next = np.isfinite(nxt_body)
    candle = np.where(nxt_body >= config.candle_body, 0, np.where(nxt_body <= -config.candle_body, 1, 2))
    out[has_next, 2] = candle[has_next]
    return out


def load_bars(data: EncoderDataConfig) -> tuple[pd.DataFrame, str]:
    """The pretraining bars (aggregated per ``aggregate_minutes``) and a description of their source."""
    from sage.training.env import aggregate_bars

    if data.catalog is not None:
        if not data.bar_type:
            raise EncoderTrainError("--bar-type is required with --catalog")
        from sage.training.regime import load_catalog_bars

        if not Path(data.catalog).exists():
            raise FileNotFoundError(f"catalog {data.catalog} does not exist")
        bars = load_catalog_bars(data.catalog, data.bar_type)
        source = f"catalog {data.catalog}: {data.bar_type}"
    else:
        from sage.data.synthetic import SyntheticMarketConfig, generate_bars

        bars = generate_bars(SyntheticMarketConfig(seed=data.seed, n_bars=data.synthetic_bars))
        source = f"synthetic market seed {data.seed}, {data.synthetic_bars} 1-minute bars"
    step = np.median(np.diff(bars.index.as_unit("ns").asi8)) if len(bars) > 1 else 0
    if 0 < step < data.aggregate_minutes * 60e9:
        bars = aggregate_bars(bars, data.aggregate_minutes)
        source += f", aggregated to {data.aggregate_minutes}-minute bars"
    return bars, source


@dataclass
class PretrainSet:
    """Model inputs, targets and the train/held-out window ends of one bar series."""

    inputs: np.ndarray  # (n, 11) float32
    targets: np.ndarray  # (n, 3) int64, -1 = undefined
    train_ends: np.ndarray  # window end indices
    holdout_ends: np.ndarray
    source: str


def prepare(bars: pd.DataFrame, config: EncoderTrainConfig, source: str = "") -> PretrainSet:
    """Inputs, targets and split for ``bars``: windows must be finite and have every target defined."""
    from sage.training.regime import valid_window_ends

    inputs = pretrain_inputs(compute(bars, DEFAULT_SCHEMA))
    targets = pretrain_targets(bars, config)
    ends = valid_window_ends(inputs, config.window)
    ends = ends[(targets[ends] >= 0).all(axis=1)]
    if ends.size < 100:
        raise EncoderTrainError(f"only {ends.size} complete pretraining windows in {source or 'the bars'}; need >= 100")
    split = int(ends.size * (1.0 - config.data.holdout_fraction))
    # The last training window's targets read one bar ahead: keep a gap of window + 1 bars.
    holdout = ends[split:]
    train = ends[: split]
    train = train[train < (holdout[0] - config.window - 1 if holdout.size else np.inf)]
    return PretrainSet(inputs, targets, train, holdout, source)


# -- model --------------------------------------------------------------------------------------------


class PretrainNet(nn.Module):
    """Encoder + one linear head per task (state dict: ``encoder.*``, ``heads.<task>.*``)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.encoder = SequenceEncoder(config)
        self.heads = nn.ModuleDict({task: nn.Linear(config.out_dim, len(names)) for task, names in TASKS.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x (B, L, 11)`` -> logits per task ``(B, classes)``."""
        e = self.encoder(x)
        return {task: head(e) for task, head in self.heads.items()}


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean focal loss ``-w_y (1 - p_y)^gamma log p_y`` (Lin et al. 2017); ``gamma = 0`` is weighted CE."""
    log_p = F.log_softmax(logits, dim=1)
    log_py = log_p.gather(1, target[:, None])[:, 0]  # (B,)
    loss = -((1.0 - log_py.exp()) ** gamma) * log_py
    if weight is not None:
        loss = loss * weight[target]
    return loss.mean()


# -- training -----------------------------------------------------------------------------------------


@dataclass
class EncoderTrainResult:
    net: PretrainNet
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    seconds: float
    manifest: ModelManifest | None


def _windows(inputs: torch.Tensor, ends: np.ndarray, length: int) -> torch.Tensor:
    idx = torch.from_numpy(ends)[:, None] + torch.arange(-length + 1, 1)  # (B, L)
    return inputs[idx]


def evaluate(net: PretrainNet, data: PretrainSet, ends: np.ndarray, window: int) -> dict[str, Any]:
    """Accuracy, balanced accuracy and the majority-class baseline per task on windows ending at ``ends``."""
    inputs = torch.from_numpy(data.inputs)
    out: dict[str, Any] = {"n": int(ends.size)}
    preds: dict[str, list[np.ndarray]] = {t: [] for t in TASKS}
    net.eval()
    with torch.no_grad():
        for i in range(0, ends.size, 2048):
            logits = net(_windows(inputs, ends[i : i + 2048], window))
            for t in TASKS:
                preds[t].append(logits[t].argmax(1).numpy())
    for j, (task, names) in enumerate(TASKS.items()):
        y, p = data.targets[ends, j], np.concatenate(preds[task])
        recall = [float(np.mean(p[y == k] == k)) for k in range(len(names)) if (y == k).any()]
        majority = np.bincount(y, minlength=len(names)).argmax()
        out[task] = {
            "accuracy": float(np.mean(p == y)),
            "balanced_accuracy": float(np.mean(recall)),
            "majority_accuracy": float(np.mean(y == majority)),
            "class_share": {n: float(np.mean(y == k)) for k, n in enumerate(names)},
        }
    net.train()
    return out


def train_encoder(
    config: EncoderTrainConfig | None = None,
    *,
    data: PretrainSet | None = None,
    out_dir: str | Path | None = None,
    progress: bool = False,
    command: str | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> EncoderTrainResult:
    """Pretrain the encoder; save it to ``out_dir`` (registry checkpoint) if given. Deterministic."""
    config = config if config is not None else EncoderTrainConfig()
    started = time.perf_counter()
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        if data is None:
            bars, source = load_bars(config.data)
            log(f"pretraining data: {source} ({len(bars):,d} bars)")
            data = prepare(bars, config, source)
        torch.manual_seed(config.seed)
        rng = np.random.Generator(np.random.PCG64(config.seed))
        net = PretrainNet(config.encoder)
        optim = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            optim, lambda s: 0.1 + 0.9 * 0.5 * (1.0 + np.cos(np.pi * min(s / config.steps, 1.0)))
        )
        inputs = torch.from_numpy(data.inputs)
        targets = torch.from_numpy(data.targets)
        weights = {}
        for j, (task, names) in enumerate(TASKS.items()):
            counts = np.bincount(data.targets[data.train_ends, j], minlength=len(names)).astype(np.float64)
            weights[task] = torch.tensor(counts.sum() / (len(names) * np.maximum(counts, 1.0)), dtype=torch.float32)
        history: list[dict[str, float]] = []
        from rich.progress import Progress

        with Progress(disable=not progress, transient=True) as bar:
            task_id = bar.add_task("pretraining encoder", total=config.steps)
            for step in range(config.steps):
                ends = data.train_ends[rng.integers(0, data.train_ends.size, config.batch_size)]
                x = _windows(inputs, ends, config.window)  # (B, L, 11)
                y = targets[torch.from_numpy(ends)]  # (B, 3)
                logits = net(x)
                losses = {
                    t: focal_loss(logits[t], y[:, j], config.focal_gamma, weights[t]) for j, t in enumerate(TASKS)
                }
                loss = sum(losses.values())
                optim.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                optim.step()
                sched.step()
                history.append({"loss": float(loss.item()), **{t: float(v.item()) for t, v in losses.items()}})
                bar.update(task_id, advance=1)
        net.eval()
        metrics = {
            "holdout": evaluate(net, data, data.holdout_ends, config.window),
            "final_train_loss": float(np.mean([h["loss"] for h in history[-50:]])),
        }
        seconds = time.perf_counter() - started
        manifest = None
        if out_dir is not None:
            manifest = save_encoder(
                net, out_dir, config,
                training={
                    "command": command or "sage.training.encoder.train_encoder(EncoderTrainConfig(...))",
                    "config": msgspec.to_builtins(config),
                    "data": data.source,
                    "train_windows": int(data.train_ends.size),
                    "holdout_windows": int(data.holdout_ends.size),
                    "seconds": round(seconds, 1),
                    "threads": 1,
                    "torch": str(torch.__version__),
                },
                metrics=metrics,
            )  # fmt: skip
        return EncoderTrainResult(net, metrics, history, seconds, manifest)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def save_encoder(
    net: PretrainNet,
    directory: str | Path,
    config: EncoderTrainConfig,
    *,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> ModelManifest:
    """Write ``net`` (encoder + heads) as a registry checkpoint."""
    manifest = ModelManifest(
        name=config.name,
        kind=KIND,
        version=config.version,
        created=utc_now_iso(),
        architecture={"encoder": msgspec.to_builtins(config.encoder), "tasks": {k: list(v) for k, v in TASKS.items()}},
        feature_schema=DEFAULT_SCHEMA.to_json(),
        feature_schema_hash=DEFAULT_SCHEMA.hash,
        input_hash=DEFAULT_SCHEMA.hash,
        input_names=list(RELATIVE_COLUMNS),
        training=training or {},
        metrics=metrics or {},
    )
    return save_checkpoint(directory, net.state_dict(), manifest)


def load_pretrained(name_or_path: str | Path = "default") -> tuple[EncoderConfig, dict[str, torch.Tensor], ModelManifest]:
    """A verified pretrained encoder: ``(config, encoder state dict with keys proj.* / lstm.*, manifest)``.

    ``"default"`` is the shipped ``encoder-default``. Raises ``ModelLoadError`` subclasses on any problem.
    """
    target = DEFAULT_NAME if str(name_or_path) == "default" else name_or_path

    def expected_for(manifest: ModelManifest) -> dict[str, torch.Tensor]:
        cfg = msgspec.convert(manifest.architecture["encoder"], EncoderConfig)
        return PretrainNet(cfg).state_dict()

    manifest, state = load_checkpoint(target, kind=KIND, expected_for=expected_for)
    cfg = msgspec.convert(manifest.architecture["encoder"], EncoderConfig)
    encoder_state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    return cfg, encoder_state, manifest


# -- command ------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``sage train encoder``."""
    parser.add_argument("--catalog", type=Path, default=None, help="catalog with the bars (default: synthetic market)")
    parser.add_argument("--bar-type", default=None, help="bar type in --catalog, e.g. ESU3.XCME-1-MINUTE-LAST-EXTERNAL")
    parser.add_argument("--synthetic-bars", type=int, default=None, help="1-minute synthetic bars (default 200000)")
    parser.add_argument("--seed", type=int, default=None, help="synthetic market seed (default 11)")
    parser.add_argument("--train-seed", type=int, default=0, help="weight-init / batch seed (default 0)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default 600)")
    parser.add_argument("--out", type=Path, default=Path("runs/encoder-default"), help="output directory (default runs/encoder-default)")


def config_from_args(args: argparse.Namespace) -> EncoderTrainConfig:
    """The :class:`EncoderTrainConfig` an argument namespace describes (defaults for unset options)."""
    base = EncoderTrainConfig()
    data = base.data
    changes: dict[str, Any] = {}
    if args.catalog is not None:
        changes.update(catalog=str(args.catalog), bar_type=args.bar_type)
    if args.synthetic_bars is not None:
        changes["synthetic_bars"] = args.synthetic_bars
    if args.seed is not None:
        changes["seed"] = args.seed
    data = msgspec.structs.replace(data, **changes)
    cfg = msgspec.structs.replace(base, data=data, seed=args.train_seed)
    if args.steps is not None:
        cfg = msgspec.structs.replace(cfg, steps=args.steps)
    return cfg
