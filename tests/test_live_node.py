"""Offline paper trading in a real ``TradingNode``: catalog replay in, sandbox fills out, records persisted.

Every run here is a real Nautilus ``TradingNode`` built from ``configs/live_paper.yaml`` (or a copy with
a test actor added), started, traded and stopped by the end of the replay; nothing is mocked.
"""

from __future__ import annotations

import copy
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig
from nautilus_trader.model.data import Bar, BarType, DataType
from nautilus_trader.persistence.catalog import ParquetDataCatalog

from sage.data.sample import DEFAULT_CATALOG, ES_BAR_TYPE
from sage.data.types import RegimeData
from sage.nodes.backtest import ConfigError
from sage.nodes.live import LiveOutcome, load_live_config, run_live
from sage.nodes.replay_client import PaperExecClientConfig, ReplayDataClientConfig

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "configs" / "live_paper.yaml"
TEMPLATES = REPO / "configs" / "live_templates"
MAX_BARS = 300
TAG_ENV = "SAGE_TEST_MODEL_TAG"  # an env placeholder in the test config, to check redaction


class RegimeEchoConfig(ActorConfig, frozen=True):
    """Config of :class:`RegimeEcho`; ``model_version`` comes from an env placeholder in the test."""

    bar_type: str
    model_version: str = "echo"


class RegimeEcho(Actor):
    """Publishes one ``RegimeData`` per bar (label from the bar's direction), as a regime model would."""

    def __init__(self, config: RegimeEchoConfig) -> None:
        super().__init__(config)
        self._bar_type = BarType.from_str(config.bar_type)

    def on_start(self) -> None:
        self.subscribe_bars(self._bar_type)

    def on_bar(self, bar: Bar) -> None:
        up = bar.close >= bar.open
        record = RegimeData(
            bar.bar_type.instrument_id,
            label=0 if up else 1,
            probabilities=(0.7, 0.1, 0.1, 0.1) if up else (0.1, 0.7, 0.1, 0.1),
            vector=[bar.close.as_double()] + [0.0] * 7,
            confidence=0.7,
            fallback_level=1,
            model_version=self.config.model_version,
            ts_event=bar.ts_event,
            ts_init=bar.ts_init,
        )
        self.publish_data(DataType(RegimeData), record)


def _paper_yaml(tmp: Path, *, fill_on_next_bar: bool = True, echo: bool = True) -> Path:
    """configs/live_paper.yaml plus the echo actor and Bar persistence (to read the live bars back)."""
    raw: dict[str, Any] = yaml.safe_load(PAPER.read_text())
    raw = copy.deepcopy(raw)
    raw["logging"] = {"log_level": "ERROR"}
    raw["exec_clients"]["XCME"]["config"]["fill_on_next_bar"] = fill_on_next_bar
    raw["streaming"]["include_types"].append("nautilus_trader.model.data:Bar")
    if echo:
        raw["actors"] = [
            {
                "actor_path": f"{__name__}:RegimeEcho",
                "config_path": f"{__name__}:RegimeEchoConfig",
                "config": {"bar_type": ES_BAR_TYPE, "model_version": "${" + TAG_ENV + "}"},
            },
        ]
    path = tmp / "paper.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _run(config: Path, catalog: Path, persist: Path, **kwargs: Any) -> tuple[LiveOutcome, float, set[int]]:
    threads_before = {t.ident for t in threading.enumerate()}
    started = time.perf_counter()
    outcome = run_live(config, catalog, persist=persist, timeout_secs=55, **kwargs)
    wall = time.perf_counter() - started
    leftover = {t.ident for t in threading.enumerate()} - threads_before
    return outcome, wall, leftover  # type: ignore[return-value]


@pytest.fixture(scope="module")
def paper(
    sample_catalog: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[LiveOutcome, float, set[int], Path]:
    tmp = tmp_path_factory.mktemp("paper")
    os.environ[TAG_ENV] = "echo-secret-7f3a"
    try:
        outcome, wall, leftover = _run(
            _paper_yaml(tmp), sample_catalog, tmp / "persist", speed="max", max_bars=MAX_BARS
        )
    finally:
        del os.environ[TAG_ENV]
    return outcome, wall, leftover, tmp / "persist"


def _live_bars(persist: Path) -> tuple[np.ndarray, np.ndarray]:
    bars = ParquetDataCatalog(str(persist)).bars(bar_types=[ES_BAR_TYPE])
    return np.array([b.ts_event for b in bars]), np.array([b.close.as_double() for b in bars])


def _decisions(outcome: LiveOutcome) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    fills = outcome.fills
    decided = pd.to_datetime(outcome.orders.loc[fills.index, "ts_init"]).astype("int64").to_numpy()
    filled = pd.to_datetime(fills.ts_event).astype("int64").to_numpy()
    return decided, filled, fills.last_px.astype(float).to_numpy()


# -- the acceptance run ------------------------------------------------------------------------------


def test_node_starts_trades_and_stops_cleanly_within_60s(
    paper: tuple[LiveOutcome, float, set[int], Path],
) -> None:
    outcome, wall, _, _ = paper
    assert outcome.stop_reason == "replay finished"  # stopped by the end of data, not the watchdog
    assert wall < 60 and outcome.wall_secs < 60
    stats = outcome.replay["REPLAY"]
    assert (stats.bars_emitted, stats.finished, stats.error) == (MAX_BARS, True, None)
    assert len(outcome.orders) >= 4 and len(outcome.fills) == len(outcome.orders)
    assert set(outcome.fills.instrument_id) == {"ESU3.XCME"}
    assert len(outcome.positions) >= 1
    balance = outcome.account["XCME"].iloc[-1]
    assert balance["currency"] == "USD" and float(balance["locked"]) == 0.0  # flat at the end: on_stop closed


def test_no_threads_or_tasks_left_behind(paper: tuple[LiveOutcome, float, set[int], Path]) -> None:
    outcome, _, leftover, _ = paper
    assert leftover == set()
    assert outcome.pending_after_dispose == []
    # Nautilus's Actor.stop re-creates its executor worker task; run_live cancels it before disposal.
    assert set(outcome.cancelled_tasks) <= {"ActorExecutor._worker"}


def test_replayed_bars_are_restamped_to_live_time_in_catalog_order(
    paper: tuple[LiveOutcome, float, set[int], Path], sample_catalog: Path
) -> None:
    outcome, _, _, persist = paper
    ts, close = _live_bars(persist)
    original = ParquetDataCatalog(str(sample_catalog)).bars(bar_types=[ES_BAR_TYPE])[:MAX_BARS]
    assert len(ts) == MAX_BARS
    np.testing.assert_array_equal(close, [b.close.as_double() for b in original])  # same order, same prices
    assert (np.diff(ts) > 0).all()
    stats = outcome.replay["REPLAY"]
    assert (stats.first_live_ns, stats.last_live_ns) == (ts[0], ts[-1])
    assert (stats.first_original_ns, stats.last_original_ns) == (original[0].ts_event, original[-1].ts_event)
    assert ts[0] > pd.Timestamp("2024-01-01", tz="UTC").value  # live clock, not 2013


def test_orders_fill_on_the_bar_after_the_decision(paper: tuple[LiveOutcome, float, set[int], Path]) -> None:
    """A market order decided on bar t fills at bar t+1's close, stamped with bar t+1's time.

    Orders decided on the last bar, or by on_stop after it, fill at the last close when the feed ends.
    """
    outcome, _, _, persist = paper
    ts, close = _live_bars(persist)
    decided, filled, price = _decisions(outcome)
    bar = np.searchsorted(ts, decided, side="right") - 1  # the bar being handled when the order was made
    assert (bar >= 0).all()
    regular = bar < len(ts) - 1
    assert regular.sum() >= 4 and (~regular).sum() <= 3
    assert ((decided - ts[bar])[regular] < 1e9).all()  # created while handling that bar
    np.testing.assert_array_equal(filled[regular], ts[bar[regular] + 1])
    np.testing.assert_array_equal(price[regular], close[bar[regular] + 1])
    assert (filled[regular] > decided[regular]).all()
    np.testing.assert_array_equal(filled[~regular], ts[-1])
    np.testing.assert_array_equal(price[~regular], close[-1])


def test_custom_data_is_persisted_and_converted(paper: tuple[LiveOutcome, float, set[int], Path]) -> None:
    outcome, _, _, persist = paper
    assert outcome.stream_dir is not None and outcome.stream_dir.parent == persist.resolve() / "live"
    feather = list((outcome.stream_dir / "custom_regime_data").rglob("*.feather"))
    assert feather, "RegimeData was not streamed"
    assert "RegimeData" in outcome.converted
    records = [c.data for c in ParquetDataCatalog(str(persist)).query(RegimeData)]
    ts, close = _live_bars(persist)
    assert len(records) == MAX_BARS
    assert [r.ts_event for r in records] == ts.tolist()
    assert [r.vector[0] for r in records] == close.tolist()
    assert {r.model_version for r in records} == {"echo-secret-7f3a"}  # the env placeholder was resolved


def test_resolved_env_values_are_redacted_from_the_stream_config(
    paper: tuple[LiveOutcome, float, set[int], Path],
) -> None:
    outcome, _, _, _ = paper
    assert outcome.stream_dir is not None
    text = (outcome.stream_dir / "config.json").read_text()
    assert "RegimeEcho" in text and "echo-secret-7f3a" not in text and "***" in text


# -- other fill conventions and speeds ---------------------------------------------------------------


def test_stock_sandbox_fills_on_the_decision_bar(sample_catalog: Path, tmp_path: Path) -> None:
    """``fill_on_next_bar: false`` is Nautilus's sandbox as shipped: the order executes on arrival,
    at the decision bar's close, and the fill is stamped with that bar's time (the sandbox's clock
    only moves with market data), i.e. *before* the order was created."""
    outcome, wall, leftover = _run(
        _paper_yaml(tmp_path, fill_on_next_bar=False, echo=False),
        sample_catalog,
        tmp_path / "p",
        speed="max",
        max_bars=MAX_BARS,
    )
    assert outcome.stop_reason == "replay finished" and wall < 60 and leftover == set()
    ts, close = _live_bars(tmp_path / "p")
    decided, filled, price = _decisions(outcome)
    bar = np.searchsorted(ts, decided, side="right") - 1
    assert len(filled) >= 4
    np.testing.assert_array_equal(filled, ts[bar])
    np.testing.assert_array_equal(price, close[bar])
    assert (filled < decided).all()


def test_speed_paces_the_replay_in_wall_time(sample_catalog: Path, tmp_path: Path) -> None:
    """speed 600 plays ten 1-minute bars per second (gaps capped at max_wait_secs), from ``start``."""
    n, speed, start = 8, 600.0, pd.Timestamp("2013-09-03 14:30", tz="UTC")
    path = _paper_yaml(tmp_path, echo=False)
    raw = yaml.safe_load(path.read_text())
    raw["data_clients"]["REPLAY"]["config"]["start"] = start.isoformat()
    path.write_text(yaml.safe_dump(raw))
    outcome, _, _ = _run(path, sample_catalog, tmp_path / "p", speed=speed, max_bars=n)
    stats = outcome.replay["REPLAY"]
    original = ParquetDataCatalog(str(sample_catalog)).bars(bar_types=[ES_BAR_TYPE], start=start)[:n]
    assert stats.bars_emitted == n and stats.first_original_ns == original[0].ts_event >= start.value
    gaps = np.diff([b.ts_event for b in original]) / 1e9 / speed
    expected = float(np.minimum(gaps, 5.0).sum())
    assert stats.last_live_ns is not None and stats.first_live_ns is not None
    actual = (stats.last_live_ns - stats.first_live_ns) / 1e9
    assert math.isclose(actual, expected, abs_tol=0.3), (actual, expected)  # 2 shared cores


# -- configuration ---------------------------------------------------------------------------------


def test_shipped_config_parses_into_nautilus_config_objects(sample_catalog: Path, tmp_path: Path) -> None:
    config = load_live_config(PAPER, sample_catalog, speed="max", max_bars=50, persist=tmp_path)
    replay = config.node.data_clients["REPLAY"]
    assert isinstance(replay, ReplayDataClientConfig)
    assert (replay.speed, replay.max_bars, replay.catalog_path) == ("max", 50, str(sample_catalog.resolve()))
    assert isinstance(config.node.exec_clients["XCME"], PaperExecClientConfig)
    assert config.exec_factories["XCME"].__name__ == "SandboxLiveExecClientFactory"
    assert config.node.streaming is not None and RegimeData in (config.node.streaming.include_types or [])
    assert config.node.streaming.catalog_path == str(tmp_path.resolve())


def _edited(tmp_path: Path, edit: Any) -> Path:
    raw = yaml.safe_load(PAPER.read_text())
    edit(raw)
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda r: r["data_clients"]["REPLAY"]["config"].update(sped=2), "data_clients.REPLAY.config.sped"),
        (lambda r: r["data_clients"]["REPLAY"]["config"].update(speed="fast"), "speed"),
        (
            lambda r: r["strategies"][0]["config"].update(fast_ema_period="x"),
            "strategies[0].config.fast_ema_period",
        ),
        (lambda r: r.update(timeout_post_stp=1), "timeout_post_stp"),
        (
            lambda r: r["exec_clients"]["XCME"]["config"].update(starting_balances="x"),
            "exec_clients.XCME.config.starting_balances",
        ),
        (
            lambda r: r["data_clients"]["REPLAY"]["config"].update(
                bar_types=["ESU3.XCME-5-MINUTE-LAST-EXTERNAL"]
            ),
            "data_clients.REPLAY.config.bar_types[0]",
        ),
        (
            lambda r: r["streaming"]["include_types"].append("sage.data.types:Nope"),
            "streaming.include_types[4]",
        ),
    ],
)
def test_config_errors_name_the_offending_key(
    sample_catalog: Path, tmp_path: Path, edit: Any, key: str
) -> None:
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_live_config(_edited(tmp_path, edit), sample_catalog, persist=tmp_path)


def test_null_catalog_defaults_to_sample_and_missing_is_a_config_error(tmp_path: Path) -> None:
    config = load_live_config(PAPER, persist=tmp_path)  # like every sage command: the sample catalog
    replay = next(iter(config.node.data_clients.values()))
    assert Path(replay.catalog_path) == DEFAULT_CATALOG.resolve()
    with pytest.raises(ConfigError, match="does not exist"):
        load_live_config(PAPER, tmp_path / "nowhere", persist=tmp_path)


def test_missing_env_var_is_named_with_the_keys_using_it(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"BINANCE_API_KEY \(used at data_clients\.BINANCE\.config\.api_key"
    ):
        load_live_config(TEMPLATES / "binance.yaml", environ={"BINANCE_API_SECRET": "s"}, persist=tmp_path)


# -- real-venue templates: parsed, never connected ----------------------------------------------------

FAKE_ENV = {
    "BINANCE_API_KEY": "k-123",
    "BINANCE_API_SECRET": "s-456",
    "DATABENTO_API_KEY": "db-789",
    "IB_ACCOUNT": "DU0000000",
}


def test_binance_template_parses_with_env_credentials(tmp_path: Path) -> None:
    from nautilus_trader.adapters.binance.config import BinanceDataClientConfig, BinanceExecClientConfig

    config = load_live_config(TEMPLATES / "binance.yaml", environ=FAKE_ENV, persist=tmp_path)
    data, exec_ = config.node.data_clients["BINANCE"], config.node.exec_clients["BINANCE"]
    assert isinstance(data, BinanceDataClientConfig) and isinstance(exec_, BinanceExecClientConfig)
    assert (exec_.api_key, exec_.api_secret, exec_.testnet) == ("k-123", "s-456", True)
    assert config.secrets == {"k-123", "s-456"}
    assert "k-123" not in (TEMPLATES / "binance.yaml").read_text()


def test_databento_paper_template_parses_with_env_credentials(tmp_path: Path) -> None:
    from nautilus_trader.adapters.databento.config import DatabentoDataClientConfig

    config = load_live_config(TEMPLATES / "databento_paper.yaml", environ=FAKE_ENV, persist=tmp_path)
    data = config.node.data_clients["DATABENTO"]
    assert isinstance(data, DatabentoDataClientConfig) and data.api_key == "db-789"
    assert [str(i) for i in data.instrument_ids or []] == ["ESH7.XCME"]
    paper = config.node.exec_clients["XCME"]
    assert isinstance(paper, PaperExecClientConfig) and paper.fill_on_next_bar is False


def test_interactive_brokers_template(tmp_path: Path) -> None:
    """IB's config classes import ``ibapi`` (the ``nautilus_trader[ib]`` extra): without it the loader
    says so; the env placeholders are resolved (and checked) before anything is imported."""
    path = TEMPLATES / "interactive_brokers.yaml"
    with pytest.raises(ConfigError, match=r"IB_ACCOUNT \(used at exec_clients\.IB\.config\.account_id\)"):
        load_live_config(path, environ={}, persist=tmp_path)
    try:
        import ibapi  # noqa: F401
    except ModuleNotFoundError:
        with pytest.raises(ConfigError, match=r"data_clients\.IB\.path: .*nautilus_trader\[ib\]"):
            load_live_config(path, environ=FAKE_ENV, persist=tmp_path)
    else:
        config = load_live_config(path, environ=FAKE_ENV, persist=tmp_path)
        assert config.node.exec_clients["IB"].account_id == "DU0000000"
