"""Why did the strategy do that? Find the decision(s) at a time in a saved run and show them in full.

A ``DecisionRecord`` carries the whole chain of one decision in ``details_json`` (the contract in
``docs/reports.md``): the bar, the regime and its fallback level, each agent's signal and weight, the
combined signal against its threshold, the risk proposal, portfolio and kill-switch checks, the chosen
execution algorithm and feature attributions. This module finds records by time (the decision in force at
``ts`` is the last one with ``ts_event <= ts``: nothing after ``ts`` is ever shown) and renders them as
rich tables for the terminal, or returns them as objects for a notebook.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from rich.console import Console

    from sage.data.types import DecisionRecord
    from sage.reports.run_dir import Run

__all__ = ["ExplainError", "agent_frame", "decisions_at", "parse_details", "parse_time", "print_decision"]


class ExplainError(Exception):
    """A time that cannot be read or a run/instrument without the decision asked for."""


def parse_time(value: str | int) -> int:
    """UTC nanoseconds from integer nanoseconds (``"1378080000000000000"``) or ISO 8601 text.

    ISO text without an offset is read as UTC (runs are stamped in UTC)."""
    if isinstance(value, (int, np.integer)):
        return int(value)
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError):
        stamp = None
    if stamp is None or stamp is pd.NaT:
        raise ExplainError(
            f"--at {value!r}: not an ISO 8601 time (e.g. 2013-09-02T14:30) or integer nanoseconds"
        )
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return int(stamp.as_unit("ns").value)


def _iso(ns: int) -> str:
    return pd.Timestamp(int(ns), tz="UTC").isoformat()


def parse_details(decisions: pd.DataFrame) -> list[dict[str, Any]]:
    """``details_json`` of every row parsed (``{}`` for an empty or invalid document)."""
    out = []
    for text in decisions.get("details_json", pd.Series([], dtype=str)):
        try:
            value = json.loads(text) if text else {}
        except ValueError:
            value = {}
        out.append(value if isinstance(value, dict) else {})
    return out


def agent_frame(decisions: pd.DataFrame) -> pd.DataFrame:
    """One row per (decision, agent) from the details: ``ts, instrument_id, agent, timeframe, direction,
    strength, weight, performance_weight, regime_multiplier, uncertainty_factor`` (NaN where null)."""
    rows = []
    cols = [
        "direction",
        "strength",
        "value",
        "weight",
        "performance_weight",
        "regime_multiplier",
        "uncertainty_factor",
    ]
    if len(decisions):
        for ts, inst, details in zip(
            decisions["ts_event"], decisions["instrument_id"], parse_details(decisions)
        ):
            for agent in details.get("agents") or []:
                row = {
                    "ts": int(ts),
                    "instrument_id": str(inst),
                    "agent": str(agent.get("agent")),
                    "timeframe": str(agent.get("timeframe")),
                }
                for c in cols:
                    v = agent.get(c)
                    row[c] = float(v) if isinstance(v, (int, float)) else math.nan
                rows.append(row)
    return pd.DataFrame(rows, columns=["ts", "instrument_id", "agent", "timeframe", *cols])


def decisions_at(run: Run, ts: int | str, instrument: str | None = None, n: int = 1) -> list[DecisionRecord]:
    """The ``n`` decisions at or just before ``ts`` (oldest first) as ``DecisionRecord`` objects.

    With ``instrument`` None every instrument of the run contributes its own ``n`` latest. Raises
    :class:`ExplainError` naming what is available when the run has no decisions, the instrument is unknown
    or ``ts`` precedes the first decision.
    """
    from sage.data.types import DecisionRecord

    if n < 1:
        raise ExplainError(f"--n must be >= 1, got {n}")
    at = parse_time(ts)
    frame = run.decisions
    if frame is None or len(frame) == 0:
        raise ExplainError(
            f"run {run.path} has no DecisionRecords: its strategies published none "
            "(e.g. the EMACross demo; SageStrategy publishes one per decision)"
        )
    frame = frame.assign(_row=np.arange(len(frame)))
    instruments = sorted(set(frame["instrument_id"].astype(str)))
    if instrument is not None:
        if instrument not in instruments:
            raise ExplainError(f"run {run.path} has no decisions for {instrument}; it has {instruments}")
        instruments = [instrument]
    picked = []
    for inst in instruments:
        rows = frame[frame["instrument_id"].astype(str) == inst].sort_values(
            ["ts_event", "_row"], kind="stable"
        )
        before = rows[rows["ts_event"].astype(np.int64) <= at]
        if before.empty and instrument is not None:
            first = _iso(int(rows["ts_event"].iloc[0]))
            raise ExplainError(f"no decision for {inst} at or before {_iso(at)}; the first is at {first}")
        picked.append(before.tail(n))
    chosen = pd.concat(picked).sort_values(["ts_event", "_row"], kind="stable") if picked else frame.iloc[:0]
    if chosen.empty:
        first = int(frame["ts_event"].min())
        raise ExplainError(f"no decision at or before {_iso(at)}; the first is at {_iso(first)}")
    fields = [s.name for s in DecisionRecord._ALL]
    return [DecisionRecord.from_dict({f: row[f] for f in fields}) for _, row in chosen.iterrows()]


# -- rendering -----------------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:,.{digits}f}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v, 3) for v in value) + "]"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items()) or "-"
    return str(value)


def _kv_table(title: str, data: dict[str, Any] | None, keys: Sequence[str] | None = None) -> Any:
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", justify="right")
    if not data:
        table.add_row("-", "not applicable")
        return table
    for key in keys or list(data):
        value = data.get(key)
        is_ns = key == "ts" and isinstance(value, int) and not isinstance(value, bool)
        table.add_row(key, _iso(value) if is_ns else _fmt(value))
    return table


_ACTION_STYLE = {"BUY": "green", "SELL": "red", "CLOSE": "yellow", "HOLD": "cyan", "NO_TRADE": "dim"}


def print_decision(record: DecisionRecord, console: Console, run: Run | None = None) -> None:
    """Render one decision: headline, regime, agents, combined signal, risk, checks, execution,
    attributions and the explanation sentence. Missing sections print as 'not applicable'."""
    from rich.table import Table

    from sage.data.regimes import Regime

    d = record.details
    style = _ACTION_STYLE.get(record.action, "")
    console.rule(
        f"[{style}]{record.action}[/{style}] {record.instrument_id.value} at {_iso(record.ts_event)}"
    )
    console.print(
        f"decision {record.decision_id}  quantity {record.quantity:g}  algorithm {record.algorithm or '-'}  "
        f"regime {Regime(record.regime_label).name} (level {record.regime_level})  "
        f"combined {_fmt(record.combined_signal)} ± {_fmt(record.combined_uncertainty)}",
        markup=False,
        highlight=False,
    )
    bar = d.get("bar")
    regime = dict(d.get("regime") or {})
    if regime.get("label") is not None:
        regime["label"] = f"{Regime(int(regime['label'])).name} ({regime['label']})"
    if bar:
        console.print(_kv_table("Bar", bar, ["bar_type", "ts", "close", "atr"]))
    console.print(
        _kv_table("Regime", regime, ["label", "level", "probabilities", "uncertainty", "confidence", "ts"])
    )

    agents = d.get("agents") or []
    if not agents and run is not None and len(run.signals):
        s = run.signals
        same = s[
            (s["instrument_id"].astype(str) == record.instrument_id.value)
            & (s["ts_event"] == record.ts_event)
        ]
        agents = [dict(r) for _, r in same.iterrows()]
    table = Table(title="Agents", title_justify="left")
    # Short headers keep the table readable in an 80-column terminal; the caption names them in full.
    headers = {
        "agent": "agent",
        "timeframe": "tf",
        "direction": "dir",
        "strength": "str",
        "value": "value",
        "weight": "weight",
        "performance_weight": "perf",
        "regime_multiplier": "regime×",
        "uncertainty_factor": "uncert×",
    }
    cols = list(headers)
    table.caption = "dir = direction, str = strength, perf = performance weight, regime× = regime multiplier, uncert× = uncertainty factor"
    for c, header in headers.items():
        left = c in ("agent", "timeframe")
        table.add_column(header, justify="left" if left else "right", no_wrap=left)
    for agent in agents:
        table.add_row(*(_fmt(agent.get(c), 3) for c in cols))
    if not agents:
        table.add_row("no agent signals", *[""] * (len(cols) - 1))
    console.print(table)
    console.print(
        _kv_table(
            "Combined signal",
            d.get("combined"),
            ["signal", "uncertainty", "disagreement", "threshold", "passed"],
        )
    )

    risk = d.get("risk")
    if not risk and run is not None and len(run.proposals):
        p = run.proposals
        same = p[
            (p["instrument_id"].astype(str) == record.instrument_id.value)
            & (p["ts_event"] <= record.ts_event)
        ]
        if len(same):
            risk = {
                k: v for k, v in same.iloc[-1].items() if k not in ("size_probabilities", "instrument_id")
            }
    console.print(
        _kv_table(
            "Risk proposal",
            risk,
            [
                "side",
                "units",
                "quantity",
                "stop_price",
                "target_price",
                "risk_amount",
                "reward_risk",
                "stop_atr_multiple",
                "confidence",
                "source",
                "scale",
            ]
            if risk and "units" in risk
            else None,
        )
    )
    console.print(_kv_table("Portfolio check", d.get("portfolio")))
    console.print(_kv_table("Kill switch", d.get("kill_switch")))
    console.print(_kv_table("Execution", d.get("execution")))

    attributions = sorted(d.get("attributions") or [], key=lambda a: -abs(float(a.get("score") or 0.0)))
    table = Table(title="Attributions (largest first)", title_justify="left")
    for c in ("agent", "feature", "lag", "score"):
        table.add_column(c, justify="right" if c in ("lag", "score") else "left")
    for a in attributions:
        table.add_row(_fmt(a.get("agent")), _fmt(a.get("feature")), _fmt(a.get("lag")), _fmt(a.get("score")))
    if not attributions:
        table.add_row("none", "", "", "")
    console.print(table)
    console.print(f"[bold]Explanation:[/bold] {record.explanation or '-'}")
