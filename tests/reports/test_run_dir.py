"""save_run/load_run on a real demo backtest: the contract's files, exact round trips, honest equity."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sage.nodes.backtest import BacktestOutcome
from sage.reports.run_dir import RunDirError, load_run, save_run

from .conftest import DEMO, ES_BARS


def test_run_dir_has_the_contract_files(demo_run: Path) -> None:
    names = {p.name for p in demo_run.iterdir()}
    assert {
        "run.json",
        "stats.json",
        "fills.parquet",
        "fills.csv",
        "orders.parquet",
        "positions.parquet",
        "account_XCME.parquet",
        "account_SIM.parquet",
        "regimes.parquet",
        "tca.parquet",
        "bars",
        "report",
    } <= names
    assert not any(n.startswith(".") for n in names)
    assert not [p for p in demo_run.parent.iterdir() if p.name.startswith(".")]  # no staging left behind
    assert {p.name for p in (demo_run / "bars").iterdir()} == {
        "ESU3.XCME-1-MINUTE-LAST-EXTERNAL.parquet",
        "EUR_USD.SIM-1-HOUR-MID-EXTERNAL.parquet",
    }
    meta = json.loads((demo_run / "run.json").read_text())
    assert meta["venues"] == ["XCME", "SIM"]
    assert meta["instruments"]["ESU3.XCME"]["multiplier"] == 50.0
    assert meta["config_text"] == DEMO.read_text()
    assert meta["records"]["RegimeData"] == 2264


def test_load_run_round_trips_the_outcome(demo_run: Path, demo_outcome: BacktestOutcome) -> None:
    run = load_run(demo_run)
    assert run.meta["run_id"] == demo_outcome.result.run_id
    for name in ("fills", "orders", "positions"):
        saved, original = getattr(run, name), getattr(demo_outcome, name)
        assert list(saved.index) == list(original.index)
        assert list(saved.columns) == list(original.columns)
    pd.testing.assert_frame_equal(run.fills.drop(columns="info"), demo_outcome.fills.drop(columns="info"))
    assert run.fills["info"].tolist() == demo_outcome.fills["info"].tolist()  # dicts back as dicts
    assert run.orders["commissions"].tolist() == [
        [str(m) for m in c] for c in demo_outcome.orders["commissions"]
    ]
    csv = pd.read_csv(demo_run / "fills.csv")
    assert csv["last_px"].astype(float).tolist() == demo_outcome.fills["last_px"].astype(float).tolist()
    for venue, report in demo_outcome.account.items():
        assert run.account[venue]["total"].tolist() == report["total"].tolist()
    regimes, published = run.regimes, demo_outcome.published["RegimeData"]
    assert len(regimes) == len(published)
    np.testing.assert_array_equal(np.stack(regimes["probabilities"]), np.stack(published["probabilities"]))
    np.testing.assert_array_equal(
        regimes["ts_event"].to_numpy(np.int64), published["ts_event"].to_numpy(np.int64)
    )
    assert run.decisions.empty  # the EMACross demo decides nothing sage-wise


def test_mark_to_market_equity_ends_at_nautilus_balance_plus_open_pnl(
    demo_run: Path, demo_outcome: BacktestOutcome
) -> None:
    """Final equity = Nautilus's final account balances + the open positions marked at the last close."""
    run = load_run(demo_run)
    balance = sum(float(r["total"].iloc[-1]) for r in demo_outcome.account.values())
    open_pnl = 0.0
    for inst, bar_type in (("ESU3.XCME", ES_BARS), ("EUR/USD.SIM", "EUR/USD.SIM-1-HOUR-MID-EXTERNAL")):
        pos = demo_outcome.positions[demo_outcome.positions.instrument_id == inst].iloc[-1]
        qty = float(pos.quantity) * {"LONG": 1, "SHORT": -1, "FLAT": 0}[pos.side]
        open_pnl += qty * (run.bars[bar_type]["close"].iloc[-1] - pos.avg_px_open) * run.multipliers[inst]
    usd = run.stats["sage"]["USD"]
    assert usd["equity_source"] == "mark_to_market"
    assert usd["start_equity"] == 2_000_000.0
    assert usd["end_equity"] == pytest.approx(balance + open_pnl, abs=1.0)  # avg_px_open is rounded
    assert usd["n_returns"] > 200 and usd["sharpe"] is not None and usd["max_drawdown"] > 0
    nautilus = run.stats["nautilus"]
    assert nautilus["pnls"]["USD"]["PnL (total)"] == demo_outcome.result.stats_pnls["USD"]["PnL (total)"]
    assert "Sharpe Ratio (252 days)" in nautilus["returns"]


def test_tca_covers_every_filled_order(demo_run: Path, demo_outcome: BacktestOutcome) -> None:
    run = load_run(demo_run)
    assert len(run.tca) == len(demo_outcome.orders)
    filled = demo_outcome.fills["last_qty"].astype(float).groupby(demo_outcome.fills["instrument_id"]).sum()
    assert run.tca.groupby("instrument_id")["filled_qty"].sum().to_dict() == pytest.approx(filled.to_dict())


def test_refuses_a_non_empty_directory_and_overwrites_when_asked(
    demo_outcome: BacktestOutcome, demo_bars: dict, sample_catalog: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not empty"):
        save_run(demo_outcome, out, config_path=DEMO, catalog=sample_catalog, bars=demo_bars, tearsheet=False)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    save_run(
        demo_outcome,
        out,
        config_path=DEMO,
        catalog=sample_catalog,
        bars=demo_bars,
        tearsheet=False,
        overwrite=True,
    )
    assert (out / "run.json").is_file() and not (out / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_failed_save_leaves_nothing(
    demo_outcome: BacktestOutcome, demo_bars: dict, sample_catalog: Path, tmp_path: Path
) -> None:
    broken = dataclasses.replace(
        demo_outcome, published={"DecisionRecord": pd.DataFrame({"action": ["JUMP"]})}
    )
    with pytest.raises((ValueError, KeyError, TypeError)):
        save_run(
            broken,
            tmp_path / "run",
            config_path=DEMO,
            catalog=sample_catalog,
            bars=demo_bars,
            tearsheet=False,
        )
    assert list(tmp_path.iterdir()) == []


def test_load_run_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="does not exist"):
        load_run(tmp_path / "nope")
    with pytest.raises(RunDirError, match="not a sage run directory"):
        load_run(tmp_path)
