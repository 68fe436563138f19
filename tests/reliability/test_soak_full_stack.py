"""Soak of the whole SAGE stack: a million 1-minute bars through RegimeActor + SageStrategy + the exec
algorithms in one BacktestEngine, with the :class:`~sage.nodes.cache_purge.CachePurger` bounding what
Nautilus keeps. Marked ``soak`` (``make soak``; ~8 min on 2 cores; ``SAGE_SOAK_BARS`` shortens it).

What it proves (issue 9, "a 1M-bar soak without unbounded growth of caches, buffers or latency; long
backtests purge or bound what Nautilus keeps, without losing reports"):

* memory: RSS after the warm-up chunk grows by less than 100 MB over the run;
* latency: the CPU throughput of the last three chunks stays above 60 % of the first three after warm-up;
* caches: the orders the cache holds stay bounded (the purger archives and removes closed ones), so the
  simulated venue's per-fill walk over a NETTING position's orders stays short and throughput holds;
* reports: every fill seen on the message bus is in the purger-built fills report, every order in the
  orders report, and the account report's last balance is the account's balance.

Bars are fed in chunks with Nautilus's streaming mode (as ``test_soak.py``), so the engine never holds
more than one chunk of input.
"""

from __future__ import annotations

import gc
import logging
import os
import time

import numpy as np
import psutil
import pytest

from benchmarks.bench_full_stack import add_sage, make_engine, market_bars, market_config
from sage.nodes.cache_purge import CachePurger, CachePurgerConfig

N_BARS = int(os.environ.get("SAGE_SOAK_BARS", "1000000"))
CHUNK = 100_000


@pytest.mark.soak
def test_million_bars_full_sage_stack_bounded_with_reports_complete() -> None:
    from nautilus_trader.model.events import OrderFilled, OrderInitialized

    logging.disable(logging.WARNING)
    instrument, bar_type, bars = market_bars(market_config(N_BARS, seed=11))
    engine = make_engine(instrument)
    add_sage(engine, instrument, bar_type, with_actor=True)
    purger = CachePurger(CachePurgerConfig(interval_mins=60, buffer_mins=240))
    engine.add_actor(purger)
    fills_seen: list[str] = []
    orders_seen = [0]

    def on_event(event) -> None:
        if isinstance(event, OrderFilled):
            fills_seen.append(event.trade_id.value)
        elif isinstance(event, OrderInitialized):
            orders_seen[0] += 1

    engine.kernel.msgbus.subscribe("events.order.*", on_event)
    process = psutil.Process()
    rss_mb, cached_orders, rates = [], [], []
    try:
        for start in range(0, N_BARS, CHUNK):
            chunk = bars[start : start + CHUNK]
            engine.add_data(chunk)
            t0 = time.process_time()  # CPU time: the machine may be shared, and wall time follows the neighbours
            engine.run(streaming=True)
            rates.append(len(chunk) / (time.process_time() - t0))
            engine.clear_data()
            del chunk
            gc.collect()
            rss_mb.append(process.memory_info().rss / 2**20)
            cached_orders.append(engine.cache.orders_total_count())
        engine.end()
        reports = purger.reports([instrument.id.venue])
        account = engine.cache.account_for_venue(instrument.id.venue)
        balance = account.balance_total(account.base_currency).as_double()
    finally:
        engine.dispose()
    print(f"\nfull-stack soak {N_BARS:,d} bars: RSS MB per chunk {np.round(rss_mb, 1).tolist()}")
    print(f"orders held by the cache per chunk {cached_orders}; purged {purger.counts}")
    print(f"bars/s (CPU) per chunk {np.round(rates, 0).tolist()}; fills {len(fills_seen):,d}")
    assert fills_seen, "the strategy never traded: the soak would not exercise the caches"
    steady = rss_mb[1:]
    assert max(steady) - steady[0] < 100, f"RSS grew {max(steady) - steady[0]:.0f} MB after warm-up"
    assert max(cached_orders[1:]) < 4 * max(cached_orders[0], 50), f"cache kept growing: {cached_orders}"
    # How much trading a chunk holds varies with the market (entries cost more than holds), so compare the
    # run's end with its start rather than single chunks: a cost that grows with the run shows up here.
    early, late = np.mean(rates[1:4]), np.mean(rates[-3:])
    assert late > 0.6 * early, f"throughput fell during the run: {np.round(rates).tolist()}"
    fills = reports["fills"]
    assert sorted(fills["trade_id"].astype(str)) == sorted(fills_seen), "fills report lost fills"
    last = reports[f"account.{instrument.id.venue}"]
    assert float(last["total"].iloc[-1]) == pytest.approx(balance)
    assert len(reports["orders"]) == orders_seen[0], "orders report lost orders"
