"""The tearsheet of a saved run: PNG plots plus one self-contained HTML page (plots embedded, no network).

Plots (each a separate PNG, each readable on its own):

* ``equity.png`` - mark-to-market equity per settlement currency and its drawdown;
* ``price_<instrument>.png`` - bar closes with the regime shaded behind them (RegimeData labels), fills
  (buys ^, sells v), decision entries and the stops/targets of risk proposals;
* ``decisions.png`` - combined signal against its threshold and each agent's weight over time;
* ``fallback_levels.png`` - regime fallback level over time (1 = model + calibration .. 5 = last resort);
* ``tca.png`` - implementation shortfall per parent order, by execution algorithm.

A run without the records a plot needs (e.g. the EMACross demo publishes no DecisionRecord) gets a panel
that says so instead of an empty or missing picture. Rendering uses matplotlib's Agg backend only, so it
works on a headless machine.
"""

from __future__ import annotations

import base64
import html
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sage.reports.run_dir import Run, bars_by_instrument

__all__ = ["REGIME_COLORS", "TearsheetResult", "build_tearsheet", "statistics_table"]

log = logging.getLogger(__name__)

#: Background colour per regime code (BULL, BEAR, SIDEWAYS, VOLATILE).
REGIME_COLORS: tuple[str, ...] = ("#2ca02c", "#d62728", "#7f7f7f", "#ff7f0e")
_FIGSIZE = (11.0, 4.2)
_DPI = 110


class TearsheetResult:
    """Where the tearsheet went: the HTML page and the PNGs, in page order."""

    def __init__(self, html_path: Path, images: list[Path]) -> None:
        self.html_path = html_path
        self.images = images

    def __repr__(self) -> str:
        return f"TearsheetResult({self.html_path}, {len(self.images)} images)"


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - matplotlib is a declared dependency of reports
        raise RuntimeError("the tearsheet needs matplotlib: pip install matplotlib") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _dt(ns: Any) -> np.ndarray:
    """UTC ns -> naive datetime64 (matplotlib's date axis; the axis labels say UTC)."""
    return np.asarray(ns, dtype=np.int64).view("datetime64[ns]")


def _break_gaps(ts: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x (datetime64) and y with a NaN after every gap longer than 3 typical spacings, so a line is not
    drawn across a session break or the time between two data sets."""
    ts = np.asarray(ts, dtype=np.int64)
    y = np.asarray(y, dtype=float)
    if len(ts) < 3:
        return _dt(ts), y
    diffs = np.diff(ts)
    gaps = np.flatnonzero(diffs > 3 * np.median(diffs))
    return _dt(np.insert(ts, gaps + 1, ts[gaps] + 1)), np.insert(y, gaps + 1, np.nan)


def _empty_panel(plt: Any, title: str, message: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(_FIGSIZE[0], 2.4))
    ax.set_axis_off()
    ax.set_title(title, loc="left", fontsize=12)
    ax.text(
        0.5,
        0.5,
        message,
        ha="center",
        va="center",
        fontsize=12,
        color="#555555",
        transform=ax.transAxes,
        wrap=True,
    )
    fig.savefig(path, dpi=_DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.autofmt_xdate()
    fig.savefig(path, dpi=_DPI, bbox_inches="tight")
    plt.close(fig)
    return path


# -- plots ------------------------------------------------------------------------------------------------


def plot_equity(plt: Any, curves: Mapping[str, Any], path: Path) -> Path:
    if not curves:
        return _empty_panel(plt, "Equity", "no fills and no account reports in this run", path)
    fig, (ax_eq, ax_dd) = plt.subplots(
        2, 1, figsize=(_FIGSIZE[0], 6.0), sharex=True, gridspec_kw={"height_ratios": [2.2, 1]}
    )
    for ccy, curve in curves.items():
        x = _dt(curve.equity.index.asi8)
        ax_eq.plot(x, curve.equity.to_numpy(), lw=1.0, label=f"{ccy} ({curve.source.replace('_', ' ')})")
        ax_dd.fill_between(x, curve.drawdown.to_numpy() * 100.0, 0.0, step="post", alpha=0.5, label=ccy)
    ax_eq.set_title("Equity (marked to market at bar closes)", loc="left")
    ax_eq.set_ylabel("equity")
    ax_eq.legend(loc="best", fontsize=8)
    ax_eq.grid(alpha=0.3)
    ax_dd.set_ylabel("drawdown %")
    ax_dd.set_xlabel("time (UTC)")
    ax_dd.grid(alpha=0.3)
    return _save(plt, fig, path)


def _shade_regimes(ax: Any, ts: np.ndarray, labels: np.ndarray, end_ns: int) -> None:
    """Shade each regime from its record to the next record (the label in force over that interval)."""
    from matplotlib.patches import Patch

    from sage.data.regimes import Regime

    order = np.argsort(ts, kind="stable")
    ts, labels = ts[order].astype(np.int64), labels[order].astype(np.int64)
    # A label is in force until the next record, but not across a data gap (session break, weekend):
    # there it ends one typical record spacing later.
    step = int(np.median(np.diff(ts))) if len(ts) > 1 else 0
    following = np.append(ts[1:], max(end_ns, int(ts[-1])))
    gaps = np.flatnonzero((following - ts) > 3 * step) if step > 0 else np.empty(0, dtype=np.int64)
    ts_all = np.insert(ts, gaps + 1, ts[gaps] + step)
    lab_all = np.insert(labels, gaps + 1, -1)
    x = _dt(np.append(ts_all, max(end_ns, int(ts_all[-1]))))
    lab = np.append(lab_all, lab_all[-1])
    handles = []
    for regime in Regime:
        mask = lab == int(regime)
        if mask.any():
            ax.fill_between(
                x,
                0,
                1,
                where=mask,
                step="post",
                transform=ax.get_xaxis_transform(),
                color=REGIME_COLORS[int(regime)],
                alpha=0.13,
                linewidth=0,
            )
            handles.append(Patch(color=REGIME_COLORS[int(regime)], alpha=0.3, label=regime.name.lower()))
    return handles


def _brackets(proposals: pd.DataFrame, decisions: pd.DataFrame, instrument: str) -> pd.DataFrame:
    """``ts_event, stop_price, target_price`` of the instrument's non-flat risk proposals: the RiskProposal
    records when the run has them, else the ``risk`` section of the decision details."""
    if len(proposals):
        p = proposals[(proposals["instrument_id"].astype(str) == instrument) & (proposals["side"] != 0)]
        return p[["ts_event", "stop_price", "target_price"]]
    rows = []
    if len(decisions):
        from sage.reports.explain import parse_details

        mine = decisions[decisions["instrument_id"].astype(str) == instrument]
        for ts, details in zip(mine["ts_event"], parse_details(mine)):
            risk = details.get("risk") or {}
            if risk.get("side"):
                stop, target = risk.get("stop_price"), risk.get("target_price")
                rows.append((int(ts), np.nan if stop is None else stop, np.nan if target is None else target))
    return pd.DataFrame(rows, columns=["ts_event", "stop_price", "target_price"])


def plot_price(plt: Any, run: Run, instrument: str, bars: pd.DataFrame, path: Path) -> Path:
    from sage.reports.stats import fills_numeric

    fig, ax = plt.subplots(figsize=_FIGSIZE)
    ts = bars.index.asi8
    ax.plot(*_break_gaps(ts, bars["close"].to_numpy()), color="black", lw=0.7, label="close", zorder=2)
    notes = []
    handles = []
    regimes = run.regimes
    if len(regimes):
        r = regimes[regimes["instrument_id"].astype(str) == instrument]
        if len(r):
            handles = _shade_regimes(
                ax, r["ts_event"].to_numpy(dtype=np.int64), r["label"].to_numpy(), int(ts[-1])
            )
    if not handles:
        notes.append("no RegimeData for this instrument")
    fills = fills_numeric(run.fills)
    fills = fills[fills["instrument_id"] == instrument]
    buys, sells = fills[fills["signed_qty"] > 0], fills[fills["signed_qty"] < 0]
    if len(buys):
        ax.scatter(
            _dt(buys["ts"]), buys["price"], marker="^", s=22, color="#1a9850", label="buy fill", zorder=4
        )
    if len(sells):
        ax.scatter(
            _dt(sells["ts"]), sells["price"], marker="v", s=22, color="#d73027", label="sell fill", zorder=4
        )
    if fills.empty:
        notes.append("no fills")
    decisions = run.decisions
    proposals = run.proposals
    if len(decisions):
        d = decisions[
            (decisions["instrument_id"].astype(str) == instrument) & decisions["action"].isin(["BUY", "SELL"])
        ]
        if len(d):
            close_at = bars["close"].to_numpy()[
                np.clip(np.searchsorted(ts, d["ts_event"].to_numpy(np.int64), "right") - 1, 0, None)
            ]
            ax.scatter(
                _dt(d["ts_event"]),
                close_at,
                marker="o",
                s=40,
                facecolors="none",
                edgecolors="#4575b4",
                label="decision entry",
                zorder=5,
            )
    brackets = _brackets(proposals, decisions, instrument)
    if len(brackets):
        x = _dt(brackets["ts_event"])
        ax.scatter(x, brackets["stop_price"], marker="_", s=60, color="#d73027", label="stop", zorder=3)
        ax.scatter(x, brackets["target_price"], marker="_", s=60, color="#1a9850", label="target", zorder=3)
    if not len(decisions):
        notes.append("no decisions in this run")
    elif not (decisions["instrument_id"].astype(str) == instrument).any():
        notes.append("no decisions for this instrument")
    title = f"{instrument}: price, regimes and trades"
    if notes:
        title += " (" + "; ".join(notes) + ")"
    ax.set_title(title, loc="left")
    ax.set_xlabel("time (UTC)")
    ax.grid(alpha=0.3)
    lines, labels = ax.get_legend_handles_labels()
    ax.legend(
        lines + handles, labels + [h.get_label() for h in handles], loc="upper left", fontsize=7, ncol=4
    )
    return _save(plt, fig, path)


def plot_decisions(plt: Any, run: Run, path: Path) -> Path:
    from sage.reports.explain import agent_frame, parse_details

    decisions = run.decisions
    if len(decisions) == 0:
        return _empty_panel(
            plt,
            "Decisions and agent weights",
            "no decisions in this run (its strategies published no DecisionRecord)",
            path,
        )
    agents = agent_frame(decisions)
    fig, (ax_sig, ax_w) = plt.subplots(2, 1, figsize=(_FIGSIZE[0], 6.0), sharex=True)
    multi = decisions["instrument_id"].nunique() > 1
    threshold = [
        float((d.get("combined") or {}).get("threshold") or np.nan) for d in parse_details(decisions)
    ]
    decisions = decisions.assign(_threshold=threshold)
    for k, (inst, rows) in enumerate(decisions.groupby(decisions["instrument_id"].astype(str))):
        ts = rows["ts_event"].to_numpy(np.int64)
        x, signal = _break_gaps(ts, rows["combined_signal"].to_numpy(dtype=float))
        ax_sig.plot(x, signal, lw=0.8, label=f"combined {inst}" if multi else "combined")
        _, th = _break_gaps(ts, rows["_threshold"].to_numpy(dtype=float))
        if np.isfinite(th).any():
            ax_sig.plot(x, th, color="grey", ls="--", lw=0.7, label="threshold" if k == 0 else None)
            ax_sig.plot(x, -th, color="grey", ls="--", lw=0.7)
    ax_sig.axhline(0.0, color="black", lw=0.5)
    ax_sig.set_title("Combined signal and threshold", loc="left")
    ax_sig.legend(loc="upper left", fontsize=7)
    ax_sig.grid(alpha=0.3)
    if len(agents):
        for (inst, agent), rows in agents.groupby(["instrument_id", "agent"]):
            x, w = _break_gaps(rows["ts"].to_numpy(np.int64), rows["weight"].to_numpy(dtype=float))
            ax_w.step(x, w, where="post", lw=0.9, label=f"{agent} {inst}" if multi else agent)
        ax_w.legend(loc="upper left", fontsize=7, ncol=4)
        ax_w.set_title("Agent weights (SAGE combiner)", loc="left")
    else:
        ax_w.text(
            0.5, 0.5, "decisions carry no agent details", ha="center", va="center", transform=ax_w.transAxes
        )
    ax_w.set_ylabel("weight")
    ax_w.set_xlabel("time (UTC)")
    ax_w.grid(alpha=0.3)
    return _save(plt, fig, path)


def plot_fallback_levels(plt: Any, run: Run, path: Path) -> Path:
    regimes, decisions = run.regimes, run.decisions
    if len(regimes) == 0 and len(decisions) == 0:
        return _empty_panel(plt, "Regime fallback levels", "no RegimeData and no decisions in this run", path)
    fig, ax = plt.subplots(figsize=_FIGSIZE)
    if len(regimes):
        for inst, rows in regimes.groupby(regimes["instrument_id"].astype(str)):
            rows = rows.sort_values("ts_event", kind="stable")
            ax.step(
                _dt(rows["ts_event"]),
                rows["fallback_level"],
                where="post",
                lw=0.8,
                label=f"RegimeData {inst}",
            )
            share = rows["fallback_level"].value_counts(normalize=True).sort_index()
            log.debug("fallback levels %s: %s", inst, share.to_dict())
    if len(decisions):
        ax.scatter(
            _dt(decisions["ts_event"]),
            decisions["regime_level"],
            s=8,
            color="#4575b4",
            label="level at decision",
            zorder=3,
        )
    ax.set_yticks([1, 2, 3, 4, 5])
    ax.set_yticklabels(["1 model+conformal", "2 model", "3 rules", "4 volatility", "5 last resort"])
    ax.set_ylim(5.4, 0.6)  # level 1 (best) on top
    ax.set_title("Regime fallback level over time", loc="left")
    ax.set_xlabel("time (UTC)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=7)
    return _save(plt, fig, path)


def plot_tca(plt: Any, run: Run, path: Path) -> Path:
    tca = run.tca
    if tca is None or len(tca) == 0:
        return _empty_panel(plt, "Transaction costs", "no parent orders in this run", path)
    fig, (ax_t, ax_b) = plt.subplots(1, 2, figsize=_FIGSIZE, gridspec_kw={"width_ratios": [2.2, 1]})
    groups = list(tca.groupby(["instrument_id", "algorithm"]))
    for (inst, algo), rows in groups:
        ax_t.scatter(_dt(rows["arrival_ts"]), rows["shortfall_bps"], s=6, alpha=0.6, label=f"{inst} {algo}")
    ax_t.axhline(0.0, color="black", lw=0.5)
    ax_t.set_title("Implementation shortfall per parent order (bps, + = cost)", loc="left")
    ax_t.set_xlabel("arrival time (UTC)")
    ax_t.legend(loc="upper left", fontsize=7)
    ax_t.grid(alpha=0.3)
    data = [g["shortfall_bps"].dropna().to_numpy() for _, g in groups]
    ax_b.boxplot(data, showfliers=False)
    ax_b.set_xticks(range(1, len(groups) + 1), [f"{i}\n{a}" for (i, a), _ in groups], fontsize=7)
    ax_b.set_title("distribution", loc="left")
    ax_b.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.savefig(path, dpi=_DPI, bbox_inches="tight")
    plt.close(fig)
    return path


# -- statistics and page -------------------------------------------------------------------------------------


def statistics_table(run: Run) -> pd.DataFrame:
    """One table of every statistic of the run: sage's (per currency) then Nautilus's own."""
    rows: list[tuple[str, str, Any]] = []
    for ccy, values in (run.stats.get("sage") or {}).items():
        for key, value in values.items():
            if key != "currency":
                rows.append((f"sage ({ccy})", key, value))
    nautilus = run.stats.get("nautilus") or {}
    for ccy, values in (nautilus.get("pnls") or {}).items():
        rows += [(f"Nautilus PnL ({ccy})", k, v) for k, v in values.items()]
    rows += [("Nautilus returns", k, v) for k, v in (nautilus.get("returns") or {}).items()]
    rows += [("Nautilus general", k, v) for k, v in (nautilus.get("general") or {}).items()]
    return pd.DataFrame(rows, columns=["group", "statistic", "value"])


def _fmt_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:,.6g}" if abs(value) < 1e6 else f"{value:,.2f}"
    if isinstance(value, int) and abs(value) > 10**15:  # ns timestamps
        return f"{pd.Timestamp(value, tz='UTC').isoformat()}"
    return str(value)


def _html_table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt_value(v))}</td>" for v in row) + "</tr>"
        for row in df.itertuples(index=False, name=None)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:8px 0 24px;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px}
th{background:#f3f3f3}td:last-child{text-align:right}img{max-width:100%;margin:8px 0 24px;border:1px solid #eee}
.meta td:last-child{text-align:left}h2{margin-top:32px}"""


def build_tearsheet(run: Run, out_dir: str | Path | None = None) -> TearsheetResult:
    """Render every plot of ``run`` into ``out_dir`` (default ``RUN/report``) and write ``index.html``."""
    from sage.reports.stats import equity_curves

    plt = _pyplot()
    out = Path(out_dir) if out_dir is not None else run.report_dir
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    per_instrument = bars_by_instrument(run.bars)
    curves = equity_curves(
        run.fills, run.account, per_instrument, run.multipliers, run.meta.get("backtest_start")
    )
    sections: list[tuple[str, Path]] = [("Equity and drawdown", plot_equity(plt, curves, out / "equity.png"))]
    shown = sorted(
        set(run.meta.get("traded_instruments", []))
        | set(run.regimes.get("instrument_id", pd.Series(dtype=str)).astype(str))
        | set(run.decisions.get("instrument_id", pd.Series(dtype=str)).astype(str))
    )
    for inst in shown:
        if inst in per_instrument:
            name = "price_" + "".join(ch if ch.isalnum() or ch in ".-" else "_" for ch in inst) + ".png"
            sections.append(
                (
                    f"{inst}: price, regimes, trades",
                    plot_price(plt, run, inst, per_instrument[inst], out / name),
                )
            )
        else:
            log.warning("no bars for %s in the run directory: no price plot", inst)
    sections.append(("Decisions and agent weights", plot_decisions(plt, run, out / "decisions.png")))
    sections.append(("Regime fallback levels", plot_fallback_levels(plt, run, out / "fallback_levels.png")))
    sections.append(("Transaction costs", plot_tca(plt, run, out / "tca.png")))

    meta = run.meta
    meta_rows = pd.DataFrame(
        [
            (k, meta.get(k))
            for k in (
                "run_id",
                "config_path",
                "catalog",
                "backtest_start",
                "backtest_end",
                "elapsed_secs",
                "venues",
                "bar_types",
                "records",
                "sage_version",
            )
        ],
        columns=["field", "value"],
    )
    from sage.execution.tca import tca_summary

    tca_html = "<p>no parent orders</p>"
    if run.tca is not None and len(run.tca):
        summary = tca_summary(run.tca, by=["instrument_id", "algorithm"]).reset_index()
        tca_html = _html_table(summary)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>sage run {html.escape(str(meta.get('run_id')))}</title><style>{_CSS}</style></head><body>",
        f"<h1>sage backtest report</h1><div class='meta'>{_html_table(meta_rows)}</div>",
        "<h2>Statistics</h2>",
        _html_table(statistics_table(run)),
    ]
    for title, path in sections:
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(
            f"<h2>{html.escape(title)}</h2><img alt='{html.escape(path.name)}' src='data:image/png;base64,{data}'>"
        )
        if path.name == "tca.png":
            parts.append(tca_html)
    parts.append("</body></html>")
    html_path = out / "index.html"
    html_path.write_text("\n".join(parts))
    return TearsheetResult(html_path, [p for _, p in sections])
