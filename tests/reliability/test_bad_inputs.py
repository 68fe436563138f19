"""Fuzzing with bad input: the regime detector and the RegimeActor keep publishing with the right
fallback level; ingest turns any garbage file into an ``IngestError`` and leaves the catalog alone.

What already exists elsewhere and is not repeated here: ingest's per-row corruption fuzz with an
oracle (tests/data/test_ingest.py), features' stream == batch and bad-bar skipping on random bars
(tests/features/test_properties.py), the fallback chain under random failures (tests/regime/).
What this adds: the *trained, shipped* model inside the detector stream under every kind of bad bar
at random places, the actor inside a real BacktestEngine with the bad bars Nautilus lets through
(zero and negative prices, gaps, duplicate time stamps), and arbitrary bytes/text as an ingest file.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig, LoggingConfig
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import Bar, DataType
from nautilus_trader.model.enums import AccountType, OmsType
from nautilus_trader.model.objects import Money, Price, Quantity

from sage.data.ingest import IngestConfig, IngestError, ingest_file
from sage.data.synthetic import SyntheticMarketConfig, generate_bars, synthetic_bar_type, synthetic_instrument
from sage.data.types import RegimeData
from sage.regime.actor import RegimeActor, RegimeActorConfig
from sage.regime.detector import DetectorConfig, RegimeDetector, load_detector
from sage.regime.health import HealthFlag

N_BARS = 1000
FIRST_BAD = 700  # after warm-up: the model levels (1-2) are in use from about bar 600
MARKET = SyntheticMarketConfig(seed=11, n_bars=N_BARS)
DETECTOR = DetectorConfig(drift_reference_bars=300, bar_interval_ns=MARKET.bar_interval_ns)  # gaps checked
LABELS = {"BULL", "BEAR", "SIDEWAYS", "VOLATILE"}
PRICE_KINDS = ("nan_close", "inf_high", "zero_all", "negative_all", "high_below_low", "neg_volume")
TIME_KINDS = ("gap", "duplicate_ts", "ts_back")


@pytest.fixture(scope="module")
def clean_bars() -> list[dict]:
    frame = generate_bars(MARKET)[["open", "high", "low", "close", "volume"]]
    return [{"ts": ts.value, **{k: float(v) for k, v in r.items()}} for ts, r in frame.iterrows()]


@pytest.fixture(scope="module")
def detector() -> RegimeDetector:
    logging.disable(logging.WARNING)  # fallback transitions are logged per event; expected here
    return load_detector("default", DETECTOR)  # the shipped, trained model


def _corrupt(rows: list[dict], i: int, kind: str, bar_ns: int) -> None:
    r = rows[i]
    if kind == "nan_close":
        r["close"] = math.nan
    elif kind == "inf_high":
        r["high"] = math.inf
    elif kind == "zero_all":
        r.update(open=0.0, high=0.0, low=0.0, close=0.0)
    elif kind == "negative_all":
        r.update(open=-r["open"], high=-r["low"], low=-r["high"], close=-r["close"])
    elif kind == "high_below_low":
        r["high"], r["low"] = r["low"] - 1.0, r["high"]
    elif kind == "neg_volume":
        r["volume"] = -5.0
    elif kind == "gap":
        for later in rows[i:]:
            later["ts"] += 20 * bar_ns
    elif kind == "duplicate_ts":
        r["ts"] = rows[i - 1]["ts"]
    elif kind == "ts_back":
        r["ts"] = rows[i - 1]["ts"] - 5 * bar_ns


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(hits=st.dictionaries(st.integers(FIRST_BAD, N_BARS - 1), st.sampled_from(PRICE_KINDS + TIME_KINDS),
                            min_size=1, max_size=8).map(lambda d: sorted(d.items())))  # one kind per bar
def test_detector_stream_degrades_per_bar_and_never_stops(
    detector: RegimeDetector, clean_bars: list[dict], hits: list[tuple[int, str]]
) -> None:
    rows = [dict(r) for r in clean_bars]
    bar_ns = MARKET.bar_interval_ns
    for i, kind in hits:
        _corrupt(rows, i, kind, bar_ns)
    price_bad = {i for i, k in hits if k in PRICE_KINDS}
    stream = detector.stream()
    out = [stream.update(r) for r in rows]
    assert len(out) == len(rows)
    levels = np.array([o["level"] for o in out])
    assert (levels[FIRST_BAD - 50 : FIRST_BAD] <= 2).any(), "the model should be in use before the damage"
    for i, o in enumerate(out):
        probs = np.array([o["p_bull"], o["p_bear"], o["p_sideways"], o["p_volatile"]])
        assert o["label"] in LABELS and 1 <= o["level"] <= 5
        assert np.isfinite(probs).all() and abs(probs.sum() - 1.0) < 1e-6 and (probs >= 0).all()
        if i in price_bad:
            assert o["level"] == 5, (i, o)
            assert o["health_flags"] & HealthFlag.MISSING_FEATURES
    prev_ts = None
    for i, r in enumerate(rows):  # the time-stamp issues are flagged where they happen
        if prev_ts is not None and r["ts"] <= prev_ts:
            assert out[i]["health_flags"] & HealthFlag.STALE_INPUT, (i, r["ts"], prev_ts)
        prev_ts = r["ts"] if prev_ts is None else max(prev_ts, r["ts"])
    gaps = {i for i, k in hits if k == "gap"}
    for i in gaps:
        assert out[i]["health_flags"] & HealthFlag.STALE_INPUT


# -- the actor in a real engine -----------------------------------------------------------------------

RECEIVED: list[RegimeData] = []


class _CollectorConfig(ActorConfig, frozen=True):
    pass


class _Collector(Actor):
    def on_start(self) -> None:
        self.subscribe_data(DataType(RegimeData))

    def on_data(self, data) -> None:
        RECEIVED.append(getattr(data, "data", data))


def test_actor_in_backtest_engine_publishes_for_every_bad_bar(clean_bars: list[dict]) -> None:
    """Zero and negative prices, a 20-bar gap and a duplicate time stamp, through Nautilus itself."""
    instrument = synthetic_instrument(MARKET)
    bar_type = synthetic_bar_type(MARKET)
    pp, sp = instrument.price_precision, instrument.size_precision
    bar_ns = MARKET.bar_interval_ns
    rows = [dict(r) for r in clean_bars]
    plan = {720: "zero_all", 740: "negative_all", 760: "gap", 780: "duplicate_ts", 800: "negative_all"}
    for i, kind in plan.items():
        _corrupt(rows, i, kind, bar_ns)
    bars = [
        Bar(bar_type, Price(r["open"], pp), Price(r["high"], pp), Price(r["low"], pp), Price(r["close"], pp),
            Quantity(max(r["volume"], 0.0), sp), r["ts"], r["ts"])
        for r in rows
    ]  # fmt: skip
    RECEIVED.clear()
    engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(log_level="ERROR")))
    engine.add_venue(instrument.id.venue, OmsType.NETTING, AccountType.MARGIN,
                     starting_balances=[Money(1_000_000, USD)], base_currency=USD)  # fmt: skip
    engine.add_instrument(instrument)
    engine.add_data(bars)
    engine.add_actor(RegimeActor(RegimeActorConfig(bar_type=str(bar_type), model="default", detector=DETECTOR)))
    engine.add_actor(_Collector(_CollectorConfig()))
    try:
        engine.run()
    finally:
        engine.dispose()
    got = list(RECEIVED)
    assert len(got) == len(bars)  # one record per bar, bad or not
    assert [g.ts_event for g in got] == [b.ts_event for b in bars]
    assert {g.model_version for g in got} == {"regime-default@1.0.0"}
    for i in (720, 740, 800):
        assert got[i].fallback_level == 5 and got[i].health_flags & HealthFlag.MISSING_FEATURES
    for i in (760, 780):
        assert got[i].health_flags & HealthFlag.STALE_INPUT
    assert min(g.fallback_level for g in got[700:720]) <= 2
    assert min(g.fallback_level for g in got[810:]) <= 2, "the model levels come back after the damage"


# -- ingest: anything at all as a file ----------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    content=st.one_of(
        st.binary(max_size=400),
        st.text(max_size=400),
        st.lists(st.lists(st.one_of(st.text(max_size=8), st.floats(allow_nan=True, allow_infinity=True),
                                    st.integers()), min_size=1, max_size=7), max_size=12).map(
            lambda rows: "timestamp,open,high,low,close,volume\n" + "\n".join(",".join(map(str, r)) for r in rows)),
    ),
    suffix=st.sampled_from([".csv", ".csv.gz", ".parquet"]),
)  # fmt: skip
def test_ingest_of_arbitrary_bytes_is_refused_cleanly(tmp_path: Path, content, suffix: str) -> None:
    work = tmp_path / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    path = work / f"garbage{suffix}"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    catalog = work / "catalog"
    config = IngestConfig(instrument_id="FUZZ.XNAS", bar_spec="1-MINUTE-LAST")
    try:
        report = ingest_file(path, catalog, config)
    except IngestError as exc:
        assert str(exc)  # a message for the user
        assert not catalog.exists() or not any(p.is_file() for p in catalog.rglob("*"))
    else:  # garbage that happens to be a valid bar file: it must then be readable
        assert report.rows_written > 0
