"""End to end: the shipped sweep gives the same table on the process pool and on Ray, bad parameters
become error rows, and the outputs (table, plots, walk-forward summary) are written."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sage.cli import main
from sage.sweep.run import run_sweep

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "configs" / "sweeps" / "ema_cross_es.yaml"
BASE = ROOT / "configs" / "sweeps" / "ema_cross_base.yaml"


@pytest.fixture(scope="module")
def pool_run(sample_catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "pool"
    assert main(["sweep", str(SHIPPED), "--catalog", str(sample_catalog), "--workers", "2", "--out", str(out)]) == 0
    return out


def test_shipped_sweep_writes_table_plots_and_summary(pool_run: Path) -> None:
    table = pd.read_parquet(pool_run / "results.parquet")
    assert len(table) == 12 and table.error.isna().all()
    assert list(table.task) == list(range(12))  # deterministic order: fold, split, grid point
    assert (table.fills > 0).all() and table.sharpe.notna().all()
    pd.testing.assert_frame_equal(pd.read_csv(pool_run / "results.csv").drop(columns="error"),
                                  table.drop(columns="error"), check_dtype=False)  # fmt: skip
    assert (pool_run / "sharpe_ES.png").stat().st_size > 10_000
    assert len(list((pool_run / "tasks").glob("*.yaml"))) == 12
    summary = (pool_run / "summary.md").read_text()
    assert "Walk-forward selection" in summary and "0 failed" in summary


def test_walk_forward_picks_on_train_and_reports_test(pool_run: Path) -> None:
    table = pd.read_parquet(pool_run / "results.parquet")
    selection = pd.read_csv(pool_run / "selection.csv")
    assert list(selection.fold) == [0, 1]
    for row in selection.itertuples():
        fold = table[table.fold == row.fold]
        train, test = fold[fold.split == "train"], fold[fold.split == "test"]
        assert row.train_sharpe == pytest.approx(train.sharpe.max())  # chosen on train only ...
        chosen = test[test.point == row.point].iloc[0]
        assert row.test_sharpe == pytest.approx(chosen.sharpe)  # ... reported on test
        assert row.test_pnl == pytest.approx(chosen.pnl)
        assert train.end.iloc[0] < test.start.iloc[0]


def test_ray_gives_the_same_table_as_the_pool(pool_run: Path, sample_catalog: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    args = ["sweep", str(SHIPPED), "--catalog", str(sample_catalog), "--engine", "ray", "--workers", "2",
            "--out", str(out), "--no-plots"]  # fmt: skip
    assert main(args) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), pd.read_parquet(pool_run / "results.parquet"))
    assert (out / "results.csv").read_bytes() == (pool_run / "results.csv").read_bytes()


def test_bad_parameters_become_error_rows_not_a_crash(sample_catalog: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "bad.yaml"
    sweep.write_text(f"""
base: {BASE}
grid:
  engine.strategies.0.config.fast_ema_period: [10, 40, -3]   # 40 >= slow period 30; -3 not positive
folds:
  - {{train: {{start: "2013-09-02T13:00", end: "2013-09-02T15:00"}}, test: {{start: "2013-09-02T15:00:01", end: "2013-09-02T17:00"}}}}
""")
    result = run_sweep(sweep, sample_catalog, out=tmp_path / "out", engine="serial")
    table = result.table
    assert len(table) == 6
    ok, slow, negative = (table[table.fast_ema_period == v] for v in (10, 40, -3))
    assert ok.error.isna().all() and ok.pnl.notna().all()
    assert slow.error.str.contains("must be less than").all() and slow.pnl.isna().all()
    assert negative.error.str.contains("fast_ema_period").all()
    assert (result.selection.point == 0).all()  # failed points are never selected
    assert "## Failed tasks" in (tmp_path / "out" / "summary.md").read_text()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out" / "results.parquet"), table)


def test_cli_reports_a_bad_sweep_file_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", str(BASE), "--out", str(tmp_path)]) == 2
    assert "needs a `base:` key" in capsys.readouterr().out
