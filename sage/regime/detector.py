"""The regime detector: features -> learned models -> conformal calibration -> fallback chain.

``load_detector(name)`` gives a :class:`RegimeDetector` with two forms that produce the same rows:

* ``detector.stream().update(bar)`` -- one bar at a time (the :class:`~sage.regime.actor.RegimeActor`,
  live nodes);
* ``detector.batch(bars)`` -- a whole history (``sage regime precompute``), with features and model
  outputs computed vectorised.

Why they agree exactly: features are bitwise equal between ``compute``/``strategic_rows`` and their
streaming forms (``sage.features``), model outputs between ``infer_rows`` and ``infer``
(``sage.models.bundle``: one numba forward pass per window), and everything stateful after them -- input
validation, drift, rule detectors, adaptive conformal, health bits, the fallback chain -- is one compiled
per-bar function, :func:`sage.regime.kernel.detector_step`. The stream calls it once per bar; ``batch``
runs :func:`~sage.regime.kernel.detector_run`, which is only a loop over the same function.

Two fields are live measurements and so are *not* part of that contract: ``latency_us`` (NaN in
``batch``) and the latency bits: the model-latency guard (a level-1/2 model call slower than
``latency_budget_us`` on the previous bar sends the chain down) and ``LATENCY_BUDGET_EXCEEDED``
are only measured by the stream. Everything else is equal.

Per bar, in the kernel:

1. The raw bar is validated (NaN/inf/non-positive, optional time gaps): an invalid bar skips the
   input-dependent levels for this bar.
2. Feature drift: the newest model-input row is scored (PSI or KS, median over features) against the
   **training distribution** shipped with the model (:class:`~sage.models.bundle.InputReference`, the
   checkpoint's ``reference.json``). A checkpoint without one (older or hand-made checkpoints) falls
   back to a causal self-reference: the first ``drift_reference_bars`` valid rows of the stream, logged
   once. A drift alarm sends the chain below the model levels until it clears.
3. Prediction drift: the model's own predicted labels over a rolling window against the training label
   shares (only with a training reference; see :class:`DetectorConfig`).
4. The rule (level 3) and volatility (level 4) detectors consume the feature row.
5. Adaptive conformal first resolves the forecast made ``h`` bars ago with the realised log return
   ``log(c_t / c_{t-h})``, then calibrates this bar's 10%-90% band (model quantiles, standardised
   units, times ``ewma_vol * sqrt(h)``). ``uncertainty`` is the calibrated interval's width in
   log-return units; NaN while the calibrator has too few scores (the chain then publishes level 2).
6. The fallback chain publishes the highest healthy level (:mod:`sage.regime.fallback` documents the
   state machine; the kernel's specialisation is held to ``FallbackChain`` by a differential test).

Logging: level changes (``sage.regime.fallback``: warning down, info up), levels turning unhealthy or
recovering, and health-flag changes (``sage.regime.health``) are logged per event by the stream and,
in batch, collected from the kernel's output arrays after the run (also returned as
``frame.attrs["transitions"]``).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import msgspec
import numpy as np
import pandas as pd
from nautilus_trader.model.data import Bar

from sage.data.regimes import REGIME_NAMES
from sage.features import FeatureStream, compute
from sage.features.bars import bar_values, to_arrays
from sage.features.matrices import MatrixStream, strategic_rows
from sage.models.adapters.base import QuantileForecastAdapter, standardise
from sage.models.bundle import RegimeModelBundle
from sage.models.registry import ModelLoadError
from sage.regime import kernel as K
from sage.regime.fallback import FallbackConfig, Reason, Transition
from sage.regime.health import DriftConfig, DriftMonitor, HealthFlag, LatencyMonitor
from sage.regime.rules import RuleConfig, VolatilityConfig, rules_config

_chain_log = logging.getLogger("sage.regime.fallback")
_health_log = logging.getLogger("sage.regime.health")
_detector_log = logging.getLogger("sage.regime.detector")

#: Reason of each kernel reason code (``sage.regime.kernel.R_*``).
REASONS: tuple[Reason, ...] = (
    Reason.OK, Reason.EXCEPTION, Reason.LATENCY, Reason.INVALID_INPUT, Reason.HEALTH, Reason.INVALID_OUTPUT,
    Reason.MISSING, Reason.RECOVERED,
)  # fmt: skip
LEVEL_NAMES: tuple[str, ...] = ("model+conformal", "model", "rules", "volatility")

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
    forecaster: str | None = None
    """Foundation-model forecaster whose quantiles replace the bundle's own forecaster head, as a spec
    ``"tirex:<dir>"`` or ``"chronos:<dir>"`` (local checkpoints only, see ``sage.models.adapters`` and
    ``docs/forecast_adapters.md``); None (default) uses the bundle's head. Ignored without a learned model
    (``"rules"``). Its call time counts against ``latency_budget_us``: raise that for real-size models."""
    forecaster_context: int | None = None
    """Closes per foundation-model context (default None: the model's own maximum)."""
    drift_reference: Literal["training", "self"] = "training"
    """Reference of the feature-drift monitor: ``"training"`` (default) = the training distribution
    shipped with the model (``reference.json``); a checkpoint without one falls back to ``"self"`` =
    the first ``drift_reference_bars`` valid model-input rows of the stream (causal, logged)."""
    drift_reference_bars: int = 2000
    """Rows of the causal self-reference; 0 disables drift monitoring (feature and prediction) altogether."""
    drift: DriftConfig = DriftConfig()
    """PSI/KS drift monitor settings (thresholds, window)."""
    prediction_drift: bool = True
    """Monitor the model's predicted-label shares (rolling window) against its shares on the training
    rows (needs a training reference). Raises ``DRIFT_WARNING``; ``DRIFT_ALARM`` only when
    ``prediction_alarm`` is set."""
    prediction_window: int = 500
    """Rolling window of model predictions (bars) for prediction drift (default 500)."""
    prediction_min_samples: int = 100
    """Valid predictions needed before prediction drift is scored (default 100)."""
    prediction_warn: float = 1.0
    """PSI of the label shares that raises ``DRIFT_WARNING`` (default 1.0: a label mix far from training's,
    e.g. one regime the model rarely predicted in training now dominating the window)."""
    prediction_alarm: float | None = None
    """PSI of the label shares that raises ``DRIFT_ALARM`` and so sends the chain below the model levels
    (default None: never). Why not by default: a real market spends weeks in one regime, so its label
    mix legitimately departs from the training mixture; on the sample data an alarm at PSI 1.0 fired on
    13-22 % of ES/SPX/GOOG bars (``docs/regime_reliability.md``) without the inputs having drifted."""
    fallback: FallbackConfig = FallbackConfig()
    """Fallback-chain settings (re-entry probes, prior, level-5 decay, whole-bar budget)."""
    rules: RuleConfig = RuleConfig()
    """Level-3 rule detector settings."""
    volatility: VolatilityConfig = VolatilityConfig()
    """Level-4 volatility detector settings."""
    bar_interval_ns: int | None = None
    """Expected bar spacing for gap detection; None disables gap checks (sessions have gaps)."""
    max_gap_bars: float = 3.0
    """A timestamp step above this many bar intervals is an input gap (when ``bar_interval_ns`` set)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.coverage < 1.0:
            raise ValueError(f"DetectorConfig.coverage must be in (0, 1), got {self.coverage}")
        if self.drift_reference_bars < 0:
            raise ValueError(f"DetectorConfig.drift_reference_bars must be >= 0, got {self.drift_reference_bars}")
        if self.drift_reference not in ("training", "self"):
            raise ValueError(f"DetectorConfig.drift_reference must be 'training' or 'self', got {self.drift_reference!r}")
        if self.aci_window < 1 or not self.aci_gamma > 0:
            raise ValueError("DetectorConfig needs aci_window >= 1 and aci_gamma > 0")
        if self.prediction_window < 1 or not 1 <= self.prediction_min_samples <= self.prediction_window:
            raise ValueError("DetectorConfig needs prediction_window >= 1 and 1 <= prediction_min_samples <= window")
        if self.prediction_alarm is not None and self.prediction_warn > self.prediction_alarm:
            raise ValueError("DetectorConfig.prediction_warn must be <= prediction_alarm")
        if self.bar_interval_ns is not None and self.bar_interval_ns <= 0:
            raise ValueError(f"DetectorConfig.bar_interval_ns must be > 0 or None, got {self.bar_interval_ns}")
        if not self.max_gap_bars > 0:
            raise ValueError(f"DetectorConfig.max_gap_bars must be > 0, got {self.max_gap_bars}")


def load_detector(name: str = "default", config: DetectorConfig | None = None) -> RegimeDetector:
    """A ready detector: ``name`` is a shipped model name, a checkpoint directory, or ``"rules"``.

    Raises :class:`~sage.models.registry.ModelLoadError` (naming the problem) when the checkpoint is
    missing, corrupt, foreign or trained on other features. Callers that must keep publishing (the
    actor) catch it and run ``"rules"``: the fallback chain then starts at level 3.
    """
    config = msgspec.structs.replace(config or DetectorConfig(), model=name)
    bundle = None if name == RULES_ONLY else RegimeModelBundle.load(name)
    forecaster = None
    if bundle is not None and config.forecaster is not None:
        from sage.models.adapters import load_forecaster  # optional extra: imported only when asked for

        forecaster = load_forecaster(config.forecaster, horizon=bundle.horizon, context_length=config.forecaster_context)
    return RegimeDetector(config, bundle, forecaster)


class RegimeDetector:
    """A configured detector; cheap to create streams from (each stream has its own state)."""

    def __init__(
        self,
        config: DetectorConfig,
        bundle: RegimeModelBundle | None,
        forecaster: QuantileForecastAdapter | None = None,
    ) -> None:
        if forecaster is not None and (bundle is None or forecaster.horizon != bundle.horizon):
            raise ValueError("a forecaster adapter needs a model bundle with the same horizon")
        self.config = config
        self.bundle = bundle
        self.forecaster = forecaster
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

    @property
    def drift_source(self) -> str:
        """Where the feature-drift reference comes from: ``training``, ``self`` or ``off``."""
        cfg = self.config
        if self.bundle is None or cfg.drift_reference_bars == 0:
            return "off"
        if cfg.drift_reference == "training" and self.bundle.reference is not None:
            return "training"
        return "self"

    def stream(self, *, clock: Callable[[], int] = time.perf_counter_ns) -> DetectorStream:
        return DetectorStream(self, clock=clock)

    def batch(self, bars: pd.DataFrame | Sequence[Bar]) -> pd.DataFrame:
        """Rows for every bar, indexed like ``sage.features.compute`` indexes them.

        ``frame.attrs["transitions"]`` lists the level changes (:class:`~sage.regime.fallback.Transition`),
        which are also logged, as are level-health and health-flag changes.
        """
        features = compute(bars, self.schema)
        ts, o, h, l, c, v = to_arrays(bars)
        n = len(ts)
        state = _KernelState(self)
        if self.bundle is not None:
            rows = strategic_rows(bars, self.schema)
            out = self.bundle.infer_rows(rows)
            vec, probs, quant = out.vectors, out.probs, out.quantiles
            if self.forecaster is not None:
                log_q = self.forecaster.predict_closes(np.asarray(c, dtype=np.float64))
                sigma = features["ewma_vol"].to_numpy(dtype=np.float64)
                quant = standardise(log_q, sigma, self.forecaster.horizon).astype(np.float32)
            model_in = np.ascontiguousarray(self.bundle.select_rows(rows), dtype=np.float64)
        else:
            vec = np.full((n, 8), np.nan, np.float32)
            probs = np.full((n, 4), np.nan, np.float32)
            quant = np.full((n, 9), np.nan, np.float32)
            model_in = np.full((n, 1), np.nan)
        feat = np.ascontiguousarray(features.to_numpy(), dtype=np.float64)
        ext = np.zeros((n, K.EX_SIZE), dtype=np.int64)
        out_f = np.empty((n, K.OF_SIZE))
        out_i = np.empty((n, K.OI_SIZE), dtype=np.int64)
        ts = np.ascontiguousarray(ts, dtype=np.int64)
        i = 0
        while i < n:
            i = K.detector_run(
                *state.args(), ts, o, h, l, c, v, feat, vec, probs, quant, model_in, ext, out_f, out_i, i
            )
            state.fit_if_needed(int(ts[i - 1]), i - 1)
        transitions = _log_batch(out_f, out_i, ts)
        frame = _frame(out_f, out_i, features.index)
        frame.attrs["transitions"] = transitions
        return frame


class DetectorStream:
    """One bar at a time; ``update`` returns the bar's row as a dict keyed by :data:`OUTPUT_COLUMNS`.

    State: ``transitions`` (level changes, last ``fallback.max_transitions``), ``latency`` (a
    :class:`~sage.regime.health.LatencyMonitor` of the per-bar latencies: p50/p99, breaches),
    ``drift_monitor`` (the feature-drift monitor once it has a reference: per-feature ``scores``,
    ``top_features``), ``level`` (last published level).
    """

    def __init__(self, detector: RegimeDetector, *, clock: Callable[[], int] = time.perf_counter_ns) -> None:
        self.detector = detector
        self.clock = clock
        cfg = detector.config
        self._features = FeatureStream(detector.schema)
        bundle = detector.bundle
        self._matrix = MatrixStream("strategic", detector.schema) if bundle is not None else None
        self._forecast = detector.forecaster.stream() if detector.forecaster is not None else None
        self._sigma_index = tuple(self._features.names).index("ewma_vol")
        self._state = _KernelState(detector)
        self._args = self._state.args()
        self._model_slow = False
        self._bar_budget_us = cfg.fallback.bar_budget_us
        self._ext = np.zeros(K.EX_SIZE, dtype=np.int64)
        self._out_f = np.empty(K.OF_SIZE)
        self._out_i = np.empty(K.OI_SIZE, dtype=np.int64)
        self._bar = 0
        self.model_us = 0.0
        """Latency of the last model call (select + infer), in microseconds."""
        self._log = _EventLog()
        self.latency = LatencyMonitor(budget_us=cfg.latency_budget_us, clock=clock)
        self.transitions: deque[Transition] = deque(maxlen=cfg.fallback.max_transitions)
        self.level = 5

    @property
    def drift_monitor(self) -> DriftMonitor | None:
        return self._state.drift_monitor

    def update(self, bar: Bar | Mapping[str, Any]) -> dict[str, Any]:
        started = self.clock()
        ts, o, h, l, c, v = bar_values(bar)
        feat = self._features.update_values(ts, o, h, l, c, v)
        bundle = self.detector.bundle
        model_us = 0.0
        if bundle is None or self._matrix is None:
            vec, probs, quant, model_in = _NAN8, _NAN4, _NAN9, _NAN1
        else:
            matrix = self._matrix.update({"ts": ts, "open": o, "high": h, "low": l, "close": c, "volume": v})
            t0 = self.clock()
            window = bundle.select(matrix)
            out = bundle.infer(window)
            vec, probs, quant = out.vector, out.probs, out.quantiles
            if self._forecast is not None:
                log_q = self._forecast.update(c)
                sigma = np.float64(feat[self._sigma_index])
                quant = standardise(log_q, sigma, self.detector.forecaster.horizon).astype(np.float32)
            model_us = (self.clock() - t0) / 1_000.0
            model_in = np.ascontiguousarray(window[-1], dtype=np.float64)
        ext = self._ext
        ext[K.EX_MODEL_SLOW] = self._model_slow
        ext[K.EX_LATENCY_FLAG] = self.latency.last_breached
        out_f, out_i = self._out_f, self._out_i
        t_step = self.clock()
        K.detector_step(*self._args, int(ts), o, h, l, c, v, feat, vec, probs, quant, model_in, ext, out_f, out_i)
        step_us = (self.clock() - t_step) / 1_000.0
        bar_i = self._bar
        self._bar += 1
        if self._state.fit_if_needed(int(ts), bar_i):
            self._args = self._state.args()
        self.model_us = model_us
        self._model_slow = model_us > self.detector.config.latency_budget_us
        flags = int(out_i[K.OI_FLAGS])
        if step_us > self._bar_budget_us:
            flags |= int(HealthFlag.LATENCY_BUDGET_EXCEEDED)
        transition = self._log.bar(bar_i, int(ts), out_f, out_i)
        if transition is not None:
            self.transitions.append(transition)
        self.level = int(out_i[K.OI_LEVEL])
        latency_us = (self.clock() - started) / 1_000.0
        self.latency.record(latency_us)
        return _record(out_f, out_i, flags, latency_us)


# -- kernel state ---------------------------------------------------------------------------------------

_NAN1 = np.full(1, np.nan, dtype=np.float64)
_NAN4 = np.full(4, np.nan, dtype=np.float32)
_NAN8 = np.full(8, np.nan, dtype=np.float32)
_NAN9 = np.full(9, np.nan, dtype=np.float32)
_RULE_COLUMNS = ("mom_slow", "macd", "atr", "rsi", "bb_pctb")


class _KernelState:
    """Every array :func:`sage.regime.kernel.detector_step` reads and writes, built from a detector."""

    def __init__(self, detector: RegimeDetector) -> None:
        cfg = detector.config
        bundle = detector.bundle
        index = {name: i for i, name in enumerate(detector._feature_names)}
        has_model = bundle is not None
        k = len(bundle.input_names) if bundle is not None else 1
        h = bundle.horizon if bundle is not None else 1
        self.config = cfg
        self.columns: tuple[str, ...] = bundle.input_names if bundle is not None else ("none",)

        cfg_f = np.zeros(K.CF_SIZE)
        cfg_f[K.CF_ALPHA] = 1.0 - cfg.coverage
        cfg_f[K.CF_GAMMA] = cfg.aci_gamma
        cfg_f[K.CF_MAX_GAP] = cfg.max_gap_bars
        cfg_f[K.CF_D_EPS] = cfg.drift.eps
        cfg_f[K.CF_D_WARN] = cfg.drift.warn_threshold
        cfg_f[K.CF_D_ALARM] = cfg.drift.alarm_threshold
        cfg_f[K.CF_P_EPS] = 1e-3
        cfg_f[K.CF_P_WARN] = cfg.prediction_warn
        cfg_f[K.CF_P_ALARM] = math.inf if cfg.prediction_alarm is None else cfg.prediction_alarm
        cfg_f[K.CF_HALF_LIFE] = cfg.fallback.last_known_half_life
        cfg_f[K.CF_PRIOR : K.CF_PRIOR + 4] = cfg.fallback.prior
        cfg_f[K.CF_R3 : K.CF_R3 + K.RC_SIZE] = rules_config(cfg.rules, rule=True)
        cfg_f[K.CF_R4 : K.CF_R4 + K.RC_SIZE] = rules_config(cfg.volatility, rule=False)
        cfg_i = np.zeros(K.CI_SIZE, dtype=np.int64)
        cfg_i[K.CI_HAS_MODEL] = int(has_model)
        cfg_i[K.CI_HORIZON] = h
        cfg_i[K.CI_INTERVAL] = cfg.bar_interval_ns or 0
        source = detector.drift_source
        cfg_i[K.CI_N_REF] = cfg.drift_reference_bars if source == "self" else 0
        cfg_i[K.CI_D_METHOD] = {"psi": 0, "ks": 1}[cfg.drift.method]
        cfg_i[K.CI_D_AGG] = {"mean": 0, "median": 1, "max": 2}[cfg.drift.aggregate]
        cfg_i[K.CI_D_MIN] = cfg.drift.min_samples
        cfg_i[K.CI_P_MIN] = cfg.prediction_min_samples
        cfg_i[K.CI_REENTRY] = cfg.fallback.reentry_probes
        cfg_i[K.CI_PROBE_EVERY] = cfg.fallback.probe_every
        cfg_i[K.CI_TIE] = cfg.fallback.tie_label
        try:
            cfg_i[K.CI_SIGMA] = index["ewma_vol"]
            r3 = (cfg.rules.vol_column, cfg.rules.return_column, *_RULE_COLUMNS)
            cfg_i[K.CI_R3 : K.CI_R3 + 7] = [index[c] for c in r3]
            cfg_i[K.CI_R4 : K.CI_R4 + 2] = [index[cfg.volatility.vol_column], index[cfg.volatility.return_column]]
        except KeyError as exc:
            raise ValueError(f"the feature schema lacks column {exc} that the rule detectors read") from exc
        reference = bundle.reference if bundle is not None else None
        pred_on = source == "training" and cfg.prediction_drift and reference is not None
        cfg_i[K.CI_PRED_ON] = int(pred_on)
        self.cfg_f, self.cfg_i = cfg_f, cfg_i

        st_f = np.zeros(K.SF_SIZE)
        st_f[K.SF_ALPHA_T] = cfg_f[K.CF_ALPHA]
        st_f[K.SF_DRIFT] = st_f[K.SF_PRED] = math.nan
        for base in (K.SF_R3, K.SF_R4):
            st_f[base + K.RS_RATIO] = st_f[base + K.RS_TREND] = math.nan
        self.st_i = np.zeros(K.SI_SIZE, dtype=np.int64)
        self.st_f = st_f
        self.chain = np.zeros(K.CH_SIZE, dtype=np.int64)
        self.chain[K.CH_LEVEL] = 5
        self.present = np.array([has_model, has_model, True, True])
        self.lvl = np.zeros((4, K.LV_SIZE), dtype=np.int64)
        self.lvl[:, K.LV_HEALTHY] = self.present
        self.lvl[~self.present, K.LV_REASON] = K.R_MISSING
        self.last = np.zeros(K.V_SIZE)
        self.sw = [np.zeros(cfg.rules.vol_window), np.zeros(cfg.rules.vol_window),
                   np.zeros(cfg.volatility.vol_window), np.zeros(cfg.volatility.vol_window),
                   np.zeros(cfg.aci_window), np.zeros(cfg.aci_window)]  # fmt: skip
        self.queue = np.full((h + 1, 5), np.nan)
        self.closes = np.full(h + 1, np.nan)
        B, W = cfg.drift.bins, cfg.drift.window
        self.drift_arrays = [
            np.full((k, B - 1), np.inf), np.zeros(k, dtype=np.bool_), np.full((W, k), -1, dtype=np.int64),
            np.zeros((k, B), dtype=np.int64), np.zeros(k, dtype=np.int64), np.zeros((k, B)), np.zeros((k, B)),
            np.zeros((k, B)), np.full(W + 2, np.nan), np.zeros(k), np.full(k, np.nan),
        ]  # fmt: skip
        self.ref_buf = np.zeros((max(int(cfg_i[K.CI_N_REF]), 1), k))
        self.p_ring = np.full(cfg.prediction_window, -1, dtype=np.int64)
        self.p_counts = np.zeros(4, dtype=np.int64)
        shares = reference.label_shares if (pred_on and reference is not None) else (0.25,) * 4
        self.p_ref = np.asarray(shares, dtype=np.float64)
        self.health_ok = np.ones(4, dtype=np.bool_)
        self.ws = np.zeros(K.WS_SIZE)
        self.drift_monitor: DriftMonitor | None = None
        if source == "training" and reference is not None:
            q, below = reference.arrays()
            self._install(DriftMonitor.from_quantiles(q, below, cfg.drift, columns=self.columns))

    def args(self) -> tuple[Any, ...]:
        """The state arguments of ``detector_step`` / ``detector_run``, in order."""
        return (
            self.cfg_f, self.cfg_i, self.st_i, self.st_f, self.chain, self.lvl, self.last, self.present,
            *self.sw, self.queue, self.closes, *self.drift_arrays, self.ref_buf,
            self.p_ring, self.p_counts, self.p_ref, self.health_ok, self.ws,
        )  # fmt: skip

    def _install(self, monitor: DriftMonitor) -> None:
        """Copy a fitted monitor's reference into the kernel arrays and let it view the kernel's window,
        so ``monitor.scores`` / ``top_features`` describe what the kernel scores."""
        edges, scorable, ring, counts, n, ref_p, ref_cdf, log_ref, log_table, work, scores = self.drift_arrays
        edges[:] = monitor._edge_block
        scorable[:] = monitor._scorable
        ref_p[:] = monitor._ref_p
        ref_cdf[:] = monitor._ref_cdf
        log_ref[:] = monitor._log_ref
        log_table[:] = monitor._log_table
        ring[:] = -1
        counts[:] = 0
        n[:] = 0
        scores[:] = np.nan
        monitor._ring, monitor._counts, monitor._n, monitor.scores = ring, counts, n, scores
        monitor._log_table, monitor._work = log_table, work
        self.st_i[K.SI_DRIFT_ON] = 1
        self.drift_monitor = monitor

    def fit_if_needed(self, ts: int, bar: int) -> bool:
        """Fit the causal self-reference once the kernel has collected it; True if it did."""
        if not self.st_i[K.SI_NEED_FIT]:
            return False
        self.st_i[K.SI_NEED_FIT] = 0
        self._install(DriftMonitor(self.config.drift, columns=self.columns).fit(self.ref_buf))
        _detector_log.info(
            "drift reference: the checkpoint has no training reference; fitted a self-reference on the first "
            "%d valid model-input rows (bar %d, ts=%s)", self.ref_buf.shape[0], bar, ts,
        )  # fmt: skip
        return True


# -- events and logging ---------------------------------------------------------------------------------


class _EventLog:
    """Turns a bar's event fields into log lines (and a Transition when the published level changed)."""

    def __init__(self) -> None:
        self.level = 5
        self.published = False
        self.flags = 0

    def bar(self, bar: int, ts: int, out_f: np.ndarray, out_i: np.ndarray) -> Transition | None:
        level = int(out_i[K.OI_LEVEL])
        transition = None
        if out_i[K.OI_UNHEALTHY] or out_i[K.OI_RECOVERED]:
            self._level_health(bar, out_i)
        if self.published and level != self.level:
            transition = self._transition(bar, ts, level, out_i)
        self.published = True
        self.level = level
        hflags = int(out_i[K.OI_HEALTH])
        if hflags != self.flags:
            self._flags(hflags, float(out_f[K.OF_DRIFT]), bar, ts)
        return transition

    @staticmethod
    def _level_health(bar: int, out_i: np.ndarray) -> None:
        for i in range(4):
            if int(out_i[K.OI_UNHEALTHY]) >> i & 1:
                _chain_log.warning("regime level %d (%s) unhealthy at bar %d: %s", i + 1, LEVEL_NAMES[i], bar,
                                   REASONS[int(out_i[K.OI_SKIP + i])])  # fmt: skip
            if int(out_i[K.OI_RECOVERED]) >> i & 1:
                _chain_log.info("regime level %d (%s) healthy again at bar %d (was: %s)", i + 1, LEVEL_NAMES[i],
                                bar, REASONS[int(out_i[K.OI_WAS + i])])  # fmt: skip

    def _transition(self, bar: int, ts: int, level: int, out_i: np.ndarray) -> Transition:
        skipped = [
            (i + 1, REASONS[int(out_i[K.OI_SKIP + i])]) for i in range(4) if out_i[K.OI_SKIP + i] != K.NO_SKIP
        ]
        going_down = level > self.level
        cause = (skipped[0][1] if skipped else Reason.OK) if going_down else Reason.RECOVERED
        recovered = [
            f"L{i + 1} re-entered (was {REASONS[int(out_i[K.OI_WAS + i])]})"
            for i in range(4) if int(out_i[K.OI_RECOVERED]) >> i & 1
        ]  # fmt: skip
        detail = "; ".join([f"L{n}: {r}" for n, r in skipped] + recovered)
        transition = Transition(bar, ts, self.level, level, str(cause), detail)
        log = _chain_log.warning if going_down else _chain_log.info
        log("regime level %d -> %d at bar %d (ts=%s): %s [%s]", self.level, level, bar, ts, cause, detail)
        return transition

    def _flags(self, flags: int, drift: float, bar: int, ts: int) -> None:
        added = flags & ~self.flags
        cleared = self.flags & ~flags
        now = HealthFlag(flags)
        if added:
            _health_log.warning("health flags raised: %s (now %s) at bar %d (ts=%s), drift=%.3f",
                                HealthFlag(added), now, bar, ts, drift)  # fmt: skip
        if cleared:
            _health_log.info("health flags cleared: %s (now %s) at bar %d (ts=%s)", HealthFlag(cleared), now, bar, ts)
        self.flags = flags


def _log_batch(out_f: np.ndarray, out_i: np.ndarray, ts: np.ndarray) -> list[Transition]:
    """Log a batch run's events from the kernel's output arrays (exactly the stream's per-bar log lines);
    returns the level transitions."""
    n = out_i.shape[0]
    if n == 0:
        return []
    level = out_i[:, K.OI_LEVEL]
    hflags = out_i[:, K.OI_HEALTH]
    events = (out_i[:, K.OI_UNHEALTHY] != 0) | (out_i[:, K.OI_RECOVERED] != 0)
    events[1:] |= (level[1:] != level[:-1]) | (hflags[1:] != hflags[:-1])
    events[0] |= hflags[0] != 0
    log = _EventLog()
    transitions = []
    for i in np.flatnonzero(events):
        if i > 0:  # the event log's state after bar i - 1
            log.published, log.level, log.flags = True, int(level[i - 1]), int(hflags[i - 1])
        t = log.bar(int(i), int(ts[i]), out_f[i], out_i[i])
        if t is not None:
            transitions.append(t)
    return transitions


def _record(out_f: np.ndarray, out_i: np.ndarray, flags: int, latency_us: float) -> dict[str, Any]:
    p = out_f.tolist()  # one conversion to Python floats instead of a numpy scalar per field
    row: dict[str, Any] = {
        "label": REGIME_NAMES[int(out_i[K.OI_LABEL])],
        "p_bull": p[0], "p_bear": p[1], "p_sideways": p[2], "p_volatile": p[3],
    }  # fmt: skip
    for i, key in enumerate(_VECTOR_KEYS):
        row[key] = p[K.OF_VEC + i]
    row.update(
        uncertainty=p[K.OF_UNC], level=int(out_i[K.OI_LEVEL]), confidence=p[K.OF_CONF],
        latency_us=latency_us, drift=p[K.OF_DRIFT], health_flags=flags,
    )  # fmt: skip
    return row


_VECTOR_KEYS = tuple(f"v{i}" for i in range(8))


def _frame(out_f: np.ndarray, out_i: np.ndarray, index: pd.Index) -> pd.DataFrame:
    n = out_f.shape[0]
    names = np.asarray(REGIME_NAMES, dtype=object)
    data: dict[str, Any] = {"label": names[out_i[:, K.OI_LABEL]]}
    for j, col in enumerate(("p_bull", "p_bear", "p_sideways", "p_volatile")):
        data[col] = out_f[:, K.OF_P + j]
    for j in range(8):
        data[f"v{j}"] = out_f[:, K.OF_VEC + j]
    data["uncertainty"] = out_f[:, K.OF_UNC]
    data["level"] = out_i[:, K.OI_LEVEL]
    data["confidence"] = out_f[:, K.OF_CONF]
    data["latency_us"] = np.full(n, np.nan)
    data["drift"] = out_f[:, K.OF_DRIFT]
    data["health_flags"] = out_i[:, K.OI_FLAGS]
    frame = pd.DataFrame(data, columns=list(OUTPUT_COLUMNS))
    frame.index = index
    return frame


__all__ = [
    "LEVEL_NAMES", "OUTPUT_COLUMNS", "REASONS", "RULES_ONLY", "DetectorConfig", "DetectorStream", "ModelLoadError",
    "RegimeDetector", "load_detector",
]  # fmt: skip
