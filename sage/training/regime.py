"""Train the regime model bundle (encoder + classifier + forecaster) -- ``sage train regime``.

Recipe (one frozen :class:`RegimeTrainConfig`, defaults = the shipped ``regime-default`` weights):

* **Data.** The seeded synthetic market (``sage.data.synthetic``, default parameters, several seeds),
  whose true regime is known for every bar, plus real bars from a catalog (default: the four sample
  bar types). Every series goes through the feature library exactly as at inference
  (``strategic_rows`` -> the model's 11 columns -> windows of ``L`` rows). Real series keep their last
  ``holdout_fraction`` of windows **held out** (never trained on; forecaster targets of training windows
  stop before the tail), so coverage can be measured on unseen data (the conformal calibrator does).
  A catalog bar type with regime truth (``sage catalog synthetic`` writes it) is treated as labelled.
* **Losses**, summed per step over a mixed batch (``batch_synthetic`` labelled + ``batch_real``
  unlabelled windows): the beta-VAE loss of the encoder (per input value), class-balanced cross-entropy
  of the classifier (labelled windows only), pinball loss of the 9 forecast quantiles (windows with a
  target). Joint training shapes the regime vector to carry regime *and* forecast information while
  the VAE keeps it smooth and fitted to real feature distributions too.
* **Determinism.** ``torch.manual_seed``, a ``numpy.random.Generator(PCG64(seed))`` for batches,
  ``torch.use_deterministic_algorithms(True)`` and one thread: the same config on the same machine
  gives bitwise-identical weights (tested), so the shipped weights are reproducible by the command
  recorded in their manifest.
* **Evaluation** after training (recorded in the manifest ``metrics``): balanced accuracy and confusion
  matrix of the causal label on a validation synthetic seed, forecaster pinball loss, 10-90 coverage
  and direction hit rate on the validation seed and on every real held-out tail, label shares on real
  data.

The HMM baseline for the accuracy comparison (``hmmlearn`` Gaussian HMM, causal forward filtering) is
here too (:func:`fit_hmm_baseline`), used by ``benchmarks/bench_regime_models.py``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import msgspec
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from numba import njit

from sage.data.regimes import N_REGIMES, REGIME_NAMES
from sage.data.sample import DEFAULT_CATALOG, REPO_ROOT, SAMPLE_BAR_TYPES
from sage.data.synthetic import SyntheticMarketConfig, generate_bars
from sage.features import compute, strategic_rows
from sage.features.bars import to_arrays
from sage.features.schema import DEFAULT_SCHEMA, FeatureSchema
from sage.models.bundle import (
    DEFAULT_BUNDLE,
    BundleConfig,
    InputReference,
    RegimeModelBundle,
    RegimeNet,
    windows_from_rows,
)
from sage.models.forecaster import pinball_loss, standardised_forward_return
from sage.models.rde import beta_vae_loss
from sage.models.registry import ASSETS_DIR, MANIFEST_FILE, ModelLoadError, read_manifest

DEFAULT_OUT = REPO_ROOT / "runs" / "regime-default"
"""Where ``sage train regime`` writes by default (outside the package, so a run never silently replaces
the shipped weights; pass ``--out sage/assets/models/regime-default`` to do exactly that)."""

SHIPPED_COMMAND = "sage train regime --out sage/assets/models/regime-default"
"""The command that produced the shipped default weights (all other options at their defaults)."""


# -- configuration -----------------------------------------------------------------------------------


class SyntheticData(msgspec.Struct, frozen=True, kw_only=True):
    """Which synthetic markets to train and validate on (default market parameters, 1-minute bars)."""

    train_seeds: tuple[int, ...] = (101, 102, 103, 104)
    """Seeds of the training markets (default 101-104)."""
    bars_per_seed: int = 100_000
    """Bars per training market (default 100,000 = ~69 days of minutes, ~180 regime runs)."""
    val_seed: int = 201
    """Seed of the validation market reported in the manifest (default 201). The benchmark's held-out
    test seed (2024) is used by neither training nor validation."""
    val_bars: int = 50_000
    """Bars of the validation market (default 50,000)."""

    def __post_init__(self) -> None:
        if self.bars_per_seed < 1_000 or self.val_bars < 1_000:
            raise ValueError("synthetic markets need >= 1000 bars (the strategic warm-up alone is 539)")
        if self.val_seed in self.train_seeds:
            raise ValueError(f"val_seed {self.val_seed} is also a training seed")


class RegimeTrainConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Everything that determines a training run; equal configs give bitwise-equal weights."""

    seed: int = 0
    """Seed of weight initialisation, batch sampling and the VAE noise (default 0)."""
    architecture: BundleConfig = DEFAULT_BUNDLE
    """Model sizes (default: the compact bundle, see ``sage.models.bundle.DEFAULT_BUNDLE``)."""
    synthetic: SyntheticData = SyntheticData()
    """Labelled synthetic markets (default 4 x 100k training bars, 50k validation bars)."""
    catalog: str | None = "catalogs/sample"
    """Catalog with real bars, relative to the repo root or absolute (default the sample catalog;
    None = synthetic only)."""
    bar_types: tuple[str, ...] = SAMPLE_BAR_TYPES
    """Catalog bar types to train on (default: ES 1-min, EUR/USD 1-h, SPX and GOOG daily)."""
    holdout_fraction: float = 0.2
    """Tail share of each real series' windows held out of training (default 0.2)."""
    steps: int = 4000
    """Optimizer steps (default 4000; a few minutes on one core)."""
    batch_synthetic: int = 256
    """Labelled synthetic windows per step (default 256)."""
    batch_real: int = 64
    """Unlabelled real windows per step (default 64; 0 when there is no real data)."""
    lr: float = 3e-3
    """Peak AdamW learning rate (default 3e-3), reached after ``warmup_steps`` then cosine-decayed to 5 %."""
    warmup_steps: int = 200
    """Linear learning-rate warm-up (default 200 steps)."""
    weight_decay: float = 1e-4
    """AdamW weight decay (default 1e-4)."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (default 1.0)."""
    beta: float = 1.0
    """KL weight of the beta-VAE loss (default 1.0)."""
    vae_weight: float = 1.0
    """Weight of the beta-VAE loss, which is divided by the L * F values of a window (default 1.0)."""
    cls_weight: float = 1.0
    """Weight of the classifier's cross-entropy (default 1.0)."""
    forecast_weight: float = 1.0
    """Weight of the forecaster's pinball loss (default 1.0)."""
    class_balanced: bool = True
    """Weight the cross-entropy by inverse regime frequency (default True: the goal is balanced accuracy,
    and VOLATILE is only ~8 % of bars)."""
    name: str = "regime-default"
    """Model name written to the manifest (default ``regime-default``)."""
    version: str = "1.0.0"
    """Model version written to the manifest (default 1.0.0)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        for name in ("steps", "batch_synthetic"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.batch_real < 0 or self.warmup_steps < 0:
            raise ValueError("batch_real and warmup_steps must be >= 0")
        if not self.synthetic.train_seeds:
            raise ValueError("at least one synthetic training seed is needed (the classifier's labels)")


# -- data ----------------------------------------------------------------------------------------------


@dataclass
class Series:
    """One bar series prepared for training/evaluation: model-input rows, labels, forecast targets."""

    name: str
    source: str  # "synthetic" or "catalog"
    index: pd.DatetimeIndex  # bar close times
    rows: np.ndarray  # (n, F) float64 model-input rows; NaN while the features warm up
    labels: np.ndarray  # (n,) int64 regime codes, -1 = unknown
    target: np.ndarray  # (n,) standardised next-h log return; NaN where unavailable
    sigma: np.ndarray  # (n,) ewma_vol (per bar) used to standardise the target
    train_ends: np.ndarray  # window end indices used for training
    holdout_ends: np.ndarray  # window end indices held out (tail of real series)
    train_target: np.ndarray  # target with everything reaching into the held-out tail masked (NaN)
    meta: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """JSON-able description for the manifest (time ranges of the training and held-out windows)."""

        def iso(i: int) -> str:
            return self.index[int(i)].isoformat()

        out: dict[str, Any] = {
            "name": self.name,
            "source": self.source,
            "n_bars": len(self.index),
            **self.meta,
        }
        if self.train_ends.size:
            out["train_start"], out["train_end"] = iso(self.train_ends[0]), iso(self.train_ends[-1])
            out["train_windows"] = int(self.train_ends.size)
        if self.holdout_ends.size:
            out["holdout_start"], out["holdout_end"] = iso(self.holdout_ends[0]), iso(self.holdout_ends[-1])
            out["holdout_windows"] = int(self.holdout_ends.size)
        return out


def valid_window_ends(rows: np.ndarray, length: int) -> np.ndarray:
    """Indices ``t`` whose window ``rows[t - L + 1 .. t]`` exists and is all finite."""
    n = rows.shape[0]
    if n < length:
        return np.empty(0, dtype=np.int64)
    bad = np.concatenate([[0], np.cumsum(~np.isfinite(rows).all(axis=1))])
    ends = np.arange(length - 1, n)
    return ends[(bad[ends + 1] - bad[ends + 1 - length]) == 0].astype(np.int64)


def prepare_series(
    bars: pd.DataFrame,
    *,
    name: str,
    source: str,
    config: BundleConfig,
    schema: FeatureSchema = DEFAULT_SCHEMA,
    labels: np.ndarray | None = None,
    holdout_fraction: float = 0.0,
    meta: dict[str, Any] | None = None,
) -> Series:
    """Features, windows, labels and targets of one bar frame (``open..volume``, UTC index)."""
    length, horizon = config.inputs.window, config.forecaster.horizon
    rows = strategic_rows(bars, schema).to_numpy()[:, config.inputs.column_index()]
    sigma = compute(bars, schema)["ewma_vol"].to_numpy()
    target = standardised_forward_return(bars["close"].to_numpy(dtype=np.float64), sigma, horizon)
    lab = np.full(len(bars), -1, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    ends = valid_window_ends(rows, length)
    train_target = target.copy()
    holdout = np.empty(0, dtype=np.int64)
    if holdout_fraction > 0.0 and ends.size:
        split = int(ends[int(ends.size * (1.0 - holdout_fraction))])  # first held-out window end
        holdout = ends[ends >= split]
        ends = ends[ends < split]
        # A training target at t reads close[t + h]; none may come from the held-out tail.
        train_target[max(split - horizon, 0) :] = np.nan
    return Series(name, source, bars.index, rows, lab, target, sigma, ends, holdout, train_target, meta or {})


def synthetic_series(
    seed: int, n_bars: int, config: BundleConfig, schema: FeatureSchema = DEFAULT_SCHEMA
) -> Series:
    """A labelled synthetic market (default parameters) as a :class:`Series`."""
    market = SyntheticMarketConfig(seed=seed, n_bars=n_bars)
    bars = generate_bars(market)
    return prepare_series(
        bars,
        name=f"synthetic seed {seed}",
        source="synthetic",
        config=config,
        schema=schema,
        labels=bars["regime"].to_numpy(),
        meta={"seed": seed, "market": "SyntheticMarketConfig defaults (1-minute bars)"},
    )


def load_catalog_bars(catalog: str | Path, bar_type: str) -> pd.DataFrame:
    """Bars of ``bar_type`` from a ``ParquetDataCatalog`` as an OHLCV frame indexed by UTC close time."""
    from nautilus_trader.persistence.catalog import ParquetDataCatalog

    bars = ParquetDataCatalog(str(catalog)).bars(bar_types=[bar_type])
    if not bars:
        raise ValueError(f"catalog {catalog} has no bars of type {bar_type}")
    ts, o, h, lo, c, v = to_arrays(bars)
    index = pd.DatetimeIndex(
        np.asarray(ts, dtype=np.int64).view("datetime64[ns]"), name="ts_event"
    ).tz_localize("UTC")
    return pd.DataFrame({"open": o, "high": h, "low": lo, "close": c, "volume": v}, index=index)


def catalog_series(
    catalog: str | Path,
    bar_type: str,
    config: BundleConfig,
    holdout_fraction: float,
    schema: FeatureSchema = DEFAULT_SCHEMA,
) -> Series:
    """A catalog bar type as a :class:`Series`; labelled if the catalog holds its regime truth."""
    from sage.data.synthetic import read_truth

    bars = load_catalog_bars(catalog, bar_type)
    labels = None
    try:
        truth = read_truth(catalog, bar_type)
        labels = truth.reindex(bars.index).fillna(-1).to_numpy(dtype=np.int64)
    except FileNotFoundError:
        pass
    return prepare_series(
        bars,
        name=bar_type,
        source="catalog",
        config=config,
        schema=schema,
        labels=labels,
        holdout_fraction=holdout_fraction,
        meta={"bar_type": bar_type, "labelled": labels is not None},
    )


class _Pool:
    """Concatenated series for fast batch gathering: windows are ``rows[g - L + 1 .. g]`` by global index."""

    def __init__(self, series: Sequence[Series], length: int) -> None:
        self.length = length
        offsets = np.cumsum([0] + [len(s.rows) for s in series])
        self.rows = (
            torch.from_numpy(np.concatenate([s.rows for s in series]).astype(np.float32)) if series else None
        )
        self.labels = torch.from_numpy(np.concatenate([s.labels for s in series])) if series else None
        self.target = (
            torch.from_numpy(np.concatenate([s.train_target for s in series]).astype(np.float32))
            if series
            else None
        )
        self.ends = (
            np.concatenate([s.train_ends + off for s, off in zip(series, offsets)])
            if series
            else np.empty(0, np.int64)
        )
        self.offsets_in_window = torch.arange(-length + 1, 1)  # (L,)

    def __len__(self) -> int:
        return int(self.ends.size)

    def batch(self, rng: np.random.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``size`` random training windows: ``x (B, L, F)``, ``labels (B,)``, ``target (B,)``."""
        g = torch.from_numpy(self.ends[rng.integers(0, self.ends.size, size)])  # (B,) window ends
        assert self.rows is not None and self.labels is not None and self.target is not None
        x = self.rows[g[:, None] + self.offsets_in_window]  # (B, L, F)
        return x, self.labels[g], self.target[g]


# -- metrics -------------------------------------------------------------------------------------------


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, n: int = N_REGIMES) -> np.ndarray:
    """``(n, n)`` counts, rows = truth, columns = prediction."""
    return np.bincount(np.asarray(truth) * n + np.asarray(pred), minlength=n * n).reshape(n, n)


def balanced_accuracy(truth: np.ndarray, pred: np.ndarray, n: int = N_REGIMES) -> float:
    """Mean per-class recall over the classes present in ``truth``."""
    cm = confusion_matrix(truth, pred, n)
    support = cm.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(cm)[present] / support[present]))


def classification_metrics(truth: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Balanced accuracy, plain accuracy, per-regime recall and the confusion matrix (JSON-able)."""
    cm = confusion_matrix(truth, pred)
    support = cm.sum(axis=1)
    recall = {
        REGIME_NAMES[i]: (float(cm[i, i] / support[i]) if support[i] else None) for i in range(N_REGIMES)
    }
    return {
        "balanced_accuracy": balanced_accuracy(truth, pred),
        "accuracy": float(np.mean(np.asarray(truth) == np.asarray(pred))),
        "recall": recall,
        "confusion": cm.tolist(),
        "n": len(truth),
    }


def forecast_metrics(
    quantiles: np.ndarray,
    target: np.ndarray,
    levels: Sequence[float],
    unconditional: np.ndarray | None = None,
) -> dict[str, Any]:
    """Pinball loss, 10-90 (outermost) coverage, per-level hit rates and median direction accuracy.

    With ``unconditional`` (one fixed quantile vector, e.g. the training targets' empirical quantiles),
    also its pinball loss and the skill ``1 - pinball / pinball_unconditional`` (> 0: the model beats
    always forecasting the same distribution)."""
    ok = np.isfinite(target) & np.isfinite(quantiles).all(axis=1)
    q, z = quantiles[ok].astype(np.float64), target[ok]
    if z.size == 0:
        return {"n": 0}
    lv = np.asarray(levels)
    u = z[:, None] - q
    pinball = float(np.mean(np.maximum(lv * u, (lv - 1.0) * u)))
    median = q[:, len(lv) // 2]
    moving = z != 0.0
    extra: dict[str, Any] = {}
    if unconditional is not None:
        u0 = z[:, None] - np.asarray(unconditional, dtype=np.float64)[None, :]
        base = float(np.mean(np.maximum(lv * u0, (lv - 1.0) * u0)))
        extra = {"pinball_unconditional": base, "skill": 1.0 - pinball / base if base > 0 else None}
    return {
        "n": int(z.size),
        "pinball": pinball,
        "coverage_outer": float(np.mean((z >= q[:, 0]) & (z <= q[:, -1]))),
        "nominal_outer": float(lv[-1] - lv[0]),
        "below_level": {f"{level:g}": float(np.mean(z <= q[:, i])) for i, level in enumerate(lv)},
        "direction_hit_rate": float(np.mean(np.sign(median[moving]) == np.sign(z[moving])))
        if moving.any()
        else None,
        "mean_spread": float(np.mean(q[:, -1] - q[:, 0])),
        **extra,
    }


def evaluate(
    bundle: RegimeModelBundle, series: Series, ends: np.ndarray, unconditional: np.ndarray | None = None
) -> dict[str, Any]:
    """Metrics of ``bundle`` on the windows of ``series`` ending at ``ends`` (through the engine, exactly
    as the detector would compute them); ``unconditional``: see :func:`forecast_metrics`."""
    if ends.size == 0:
        return {"n": 0}
    length = bundle.window_length
    out = bundle.infer_batch(windows_from_rows(series.rows, length)[ends - length + 1])
    labels = np.argmax(out.probs, axis=1)
    result: dict[str, Any] = {
        "forecast": forecast_metrics(
            out.quantiles, series.target[ends], bundle.quantile_levels, unconditional
        ),
        "label_share": {REGIME_NAMES[i]: float(np.mean(labels == i)) for i in range(N_REGIMES)},
    }
    known = series.labels[ends] >= 0
    if known.any():
        result["classification"] = classification_metrics(series.labels[ends][known], labels[known])
    return result


def unconditional_quantiles(series: Sequence[Series], levels: Sequence[float]) -> np.ndarray:
    """Empirical quantiles of every finite training target (the no-skill forecast baseline)."""
    z = np.concatenate([s.train_target[s.train_ends] for s in series])
    return np.quantile(z[np.isfinite(z)], levels)


# -- training ------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train_regime` produced."""

    bundle: RegimeModelBundle
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    seconds: float
    out_dir: Path | None
    weights_sha256: str | None


def _lr_at(step: int, config: RegimeTrainConfig) -> float:
    """Linear warm-up, then cosine decay from ``lr`` to 5 % of it."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def _resolve_catalog(catalog: str | None) -> Path | None:
    if catalog is None:
        return None
    path = Path(catalog)
    return path if path.is_absolute() else REPO_ROOT / path


def load_training_data(
    config: RegimeTrainConfig, log: Callable[[str], None] = lambda _: None
) -> tuple[list[Series], list[Series], Series]:
    """``(synthetic training series, real series, synthetic validation series)`` for ``config``."""
    arch = config.architecture
    syn = []
    for seed in config.synthetic.train_seeds:
        log(f"synthetic market seed {seed}: {config.synthetic.bars_per_seed:,d} bars")
        syn.append(synthetic_series(seed, config.synthetic.bars_per_seed, arch))
    log(f"synthetic validation market seed {config.synthetic.val_seed}: {config.synthetic.val_bars:,d} bars")
    val = synthetic_series(config.synthetic.val_seed, config.synthetic.val_bars, arch)
    real: list[Series] = []
    catalog = _resolve_catalog(config.catalog)
    if catalog is not None:
        if not catalog.exists():
            raise FileNotFoundError(f"catalog {catalog} does not exist (build it with `sage catalog build`)")
        for bar_type in config.bar_types:
            log(f"catalog {catalog.name}: {bar_type}")
            real.append(catalog_series(catalog, bar_type, arch, config.holdout_fraction))
    for s in real:
        if (s.labels >= 0).any():  # a synthetic catalog with truth: it joins the labelled pool
            s.meta["used_as"] = "labelled"
    return syn, real, val


def train_regime(
    config: RegimeTrainConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    data: tuple[list[Series], list[Series], Series] | None = None,
    command: str | None = None,
) -> TrainResult:
    """Train the bundle described by ``config``; save it to ``out_dir`` (if given) with its manifest.

    Deterministic: the same config (and data) on the same machine gives bitwise-identical weights.
    ``data`` lets callers (tests) pass prepared series instead of building them from ``config``.
    """
    config = config if config is not None else RegimeTrainConfig()
    started = time.perf_counter()
    say = log or (lambda _: None)
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        syn, real, val = data if data is not None else load_training_data(config, say)
        arch = config.architecture
        labelled = syn + [s for s in real if (s.labels >= 0).any()]
        unlabelled = [s for s in real if not (s.labels >= 0).any()]
        pool_l = _Pool(labelled, arch.inputs.window)
        pool_u = _Pool(unlabelled, arch.inputs.window)
        batch_real = config.batch_real if len(pool_u) else 0

        torch.manual_seed(config.seed)
        rng = np.random.Generator(np.random.PCG64(config.seed))
        net = RegimeNet(arch)
        net.train()
        optim = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        levels = torch.tensor(arch.forecaster.levels, dtype=torch.float32)
        assert pool_l.labels is not None
        counts = np.bincount(pool_l.labels.numpy()[pool_l.ends], minlength=N_REGIMES).astype(np.float64)
        class_weight = None
        if config.class_balanced:
            class_weight = torch.tensor(
                counts.sum() / (N_REGIMES * np.maximum(counts, 1.0)), dtype=torch.float32
            )
        history: list[dict[str, float]] = []
        n_values = arch.inputs.window * len(arch.inputs.columns)  # L * F, normalises the VAE loss
        with _ProgressBar(config.steps, progress) as bar:
            for step in range(config.steps):
                for group in optim.param_groups:
                    group["lr"] = _lr_at(step, config)
                # Mixed batch: labelled synthetic windows first, then unlabelled real windows.
                x_l, y_l, t_l = pool_l.batch(rng, config.batch_synthetic)  # (Bs, L, F), (Bs,), (Bs,)
                if batch_real:
                    x_u, _, t_u = pool_u.batch(rng, batch_real)  # (Br, L, F), (Br,)
                    x, target = torch.cat([x_l, x_u]), torch.cat([t_l, t_u])  # (B, L, F), (B,)
                else:
                    x, target = x_l, t_l
                out = net(x)  # vae: mu/logvar (B, Z), recon (B, L, F); logits (B, 4); quantiles (B, Q)
                vae, recon, kl = beta_vae_loss(x, out.vae, config.beta)
                ce = F.cross_entropy(out.logits[: x_l.shape[0]], y_l, weight=class_weight)
                has_target = torch.isfinite(target)  # (B,) False at series ends and in flat markets
                pin = pinball_loss(out.quantiles[has_target], target[has_target], levels)
                loss = (
                    config.vae_weight * vae / n_values + config.cls_weight * ce + config.forecast_weight * pin
                )

                optim.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
                optim.step()

                record = {
                    "loss": loss.item(),
                    "recon": recon.item() / n_values,
                    "kl": kl.item(),
                    "ce": ce.item(),
                    "pinball": pin.item(),
                }
                history.append(record)
                bar.update(step, record)

        bundle = RegimeModelBundle(net)
        say("evaluating")
        unconditional = unconditional_quantiles(labelled + unlabelled, arch.forecaster.levels)
        metrics: dict[str, Any] = {
            "validation_synthetic": evaluate(bundle, val, val.train_ends, unconditional)
        }
        metrics["validation_synthetic"]["seed"] = config.synthetic.val_seed
        metrics["real_holdout"] = {
            s.name: evaluate(bundle, s, s.holdout_ends, unconditional) for s in real if s.holdout_ends.size
        }
        metrics["real_train"] = {s.name: evaluate(bundle, s, s.train_ends, unconditional) for s in real}
        metrics["unconditional_quantiles"] = [float(v) for v in unconditional]
        say("summarising the training distribution for the drift monitors")
        reference = training_reference(
            bundle, labelled, unlabelled, config.batch_synthetic, batch_real, arch.inputs.window
        )
        last = history[-min(100, len(history)) :]
        metrics["final_train_losses"] = {k: float(np.mean([h[k] for h in last])) for k in last[0]}
        seconds = time.perf_counter() - started

        sha = None
        target_dir = Path(out_dir) if out_dir is not None else None
        if target_dir is not None:
            training = {
                "command": command or "sage.training.regime.train_regime(RegimeTrainConfig(...))",
                "config": msgspec.to_builtins(config),
                "seconds": round(seconds, 1),
                "threads": 1,
                "torch": str(torch.__version__),
                "synthetic": [s.describe() for s in syn],
                "validation": val.describe(),
                "real": [s.describe() for s in real],
                "catalog": config.catalog,
                "classifier_labels": "synthetic market truth only (real data: VAE + forecaster losses)",
            }
            manifest = bundle.save(
                target_dir,
                name=config.name,
                version=config.version,
                training=training,
                metrics=metrics,
                reference=reference,
            )
            sha = manifest.weights_sha256
        bundle.reference = reference
        return TrainResult(bundle, metrics, history, seconds, target_dir, sha)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def training_reference(
    bundle: RegimeModelBundle,
    labelled: Sequence[Series],
    unlabelled: Sequence[Series],
    batch_labelled: int,
    batch_unlabelled: int,
    length: int,
    grid: int = 200,
) -> InputReference:
    """The training distribution of the model-input row and of the model's predicted label.

    Rows are the newest row of every training window (the per-bar row the detector's drift monitor
    scores), each pool weighted by its share of a training batch and spread evenly over its windows --
    the distribution the optimizer actually sampled. Predictions are the trained model's argmax on the
    same windows. Deterministic: a pure function of the trained weights and the data.
    """
    rows, weights, labels = [], [], []
    pools = ((labelled, batch_labelled), (unlabelled, batch_unlabelled))
    total = float(batch_labelled + batch_unlabelled)
    for series, share in pools:
        n_windows = sum(int(s.train_ends.size) for s in series)
        if share == 0 or n_windows == 0:
            continue
        for s in series:
            ends = s.train_ends
            if ends.size == 0:
                continue
            rows.append(s.rows[ends])
            weights.append(np.full(ends.size, share / total / n_windows))
            windows = windows_from_rows(s.rows, length)[ends - length + 1]
            labels.append(bundle.infer_batch(windows).labels.astype(np.int64))
    return InputReference.from_rows(
        np.concatenate(rows),
        np.concatenate(weights),
        np.concatenate(labels),
        columns=bundle.input_names,
        grid=grid,
        weighting=(
            f"newest row of every training window; labelled pool {batch_labelled / total:.3f}, unlabelled pool "
            f"{batch_unlabelled / total:.3f} (batch shares), uniform within a pool"
        ),
    )


class _ProgressBar:
    """A rich progress bar over the optimizer steps showing smoothed losses (a no-op when hidden)."""

    def __init__(self, steps: int, show: bool, every: int = 25) -> None:
        self.steps, self.show, self.every = steps, show, every
        self.smooth: dict[str, float] = {}
        self._bar: Any = None

    def __enter__(self) -> Self:
        if self.show:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]training[/]"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("train", total=self.steps, status="")
        return self

    def update(self, step: int, record: dict[str, float]) -> None:
        """Record the losses of ``step`` (0-based); redraw every ``every`` steps and at the end."""
        for k, v in record.items():
            self.smooth[k] = v if k not in self.smooth else 0.98 * self.smooth[k] + 0.02 * v
        done = step + 1
        if self._bar is not None and (done % self.every == 0 or done == self.steps):
            status = " ".join(f"{k} {self.smooth[k]:.3f}" for k in ("loss", "ce", "pinball", "recon"))
            self._bar.update(self._task, completed=done, status=status)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


# -- HMM baseline -------------------------------------------------------------------------------------


@njit(cache=True)
def _forward_filter(
    log_b: np.ndarray, log_start: np.ndarray, transmat: np.ndarray
) -> np.ndarray:  # pragma: no cover
    """Causal forward recursion: ``p_t ∝ b_t * (p_{t-1} @ A)`` with ``p_0 ∝ b_0 * start``.

    ``log_b (n, K)`` are the emission log-likelihoods; rows of NaN (invalid bars) carry the prediction
    forward without an update. Returns the filtered posteriors ``(n, K)`` (NaN before the first valid
    row). Only past and present observations enter row ``t``: no smoothing, no Viterbi.
    """
    n, k = log_b.shape
    out = np.full((n, k), np.nan)
    p = np.empty(k)
    started = False
    for t in range(n):
        if not started:
            if np.isnan(log_b[t, 0]):
                continue
            for j in range(k):
                p[j] = log_start[j]  # log prior
            started = True
            prior = np.exp(p - p.max())
        else:
            prior = p @ transmat  # predict
        if np.isnan(log_b[t, 0]):
            p = prior / prior.sum()
            out[t] = p
            continue
        lb = log_b[t] - log_b[t].max()
        post = prior * np.exp(lb)
        s = post.sum()
        if s <= 0.0 or not np.isfinite(s):  # every state vanishingly unlikely: fall back to the prior
            post = prior.copy()
            s = post.sum()
        p = post / s
        out[t] = p
    return out


@dataclass
class HMMBaseline:
    """A Gaussian HMM fitted on training features, filtered causally, states mapped to regimes."""

    startprob: np.ndarray  # (K,)
    transmat: np.ndarray  # (K, K)
    means: np.ndarray  # (K, F)
    covars: np.ndarray  # (K, F, F)
    state_to_regime: np.ndarray  # (K,) regime code of each hidden state
    n_fit_rows: int = 0  # rows the HMM was fitted on

    def log_emissions(self, rows: np.ndarray) -> np.ndarray:
        """``(n, K)`` Gaussian log-densities of each row under each state (NaN for non-finite rows)."""
        n, f = rows.shape
        out = np.full((n, len(self.means)), np.nan)
        ok = np.isfinite(rows).all(axis=1)
        x = rows[ok]
        for k in range(len(self.means)):
            chol = np.linalg.cholesky(self.covars[k])
            sol = np.linalg.solve(chol, (x - self.means[k]).T)  # (F, m)
            log_det = 2.0 * np.sum(np.log(np.diag(chol)))
            out[ok, k] = -0.5 * (np.sum(sol * sol, axis=0) + log_det + f * np.log(2.0 * np.pi))
        return out

    def filter(self, rows: np.ndarray) -> np.ndarray:
        """Causally filtered state posteriors ``(n, K)`` (forward algorithm only)."""
        with np.errstate(divide="ignore"):
            log_start = np.log(self.startprob)
        return _forward_filter(self.log_emissions(rows), log_start, self.transmat)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Causal regime label per row (-1 before the first valid row)."""
        post = self.filter(rows)
        ok = np.isfinite(post).all(axis=1)
        out = np.full(rows.shape[0], -1, dtype=np.int64)
        out[ok] = self.state_to_regime[np.argmax(post[ok], axis=1)]
        return out


def fit_hmm_baseline(
    series: Sequence[Series],
    n_states: int = N_REGIMES,
    seed: int = 0,
    n_iter: int = 50,
    max_rows: int = 200_000,
) -> HMMBaseline:
    """Fit ``hmmlearn.hmm.GaussianHMM`` (full covariances) on the finite rows of ``series`` (each a
    separate sequence, at most ``max_rows`` rows in total) and map its states to regimes.

    Mapping: with as many states as regimes, the one-to-one assignment maximising the summed per-regime
    recall on the training series (Hungarian algorithm; the HMM is unsupervised, so its state numbers are
    arbitrary); with more states, each state goes to the regime it over-represents most (many-to-one).
    The mapping uses the *causally filtered* states on the training series, as at test time.
    """
    from hmmlearn.hmm import GaussianHMM
    from scipy.optimize import linear_sum_assignment

    chunks, lengths = [], []
    budget = max_rows
    for s in series:
        ok = np.isfinite(s.rows).all(axis=1)
        first = int(np.argmax(ok))
        x = s.rows[first:][: max(budget, 0)]
        x = x[np.isfinite(x).all(axis=1)]
        if len(x):
            chunks.append(x)
            lengths.append(len(x))
            budget -= len(x)
    model = GaussianHMM(n_components=n_states, covariance_type="full", n_iter=n_iter, random_state=seed)
    model.fit(np.concatenate(chunks), lengths)
    base = HMMBaseline(
        model.startprob_.copy(),
        model.transmat_.copy(),
        model.means_.copy(),
        model.covars_.copy(),
        np.arange(n_states) % N_REGIMES,
        n_fit_rows=int(sum(lengths)),
    )
    counts = np.zeros((n_states, N_REGIMES))
    for s in series:
        post = base.filter(s.rows)
        ok = np.isfinite(post).all(axis=1) & (s.labels >= 0)
        np.add.at(counts, (np.argmax(post[ok], axis=1), s.labels[ok]), 1.0)
    share = counts / np.maximum(counts.sum(axis=0, keepdims=True), 1.0)  # P(state | regime)
    if n_states == N_REGIMES:
        states, regimes = linear_sum_assignment(-share)
        base.state_to_regime[states] = regimes
    else:
        base.state_to_regime = np.argmax(share, axis=1)
    return base


# -- command line ------------------------------------------------------------------------------------


def add_train_regime_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``sage train regime`` (wired by ``sage.cli``)."""
    parser.add_argument(
        "--catalog",
        type=Path,
        default=DEFAULT_CATALOG,
        help=f"catalog with real bars (default: {DEFAULT_CATALOG})",
    )
    parser.add_argument(
        "--bar-type",
        action="append",
        dest="bar_types",
        metavar="BAR_TYPE",
        help="catalog bar type to train on (repeatable; default: the 4 sample bar types)",
    )
    parser.add_argument("--synthetic-only", action="store_true", help="train on synthetic markets only")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default 4000)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument(
        "--synthetic-bars", type=int, default=None, help="bars per synthetic training market (default 100000)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"output directory (default {DEFAULT_OUT.relative_to(REPO_ROOT)})",
    )
    parser.add_argument("--name", default="regime-default", help="model name in the manifest")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> RegimeTrainConfig:
    """The :class:`RegimeTrainConfig` the parsed ``sage train regime`` options describe."""
    base = RegimeTrainConfig()
    changes: dict[str, Any] = {"seed": args.seed, "name": args.name}
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.synthetic_bars is not None:
        changes["synthetic"] = msgspec.structs.replace(base.synthetic, bars_per_seed=args.synthetic_bars)
    if args.synthetic_only:
        changes["catalog"] = None
    else:
        catalog = Path(args.catalog).resolve()
        try:
            changes["catalog"] = str(catalog.relative_to(REPO_ROOT))
        except ValueError:
            changes["catalog"] = str(catalog)
    if args.bar_types:
        changes["bar_types"] = tuple(args.bar_types)
    return msgspec.structs.replace(base, **changes)


def run_train_regime(args: argparse.Namespace, console: Any = None) -> int:
    """``sage train regime``: train, save, print a metrics summary. Returns the exit code (0)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(soft_wrap=True)
    config = config_from_args(args)
    command = "sage train regime" + "".join(f" {flag}" for flag in _explicit_flags(args))
    result = train_regime(
        config,
        out_dir=args.out,
        progress=not args.no_progress,
        log=lambda m: console.print(f"[dim]{m}[/]"),
        command=command,
    )
    m = result.metrics
    cls = m["validation_synthetic"].get("classification", {})
    table = Table(title=f"regime model {config.name}: validation synthetic seed {config.synthetic.val_seed}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row(
        "balanced accuracy (causal label vs truth)", f"{cls.get('balanced_accuracy', float('nan')):.3f}"
    )
    for name, rec in cls.get("recall", {}).items():
        table.add_row(f"  recall {name}", "n/a" if rec is None else f"{rec:.3f}")
    fc = m["validation_synthetic"]["forecast"]
    table.add_row("forecast pinball (sigma units)", f"{fc['pinball']:.4f}")
    table.add_row("forecast skill vs unconditional quantiles", f"{fc.get('skill', float('nan')):+.4f}")
    table.add_row("forecast 10-90 coverage (nominal 0.80)", f"{fc['coverage_outer']:.3f}")
    console.print(table)
    if m["real_holdout"]:
        real = Table(
            title="real data, held-out tails (never trained on); labels = share BULL/BEAR/SIDEWAYS/VOLATILE"
        )
        for col in ("bar type", "windows", "pinball", "skill", "cover", "hit", "labels"):
            real.add_column(col, justify="left" if col in ("bar type", "labels") else "right", no_wrap=True)
        for name, r in m["real_holdout"].items():
            f = r["forecast"]
            shares = "/".join(f"{r['label_share'][n]:.2f}" for n in REGIME_NAMES)
            hit, skill = f.get("direction_hit_rate"), f.get("skill")
            short = name.replace("-EXTERNAL", "").replace("-LAST", "").replace("-MID", "")
            real.add_row(
                short,
                f"{f['n']:,d}",
                f"{f['pinball']:.4f}",
                "n/a" if skill is None else f"{skill:+.3f}",
                f"{f['coverage_outer']:.3f}",
                "n/a" if hit is None else f"{hit:.3f}",
                shares,
            )
        console.print(real)
    console.print(f"trained in {result.seconds:.1f} s; saved to {result.out_dir}")
    console.print(f"weights sha256 {result.weights_sha256}")
    shipped = ASSETS_DIR / "regime-default"
    if (shipped / MANIFEST_FILE).exists() and config == RegimeTrainConfig():
        try:
            same = read_manifest(shipped).weights_sha256 == result.weights_sha256
            console.print(f"identical to the shipped default weights: {'yes' if same else 'NO'}")
        except ModelLoadError:
            pass
    return 0


def _explicit_flags(args: argparse.Namespace) -> list[str]:
    flags = []
    if args.synthetic_only:
        flags.append("--synthetic-only")
    if args.steps is not None:
        flags.append(f"--steps {args.steps}")
    if args.seed != 0:
        flags.append(f"--seed {args.seed}")
    if args.synthetic_bars is not None:
        flags.append(f"--synthetic-bars {args.synthetic_bars}")
    for bt in args.bar_types or []:
        flags.append(f"--bar-type {bt}")
    if args.name != "regime-default":
        flags.append(f"--name {args.name}")
    try:
        flags.append(f"--out {Path(args.out).resolve().relative_to(REPO_ROOT)}")
    except ValueError:
        flags.append(f"--out {args.out}")
    return flags
