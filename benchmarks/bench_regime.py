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
3. **Precompute throughput** (``RegimeDetector.batch``) on synthetic bars, as bars/s, next to the
   streaming path over the same bars (ratio in the same run).
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
from sage.regime.detector import DetectorConfig, load_detector

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


def precompute_speed(n_bars: int = 50_000, model: str = "default") -> dict[str, float]:
    bars = generate_bars(SyntheticMarketConfig(seed=3, n_bars=n_bars))[["open", "high", "low", "close", "volume"]]
    detector = load_detector(model)
    detector.batch(bars.iloc[:2000])  # compile/warm
    started = time.perf_counter()
    detector.batch(bars)
    batch = time.perf_counter() - started
    stream = detector.stream()
    records = [
        {"ts": ts.value, "open": r.open, "high": r.high, "low": r.low, "close": r.close, "volume": r.volume}
        for ts, r in zip(bars.index, bars.itertuples(index=False), strict=True)
    ]
    started = time.perf_counter()
    for m in records:
        stream.update(m)
    streaming = time.perf_counter() - started
    return {"bars": n_bars, "batch_bars_per_s": n_bars / batch, "stream_bars_per_s": n_bars / streaming,
            "batch_over_stream": streaming / batch}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    logging.getLogger("sage").setLevel(logging.ERROR)
    _ = DataType
    print("1. calibration of the shipped forecaster on held-out tails (last 30%)")
    table = calibration_table()
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    worst = (table["adaptive"] - table["nominal"]).abs().max()
    print(f"   adaptive conformal max |coverage - nominal| = {worst * 100:.1f} points (goal <= 2)")
    print("\n2. RegimeActor per-bar cost in a BacktestEngine (ES 1-min bars)")
    for k, v in actor_cost().items():
        print(f"   {k:<32} {v:,.1f}")
    print("\n3. precompute (batch) vs streaming throughput, 50k synthetic bars")
    for k, v in precompute_speed().items():
        print(f"   {k:<32} {v:,.2f}")


if __name__ == "__main__":
    main()
