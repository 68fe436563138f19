"""The regime detector: features -> learned models -> conformal calibration -> fallback chain.

``load_detector(name)`` gives a :class:`RegimeDetector` with two forms that produce the same rows:

* ``detector.stream().update(bar)`` -- one bar at a time (the :class:`~sage.regime.actor.RegimeActor`,
  live nodes);
* ``detector.batch(bars)`` -- a whole history (``sage regime precompute``), with features and model
  outputs computed vectorised.

Why they agree exactly: both feed the *same* per-bar core (:class:`_DetectorCore`) with the same
inputs. Features are bitwise equal between ``compute``/``strategic_rows`` and their streaming forms
(``sage.features``), and model outputs between ``infer_rows`` and ``infer`` (``sage.models.bundle``:
one numba forward pass per window). Everything stateful -- rule detectors, adaptive conformal,
health monitors, the fallback chain -- then runs bar by bar in the core, identically for both.

Two fields are live measurements and so are *not* part of that contract: ``latency_us`` (NaN in
``batch``) and the model-latency guard (a level-1/2 model call slower than ``latency_budget_us`` on
the previous bar sends the chain down; only the stream measures it). Everything else is equal.

Per bar, in the core:

1. ``HealthMonitor.on_bar`` validates the raw bar (NaN/inf/non-positive, optional time gaps).
2. The rule (level 3) and volatility (level 4) detectors consume the feature row.
3. Adaptive conformal first resolves the forecast made ``h`` bars ago with the realised log return
   ``log(c_t / c_{t-h})``, then calibrates this bar's 10%-90% band (model quantiles, standardised
   units, times ``ewma_vol * sqrt(h)``). ``uncertainty`` is the calibrated interval's width in
   log-return units; NaN while the calibrator has too few scores (the chain then publishes level 2).
4. After ``drift_reference_bars`` valid model-input rows, a PSI drift monitor fitted on them (a causal
   self-reference: no training-set statistics are shipped with the model yet) watches later rows;
   an alarm sends the chain below the model levels until it clears.
5. :class:`~sage.regime.fallback.FallbackChain` publishes the highest healthy level.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec
import numpy as np
import pandas as pd
from nautilus_trader.model.data import Bar

from sage.data.regimes import Regime
from sage.features import FeatureStream, compute
from sage.features.bars import bar_values, to_arrays
from sage.features.matrices import MatrixStream, strategic_rows
from sage.models.bundle import RegimeModelBundle
from sage.models.registry import ModelLoadError
from sage.regime.conformal import AdaptiveConformal
from sage.regime.fallback import ChainOutput, FallbackChain, FallbackConfig, Level, LevelOutput
from sage.regime.health import (
    DriftConfig,
    DriftMonitor,
    HealthFlag,
    HealthMonitor,
    InputValidator,
    LatencyMonitor,
)
from sage.regime.rules import RuleDetector, VolatilityDetector

#: Columns of :meth:`RegimeDetector.batch` and of each streaming row, in order.
OUTPUT_COLUMNS: tuple[str, ...] = (
    "label", "p_bull", "p_bear", "p_sideways", "p_volatile",
    *(f"v{i}" for i in range(8)),
    "uncertainty", "level", "confidence", "latency_us", "drift", "health_flags",
)  # fmt: skip
RULES_ONLY = "rules"
"""Detector name that runs without a learned model (levels 3-5 only)."""


class DetectorConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How a detector is assembled. Every field has a default that suits 1-minute to daily bars."""

    model: str = "default"
    """Model bundle name (``sage/assets/models/regime-<name>``), a checkpoint directory, or ``"rules"``
    for a detector without a learned model."""
    coverage: float = 0.8
    """Nominal coverage of the calibrated forecast interval whose width is published as uncertainty."""
    aci_gamma: float = 0.01
    """Adaptive-conformal step size (``alpha_{t+1} = alpha_t + gamma * (alpha - err_t)``)."""
    aci_window: int = 500
    """Conformity scores remembered by the adaptive calibrator."""
    latency_budget_us: float = 5000.0
    """A model call slower than this (streaming only) sends the chain below the model levels."""
    drift_reference_bars: int = 2000
    """Valid model-input rows used as the drift reference; 0 disables drift monitoring."""
    drift: DriftConfig = DriftConfig()
    """PSI/KS drift monitor settings (thresholds, window)."""
    fallback: FallbackConfig = FallbackConfig()
    """Fallback-chain settings (re-entry probes, prior, level-5 decay)."""
    bar_interval_ns: int | None = None
    """Expected bar spacing for gap detection; None disables gap checks (sessions have gaps)."""
    max_gap_bars: float = 3.0
    """A timestamp step above this many bar intervals is an input gap (when ``bar_interval_ns`` set)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.coverage < 1.0:
            raise ValueError(f"DetectorConfig.coverage must be in (0, 1), got {self.coverage}")
        if self.drift_reference_bars < 0:
            raise ValueError(f"DetectorConfig.drift_reference_bars must be >= 0, got {self.drift_reference_bars}")


def load_detector(name: str = "default", config: DetectorConfig | None = None) -> RegimeDetector:
    """A ready detector: ``name`` is a shipped model name, a checkpoint directory, or ``"rules"``.

    Raises :class:`~sage.models.registry.ModelLoadError` (naming the problem) when the checkpoint is
    missing, corrupt, foreign or trained on other features. Callers that must keep publishing (the
    actor) catch it and run ``"rules"``: the fallback chain then starts at level 3.
    """
    config = msgspec.structs.replace(config or DetectorConfig(), model=name)
    bundle = None if name == RULES_ONLY else RegimeModelBundle.load(name)
    return RegimeDetector(config, bundle)


class RegimeDetector:
    """A configured detector; cheap to create streams from (each stream has its own state)."""

    def __init__(self, config: DetectorConfig, bundle: RegimeModelBundle | None) -> None:
        self.config = config
        self.bundle = bundle
        schema = bundle.feature_schema if bundle is not None else None
        self._feature_names = tuple(FeatureStream(schema).names)
        self.schema = schema

    @property
    def model_version(self) -> str:
        """``<name>@<version>`` of the bundle, or ``rules`` without one."""
        if self.bundle is None or self.bundle.manifest is None:
            return RULES_ONLY if self.bundle is None else "untracked"
        m = self.bundle.manifest
        return f"{m.name}@{m.version}"

    def stream(self, *, clock: Callable[[], int] = time.perf_counter_ns) -> DetectorStream:
        return DetectorStream(self, clock=clock)

    def batch(self, bars: pd.DataFrame | Sequence[Bar]) -> pd.DataFrame:
        """Rows for every bar, indexed like ``sage.features.compute`` indexes them."""
        features = compute(bars, self.schema)
        ts, o, h, l, c, v = to_arrays(bars)
        n = len(ts)
        model = _empty_model_outputs(n)
        if self.bundle is not None:
            rows = strategic_rows(bars, self.schema)
            out = self.bundle.infer_rows(rows)
            model = (out.vectors, out.probs, out.quantiles, self.bundle.select_rows(rows))
        core = _DetectorCore(self, clock=_zero_clock)
        feat = features.to_numpy()
        records = [
            core.step(int(ts[i]), o[i], h[i], l[i], c[i], v[i], feat[i],
                      model[0][i], model[1][i], model[2][i], model[3][i], math.nan, False)
            for i in range(n)
        ]  # fmt: skip
        return _frame(records, features.index)


class DetectorStream:
    """One bar at a time; ``update`` returns the bar's row as a dict keyed by :data:`OUTPUT_COLUMNS`."""

    def __init__(self, detector: RegimeDetector, *, clock: Callable[[], int] = time.perf_counter_ns) -> None:
        self.detector = detector
        self.clock = clock
        self._features = FeatureStream(detector.schema)
        bundle = detector.bundle
        self._matrix = MatrixStream("strategic", detector.schema) if bundle is not None else None
        self._core = _DetectorCore(detector, clock=clock)
        self._model_slow = False
        self.last: ChainOutput | None = None

    @property
    def chain(self) -> FallbackChain:
        return self._core.chain

    def update(self, bar: Bar | Mapping[str, Any]) -> dict[str, Any]:
        started = self.clock()
        ts, o, h, l, c, v = bar_values(bar)
        feat = self._features.update_values(ts, o, h, l, c, v)
        bundle = self.detector.bundle
        if bundle is None or self._matrix is None:
            vec, probs, quant, sel = _NAN8, _NAN4, _NAN9, _NAN1
        else:
            matrix = self._matrix.update({"ts": ts, "open": o, "high": h, "low": l, "close": c, "volume": v})
            t0 = self.clock()
            window = bundle.select(matrix)
            out = bundle.infer(window)
            model_us = (self.clock() - t0) / 1_000.0
            vec, probs, quant, sel = out.vector, out.probs, out.quantiles, window[-1]
        record = self._core.step(ts, o, h, l, c, v, feat, vec, probs, quant, sel, math.nan, self._model_slow)
        if bundle is not None:
            self._model_slow = model_us > self.detector.config.latency_budget_us
        latency_us = (self.clock() - started) / 1_000.0
        self._core.health.on_latency(latency_us)
        record["latency_us"] = latency_us
        self.last = self._core.last
        return record


# -- the shared per-bar core ---------------------------------------------------------------------------

_NAN1 = np.full(1, np.nan, dtype=np.float32)
_NAN4 = np.full(4, np.nan, dtype=np.float32)
_NAN8 = np.full(8, np.nan, dtype=np.float32)
_NAN9 = np.full(9, np.nan, dtype=np.float32)


def _zero_clock() -> int:
    return 0


def _empty_model_outputs(n: int) -> tuple[np.ndarray, ...]:
    return (np.full((n, 8), np.nan, np.float32), np.full((n, 4), np.nan, np.float32),
            np.full((n, 9), np.nan, np.float32), np.full((n, 1), np.nan, np.float32))  # fmt: skip


class _DetectorCore:
    """Everything stateful after features and model outputs; one ``step`` per bar, in bar order."""

    def __init__(self, detector: RegimeDetector, *, clock: Callable[[], int]) -> None:
        cfg = detector.config
        names = detector._feature_names
        self.config = cfg
        self.rules = RuleDetector(names)
        self.vol = VolatilityDetector(names)
        self._sigma_index = names.index("ewma_vol")
        bundle = detector.bundle
        self.horizon = bundle.horizon if bundle is not None else 1
        self.aci = AdaptiveConformal(
            alpha=1.0 - cfg.coverage, gamma=cfg.aci_gamma, window=cfg.aci_window, horizon=self.horizon
        )
        self.health = HealthMonitor(
            LatencyMonitor(budget_us=cfg.latency_budget_us),
            InputValidator(cfg.bar_interval_ns, cfg.max_gap_bars),
        )
        self._reference: list[np.ndarray] = []
        self._closes: deque[float] = deque(maxlen=self.horizon + 1)
        has_model = bundle is not None
        model_ok = self._model_ok
        self.chain = FallbackChain(
            [
                Level(self._level1, "model+conformal", health_check=model_ok, requires_uncertainty=True)
                if has_model else None,
                Level(self._level2, "model", health_check=model_ok) if has_model else None,
                Level(lambda ctx: ctx["rules"], "rules"),
                Level(lambda ctx: ctx["vol"], "volatility"),
            ],
            cfg.fallback,
            clock=clock,
        )  # fmt: skip
        self.last: ChainOutput | None = None

    @staticmethod
    def _model_ok(ctx: dict[str, Any]) -> bool:
        return not ctx["drift_alarm"] and not ctx["model_slow"]

    @staticmethod
    def _level1(ctx: dict[str, Any]) -> LevelOutput:
        return LevelOutput(ctx["probs"], ctx["vector"], uncertainty=ctx["width"])

    @staticmethod
    def _level2(ctx: dict[str, Any]) -> LevelOutput:
        return LevelOutput(ctx["probs"], ctx["vector"])

    def step(
        self, ts: int, o: float, h: float, l: float, c: float, v: float,
        feat: np.ndarray, vector: np.ndarray, probs: np.ndarray, quantiles: np.ndarray,
        model_input: np.ndarray, latency_us: float, model_slow: bool,
    ) -> dict[str, Any]:  # fmt: skip
        issues = self.health.on_bar(ts, o, h, l, c, v)
        self._track_drift(model_input)
        rules_p = self.rules.update(feat)
        vol_p = self.vol.update(feat)
        width = self._calibrate(c, feat[self._sigma_index], quantiles)
        flags = self.health.log_changes()  # read once per bar: the flag arithmetic is not free
        ctx = {
            "probs": probs.astype(np.float64),
            "vector": vector.astype(np.float64),
            "width": width,
            "rules": rules_p,
            "vol": vol_p,
            "drift_alarm": bool(flags & HealthFlag.DRIFT_ALARM),
            "model_slow": model_slow,
        }
        out = self.chain.step(
            ctx, input_ok=not issues, health_flags=int(flags),
            drift=self.health.drift_score, ts=ts,
        )  # fmt: skip
        self.health.on_prediction(out.probabilities)
        self.last = out
        return _record(out, latency_us)

    def _calibrate(self, close: float, sigma: float, quantiles: np.ndarray) -> float:
        """Resolve the forecast made ``h`` bars ago, then calibrate this bar's band; return its width."""
        self._closes.append(close)
        if len(self._closes) == self.horizon + 1:
            past = self._closes[0]
            y = math.log(close / past) if close > 0.0 and past > 0.0 and math.isfinite(close + past) else math.nan
            self.aci.update(y)
        scale = sigma * math.sqrt(self.horizon)
        lo, hi = self.aci.interval(float(quantiles[0]) * scale, float(quantiles[-1]) * scale)
        width = hi - lo
        return width if math.isfinite(width) else math.nan

    def _track_drift(self, model_input: np.ndarray) -> None:
        n_ref = self.config.drift_reference_bars
        if n_ref == 0 or model_input.shape[0] <= 1:
            return
        if self.health.drift is None:
            if np.isfinite(model_input).all():
                self._reference.append(np.asarray(model_input, dtype=np.float64))
                if len(self._reference) == n_ref:
                    self.health.drift = DriftMonitor(self.config.drift).fit(np.vstack(self._reference))
                    self._reference = []
            return
        self.health.on_features(model_input)


def _record(out: ChainOutput, latency_us: float) -> dict[str, Any]:
    p = out.probabilities
    row: dict[str, Any] = {
        "label": Regime(out.label).name,
        "p_bull": float(p[0]), "p_bear": float(p[1]), "p_sideways": float(p[2]), "p_volatile": float(p[3]),
    }  # fmt: skip
    for i, x in enumerate(out.vector):
        row[f"v{i}"] = float(x)
    row.update(
        uncertainty=float(out.uncertainty), level=int(out.level), confidence=float(out.confidence),
        latency_us=latency_us, drift=float(out.drift), health_flags=int(out.health_flags),
    )  # fmt: skip
    return row


def _frame(records: list[dict[str, Any]], index: pd.Index) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records, columns=list(OUTPUT_COLUMNS))
    frame.index = index
    return frame


__all__ = [
    "OUTPUT_COLUMNS", "RULES_ONLY", "DetectorConfig", "DetectorStream", "ModelLoadError", "RegimeDetector",
    "load_detector",
]  # fmt: skip
