"""Soak: one million 1-minute bars through a BacktestEngine with the RegimeActor, memory and latency
bounded. Marked ``soak`` (excluded from the default run; ``make soak`` runs it, ~3 min on 2 cores).

How the run is kept bounded (docs/reliability.md): data is fed in chunks with Nautilus's streaming
mode (``engine.add_data(chunk)``, ``engine.run(streaming=True)``, ``engine.clear_data()``, and
``engine.end()`` once at the end), so the engine never holds more than one chunk of bars; the cache
keeps at most ``CacheConfig.bar_capacity`` bars per bar type; the actor's state is fixed-size (ring
buffers for features, calibration, latency and the last ``max_transitions`` level changes).
"""

from __future__ import annotations

import gc
import logging
import os
import time

import numpy as np
import psutil
import pytest
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.cache.config import CacheConfig
from nautilus_trader.config import LoggingConfig
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import Bar
from nautilus_trader.model.enums import AccountType, OmsType
from nautilus_trader.model.objects import Money, Price, Quantity

from sage.data.synthetic import SyntheticMarketConfig, generate_bars, synthetic_bar_type, synthetic_instrument
from sage.regime.actor import RegimeActor, RegimeActorConfig

N_BARS = int(os.environ.get("SAGE_SOAK_BARS", "1000000"))
CHUNK = 100_000


def _bars(frame, bar_type, pp: int, sp: int) -> list[Bar]:
    ts = frame.index.asi8
    o, h, l, c, v = (frame[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
    return [Bar(bar_type, Price(o[i], pp), Price(h[i], pp), Price(l[i], pp), Price(c[i], pp),
                Quantity(v[i], sp), int(ts[i]), int(ts[i])) for i in range(len(frame))]  # fmt: skip


@pytest.mark.soak
def test_million_bars_with_regime_actor_memory_and_latency_bounded() -> None:
    logging.disable(logging.WARNING)
    market = SyntheticMarketConfig(seed=3, n_bars=N_BARS)
    frame = generate_bars(market)
    instrument, bar_type = synthetic_instrument(market), synthetic_bar_type(market)
    engine = BacktestEngine(BacktestEngineConfig(
        logging=LoggingConfig(log_level="ERROR"), cache=CacheConfig(bar_capacity=10_000)))  # fmt: skip
    engine.add_venue(instrument.id.venue, OmsType.NETTING, AccountType.MARGIN,
                     starting_balances=[Money(1_000_000, USD)], base_currency=USD)  # fmt: skip
    engine.add_instrument(instrument)
    actor = RegimeActor(RegimeActorConfig(bar_type=str(bar_type), model="default"))
    engine.add_actor(actor)
    process = psutil.Process()
    rss_mb, p50_us, p99_us, rates = [], [], [], []
    try:
        for start in range(0, N_BARS, CHUNK):
            bars = _bars(frame.iloc[start : start + CHUNK], bar_type, instrument.price_precision,
                         instrument.size_precision)  # fmt: skip
            engine.add_data(bars)
            t0 = time.perf_counter()
            engine.run(streaming=True)
            rates.append(len(bars) / (time.perf_counter() - t0))
            engine.clear_data()
            del bars
            gc.collect()
            rss_mb.append(process.memory_info().rss / 2**20)
            p50_us.append(actor.stream.latency.percentile(50) if actor.stream else float("nan"))
            p99_us.append(actor.stream.latency.percentile(99) if actor.stream else float("nan"))
        engine.end()
        published = actor.published
    finally:
        engine.dispose()
    print(f"\nsoak {N_BARS:,d} bars: RSS MB per chunk {np.round(rss_mb, 1).tolist()}")
    print(f"p50 / p99 latency us per chunk {np.round(p50_us, 1).tolist()} / {np.round(p99_us, 1).tolist()}")
    print(f"bars/s per chunk {np.round(rates, 0).tolist()}")
    assert published == N_BARS
    steady = rss_mb[1:]  # the first chunk pays for imports, numba and the model
    assert max(steady) - steady[0] < 150, f"RSS grew {max(steady) - steady[0]:.0f} MB after warm-up"
    # Timing on a shared machine is noisy (p99 follows whatever else runs), so the bounds are on the
    # median latency of the last 1024 bars of each chunk and are generous: they catch growth with the
    # number of bars (a leak, an unbounded buffer), not a busy neighbour.
    assert max(p50_us[2:]) < 5 * min(p50_us[1:]) + 500, "per-bar latency grew during the run"
    assert min(rates[1:]) > 0.25 * max(rates[1:]), "throughput fell during the run"
