"""One real demo backtest per session, saved twice: as it is (EMACross: no decisions) and with the
records SageStrategy will publish added (synthetic_records.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from sage.nodes.backtest import BacktestOutcome, load_backtest_config, run_backtest
from sage.reports.run_dir import load_run_bars, save_run

from .synthetic_records import synthetic_records

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
ES_BARS = "ESU3.XCME-1-MINUTE-LAST-EXTERNAL"


@pytest.fixture(scope="session")
def demo_outcome(sample_catalog: Path) -> BacktestOutcome:
    return run_backtest(load_backtest_config(DEMO, catalog=sample_catalog))


@pytest.fixture(scope="session")
def demo_bars(sample_catalog: Path) -> dict[str, pd.DataFrame]:
    return load_run_bars(load_backtest_config(DEMO, catalog=sample_catalog))


@pytest.fixture(scope="session")
def demo_run(
    demo_outcome: BacktestOutcome, sample_catalog: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("runs") / "demo"
    return save_run(demo_outcome, out, config_path=DEMO, catalog=sample_catalog)


@pytest.fixture(scope="session")
def sage_run(
    demo_outcome: BacktestOutcome,
    demo_bars: dict[str, pd.DataFrame],
    sample_catalog: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    records = synthetic_records(
        demo_bars[ES_BARS], demo_outcome.published["RegimeData"], "ESU3.XCME", ES_BARS
    )
    outcome = dataclasses.replace(demo_outcome, published={**demo_outcome.published, **records})
    out = tmp_path_factory.mktemp("runs") / "sage"
    return save_run(outcome, out, config_path=DEMO, catalog=sample_catalog, bars=demo_bars)
