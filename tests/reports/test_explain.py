"""explain finds the decision in force at a time (never a later one) and the CLI says what went wrong."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from sage.cli import main
from sage.reports.explain import ExplainError, decisions_at, parse_time
from sage.reports.run_dir import load_run


def _iso(ns: int) -> str:
    return pd.Timestamp(ns, tz="UTC").isoformat()


def test_decision_at_or_just_before_the_time(sage_run: Path) -> None:
    run = load_run(sage_run)
    ts = run.decisions["ts_event"].to_numpy()
    assert len(ts) > 50
    exact = decisions_at(run, int(ts[10]), instrument="ESU3.XCME")
    assert [r.decision_id for r in exact] == ["D-00010"]
    between = decisions_at(run, int(ts[10]) + (int(ts[11]) - int(ts[10])) // 2)
    assert [r.decision_id for r in between] == ["D-00010"]  # D-00011 is later: never shown
    assert [r.decision_id for r in decisions_at(run, int(ts[11]) - 1)] == ["D-00010"]
    last3 = decisions_at(run, _iso(int(ts[20])), n=3)
    assert [r.decision_id for r in last3] == ["D-00018", "D-00019", "D-00020"]
    record = exact[0]
    details = record.details
    assert record.action in ("BUY", "SELL", "NO_TRADE") and len(details["agents"]) == 4
    assert details["bar"]["ts"] == record.ts_event


def test_time_formats_agree() -> None:
    ns = 1378116000000000000  # 2013-09-02 10:00 UTC
    assert parse_time("2013-09-02T10:00") == ns == parse_time("2013-09-02T12:00+02:00") == parse_time(str(ns))
    with pytest.raises(ExplainError, match="not an ISO 8601"):
        parse_time("yesterday-ish")


def test_errors_name_what_exists(sage_run: Path, demo_run: Path) -> None:
    run = load_run(sage_run)
    first = int(run.decisions["ts_event"].min())
    with pytest.raises(ExplainError, match=re.escape(f"the first is at {_iso(first)}")):
        decisions_at(run, first - 1, instrument="ESU3.XCME")
    with pytest.raises(ExplainError, match=r"no decisions for EUR/USD.SIM; it has \['ESU3.XCME'\]"):
        decisions_at(run, first, instrument="EUR/USD.SIM")
    with pytest.raises(ExplainError, match="has no DecisionRecords"):
        decisions_at(load_run(demo_run), first)


def test_cli_explain_prints_the_whole_decision(sage_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = load_run(sage_run)
    trade = run.decisions[run.decisions["action"].isin(["BUY", "SELL"])].iloc[0]
    assert (
        main(["explain", str(sage_run), "--at", _iso(int(trade["ts_event"])), "--instrument", "ESU3.XCME"])
        == 0
    )
    out = capsys.readouterr().out
    for text in (
        trade["action"],
        trade["decision_id"],
        "Agents",
        "momentum",
        "strategic",
        "Combined signal",
        "Risk proposal",
        "stop_price",
        "TWAP",
        "fvg_bull_distance",
        "Explanation:",
        "crossed the ±0.3",
    ):
        assert text in out, text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["explain", "{missing}", "--at", "2013-09-02"], "does not exist"),
        (["explain", "{run}", "--at", "noon"], "not an ISO 8601"),
        (["explain", "{run}", "--at", "2013-09-02", "--n", "0"], "--n must be >= 1"),
        (["explain", "{run}", "--at", "2001-01-01", "--instrument", "ESU3.XCME"], "the first is at"),
        (["report", "{missing}"], "does not exist"),
        (["report", "{empty}"], "not a sage run directory"),
    ],
)
def test_cli_errors(
    args: list[str], message: str, sage_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    paths = {"run": sage_run, "missing": tmp_path / "missing", "empty": tmp_path / "empty"}
    assert main([a.format(**paths) for a in args]) == 2
    out = capsys.readouterr().out
    assert out.startswith("error:") and message in out


def test_cli_report_rebuilds_the_tearsheet(
    sage_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_copy = tmp_path / "run"
    shutil.copytree(sage_run, run_copy)
    shutil.rmtree(run_copy / "report")
    assert main(["report", str(run_copy)]) == 0
    assert "sharpe" in capsys.readouterr().out
    assert {p.name for p in (run_copy / "report").iterdir()} == {
        p.name for p in (sage_run / "report").iterdir()
    }
