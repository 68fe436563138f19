"""Regime detector benchmark: calibration on real data, actor latency, precompute throughput.

``python -m benchmarks.bench_regime`` prints:

1. **Calibration** of the shipped forecaster on the held-out tail (last 30%) of each real sample
   dataset: empirical coverage of the 80% and 90% intervals, split conformal (fitted on the first 70%)
   vs adaptive conformal (the detector's calibrator, warm-started on the same 70%, then online with each
   outcome arriving ``h`` bars late). Same bands as the detector: model 0.1/0.9 quantiles in
   standardised units times ``ewma_vol * sqrt(h)``.
2. **RegimeActor per-bar cost** inside a real ``BacktestEngine`` over the ES bars: wall time of the
   engine with the actor minus without it, per bar, plus the stream's own p50/p99 (features +
   inference + calibration + chain) as recorded in ``latency_us``.
3. **Precompute throughput** (``RegimeDetector.batch``: features + model + conformal + fallback chain +
   health, one compiled kernel per bar) on 50k synthetic bars, as bars/s, with two baselines measured in
   the same run: the *floor* (features + model inference alone, what any detector must pay) and the
   *Python core* (the same per-bar logic as the plain Python components -- ``RuleDetector``,
   ``AdaptiveConformal``, ``HealthMonitor``, ``FallbackChain`` -- i.e. the detector before the kernel),
   plus the streaming path over the same bars.
4. **Internal bar precompute**: 5-minute INTERNAL bars built from the ES 1-minute bars by Nautilus's
   aggregator (engine pass) + batch detector, bars/s of source bars.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import pandas as pd
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.config import LoggingConfig
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import DataType
from nautilus_trader.model.enums import AccountType, OmsType
from nautilus_trader.model.identifiers import Venue
from nautilus_trader.model.objects import Money
from nautilus_trader.persistence.catalog import ParquetDataCatalog

from sage.data import sample
from sage.data.synthetic import SyntheticMarketConfig, generate_bars
from sage.data.types import RegimeData
from sage.features import compute
from sage.features.matrices import strategic_rows
from sage.regime.actor import RegimeActor, RegimeActorConfig
from sage.regime.conformal import AdaptiveConformal, SplitConformal
from sage.regime.detector import DetectorConfig, RegimeDetector, load_detector
from sage.regime.fallback import FallbackChain, Level, LevelOutput
from sage.regime.health import DriftMonitor, HealthFlag, HealthMonitor, InputValidator, LatencyMonitor
from sage.regime.rules import RuleDetector, VolatilityDetector

HOLDOUT = 0.3


def calibration_table(detector_name: str = "default") -> pd.DataFrame:
    detector = load_detector(detector_name)
    bundle = detector.bundle
    assert bundle is not None
    h = bundle.horizon
    loaders = {
        "ES 1-min": lambda: sample.es_minute_bars(sample.load_es_trades()),
        "EUR/USD 1-h": sample.load_eurusd,
        "SPX daily": sample.load_spx,
        "GOOG daily": sample.load_goog,
    }
    config = DetectorConfig()
    rows = []
    for name, load in loaders.items():
        bars = load()[["open", "high", "low", "close", "volume"]].astype(float)
        q = bundle.infer_rows(strategic_rows(bars, detector.schema)).quantiles.astype(np.float64)
        sigma = compute(bars, detector.schema)["ewma_vol"].to_numpy()
        close = bars["close"].to_numpy()
        y = np.full(len(bars), np.nan)
        y[:-h] = np.log(close[h:] / close[:-h])
        scale = sigma * math.sqrt(h)
        lo, hi = q[:, 0] * scale, q[:, -1] * scale
        cut = int(len(bars) * (1 - HOLDOUT))
        for coverage in (0.8, 0.9):
            alpha = 1 - coverage
            split = SplitConformal(alpha).fit(y[:cut], lo[:cut], hi[:cut])
            s_lo, s_hi = split.interval(lo[cut:], hi[cut:])
            ok = np.isfinite(y[cut:]) & np.isfinite(s_lo)
            split_cov = float(np.mean((y[cut:][ok] >= s_lo[ok]) & (y[cut:][ok] <= s_hi[ok])))
            aci = AdaptiveConformal(alpha, gamma=config.aci_gamma, window=config.aci_window, horizon=h)
            aci.fit(y[:cut], lo[:cut], hi[:cut])
            run = aci.run(y[cut:], lo[cut:], hi[cut:])
            rows.append(
                {
                    "dataset": name, "nominal": coverage, "n_holdout": int(np.isfinite(run.covered).sum()),
                    "split": split_cov, "adaptive": run.coverage,
                    "raw_model": float(np.mean((y[cut:][ok] >= lo[cut:][ok]) & (y[cut:][ok] <= hi[cut:][ok]))),
                }
            )  # fmt: skip
    return pd.DataFrame(rows)


class _Sink:
    pass


def actor_cost(model: str = "default") -> dict[str, float]:
    catalog = ParquetDataCatalog(str(sample.DEFAULT_CATALOG))
    bars = catalog.bars(bar_types=[sample.ES_BAR_TYPE])
    instrument = catalog.instruments(instrument_ids=["ESU3.XCME"])[0]
    published: list[RegimeData] = []

    def run(with_actor: bool) -> float:
        engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(log_level="ERROR")))
        engine.add_venue(Venue("XCME"), OmsType.NETTING, AccountType.MARGIN,
                         starting_balances=[Money(1_000_000, USD)], base_currency=USD)  # fmt: skip
        engine.add_instrument(instrument)
        engine.add_data(bars)
        if with_actor:
            actor = RegimeActor(RegimeActorConfig(bar_type=sample.ES_BAR_TYPE, model=model))
            engine.add_actor(actor)
            engine.kernel.msgbus.subscribe(topic="data.RegimeData*", handler=published.append)
        started = time.perf_counter()
        engine.run()
        wall = time.perf_counter() - started
        engine.dispose()
        return wall

    base = min(run(False) for _ in range(3))
    first = run(True)  # includes one-time start-up: model load, numba cache loads, warm-up inference
    published.clear()
    with_actor = run(True)
    lat = np.array([r.latency_us for r in published if math.isfinite(r.latency_us)])
    return {
        "bars": len(bars),
        "engine_only_us_per_bar": base / len(bars) * 1e6,
        "first_run_startup_s": first - with_actor,
        "engine_with_actor_us_per_bar": with_actor / len(bars) * 1e6,
        "actor_us_per_bar": (with_actor - base) / len(bars) * 1e6,
        "stream_p50_us": float(np.percentile(lat, 50)) if lat.size else math.nan,
        "stream_p99_us": float(np.percentile(lat, 99)) if lat.size else math.nan,
        "published": len(published),
    }


class _PythonCore:
    """The detector's per-bar logic written with the plain Python components (the pre-kernel detector core),
    kept here only as the benchmark's in-run baseline."""

    def __init__(self, detector: RegimeDetector) -> None:
        cfg = detector.config
        names = detector._feature_names
        self.rules, self.vol = RuleDetector(names), VolatilityDetector(names)
        self.sigma = names.index("ewma_vol")
        self.h = detector.bundle.horizon if detector.bundle is not None else 1
        self.aci = AdaptiveConformal(alpha=1 - cfg.coverage, gamma=cfg.aci_gamma, window=cfg.aci_window, horizon=self.h)
        self.health = HealthMonitor(LatencyMonitor(budget_us=cfg.latency_budget_us),
                                    InputValidator(cfg.bar_interval_ns, cfg.max_gap_bars))  # fmt: skip
        ref = detector.bundle.reference if detector.bundle is not None else None
        if ref is not None:
            q, below = ref.arrays()
            self.health.drift = DriftMonitor.from_quantiles(q, below, cfg.drift)
        self.closes: list[float] = []
        ok = self._ok
        self.chain = FallbackChain([
            Level(lambda c: LevelOutput(c["probs"], c["vector"], uncertainty=c["width"]), health_check=ok,
                  requires_uncertainty=True),
            Level(lambda c: LevelOutput(c["probs"], c["vector"]), health_check=ok),
            Level(lambda c: c["rules"]), Level(lambda c: c["vol"]),
        ], cfg.fallback, clock=lambda: 0)  # fmt: skip

    @staticmethod
    def _ok(ctx: dict) -> bool:
        return not ctx["drift_alarm"]

    def step(self, ts, o, h, l, c, v, feat, vec, probs, quant, model_in) -> None:
        issues = self.health.on_bar(ts, o, h, l, c, v)
        if self.health.drift is not None:
            self.health.on_features(model_in)
        rules_p, vol_p = self.rules.update(feat), self.vol.update(feat)
        self.closes.append(c)
        if len(self.closes) > self.h:
            past = self.closes[-self.h - 1]
            self.aci.update(math.log(c / past) if c > 0 and past > 0 else math.nan)
        scale = feat[self.sigma] * math.sqrt(self.h)
        lo, hi = self.aci.interval(float(quant[0]) * scale, float(quant[-1]) * scale)
        flags = self.health.log_changes()
        ctx = {"probs": probs.astype(np.float64), "vector": vec.astype(np.float64), "width": hi - lo,
               "rules": rules_p, "vol": vol_p, "drift_alarm": bool(flags & HealthFlag.DRIFT_ALARM)}  # fmt: skip
        self.chain.step(ctx, input_ok=not issues, health_flags=int(flags), drift=self.health.drift_score, ts=ts)


def precompute_speed(n_bars: int = 50_000, model: str = "default") -> dict[str, float]:
    bars = generate_bars(SyntheticMarketConfig(seed=3, n_bars=n_bars))[["open", "high", "low", "close", "volume"]]
    detector = load_detector(model)
    detector.batch(bars.iloc[:2000])  # compile/warm

    def best(fn, repeats: int = 3) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return min(times)

    batch = best(lambda: detector.batch(bars))
    bundle = detector.bundle
    assert bundle is not None

    def floor() -> None:
        compute(bars, detector.schema)
        bundle.infer_rows(strategic_rows(bars, detector.schema))

    floor_s = best(floor)
    # Python core over the same precomputed inputs (timed: the per-bar loop only, on 10k bars)
    n_py = min(10_000, n_bars)
    sub = bars.iloc[:n_py]
    feat = compute(sub, detector.schema).to_numpy()
    rows = strategic_rows(sub, detector.schema)
    out = bundle.infer_rows(rows)
    model_in = bundle.select_rows(rows)
    ts = sub.index.asi8
    cols = [sub[c].to_numpy() for c in ("open", "high", "low", "close", "volume")]
    core = _PythonCore(detector)
    started = time.perf_counter()
    for i in range(n_py):
        core.step(int(ts[i]), *(col[i] for col in cols), feat[i], out.vectors[i], out.probs[i], out.quantiles[i],
                  model_in[i])  # fmt: skip
    py_per_bar = (time.perf_counter() - started) / n_py
    python_core_s = floor_s + py_per_bar * n_bars
    stream = detector.stream()
    records = [
        {"ts": ts.value, "open": r.open, "high": r.high, "low": r.low, "close": r.close, "volume": r.volume}
        for ts, r in zip(bars.index, bars.itertuples(index=False), strict=True)
    ]
    started = time.perf_counter()
    for m in records:
        stream.update(m)
    streaming = time.perf_counter() - started
    return {
        "bars": n_bars,
        "batch_bars_per_s": n_bars / batch,
        "floor_features_model_bars_per_s": n_bars / floor_s,
        "python_core_bars_per_s": n_bars / python_core_s,
        "batch_over_python_core": python_core_s / batch,
        "batch_share_of_floor": floor_s / batch,
        "stream_bars_per_s": n_bars / streaming,
        "stream_p50_us": stream.latency.p50,
        "stream_p99_us": stream.latency.p99,
        "batch_over_stream": streaming / batch,
    }


def internal_precompute_speed() -> dict[str, float]:
    import tempfile

    from sage.regime.precompute import precompute_regimes

    catalog = ParquetDataCatalog(str(sample.DEFAULT_CATALOG))
    n_source = len(catalog.bars(bar_types=[sample.ES_BAR_TYPE]))
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        result = precompute_regimes(sample.DEFAULT_CATALOG, "ESU3.XCME-5-MINUTE-LAST-INTERNAL", out_catalog=out)
        seconds = time.perf_counter() - started
    return {"source_bars": n_source, "internal_bars": result.rows, "source_bars_per_s": n_source / seconds}


def main(argv: list[str] | None = None) -> dict[str, float]:
    logging.getLogger("sage").setLevel(logging.ERROR)
    _ = DataType
    print("1. calibration of the shipped forecaster on held-out tails (last 30%)")
    table = calibration_table()
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    worst = (table["adaptive"] - table["nominal"]).abs().max()
    print(f"   adaptive conformal max |coverage - nominal| = {worst * 100:.1f} points (goal <= 2)")
    print("\n2. RegimeActor per-bar cost in a BacktestEngine (ES 1-min bars)")
    cost = actor_cost()
    for k, v in cost.items():
        print(f"   {k:<34} {v:,.1f}")
    print("\n3. precompute (batch) throughput, 50k synthetic bars; baselines measured in this run")
    speed = precompute_speed()
    for k, v in speed.items():
        print(f"   {k:<34} {v:,.2f}")
    print("\n4. precompute of an INTERNAL bar type (ES 5-minute from 1-minute, engine aggregation + batch)")
    internal = internal_precompute_speed()
    for k, v in internal.items():
        print(f"   {k:<34} {v:,.1f}")
    return {
        "adaptive_max_coverage_error_points": float(worst * 100),
        "actor_us_per_bar": cost["actor_us_per_bar"],
        "actor_stream_p50_us": cost["stream_p50_us"],
        "actor_stream_p99_us": cost["stream_p99_us"],
        "batch_bars_per_s": speed["batch_bars_per_s"],
        "batch_over_python_core": speed["batch_over_python_core"],
        "batch_share_of_floor": speed["batch_share_of_floor"],
        "internal_source_bars_per_s": internal["source_bars_per_s"],
    }


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
