"""Transaction-cost analysis (TCA) of parent orders from a Nautilus run's orders and fills.

Why per *parent*: an execution algorithm turns one parent order into many child orders; what a trader
pays is the cost of the parent, measured against the price when the decision was made (the arrival
price), not the cost of each slice against the price when the slice went out. Nautilus links the two:
a primary order given to an exec algorithm carries ``exec_spawn_id == client_order_id``, every child the
algorithm spawns carries ``exec_spawn_id = <primary id>`` (and the primary itself is usually sent as the
last slice, its quantity reduced by each spawn). Orders without an exec algorithm are their own parent.
``parent_order_id`` is *not* used: Nautilus sets it for contingent orders (a bracket's take-profit and
stop-loss), which are separate trading decisions, not slices.

Per parent (columns of :func:`tca_table`, all costs positive = worse for us, in bps of the arrival price):

* ``arrival_price`` - the last market price at or before the parent's creation (``ts_init``), or the
  quote mid when the market frame carries one;
* ``avg_fill_price``, ``filled_qty``, ``fill_rate``;
* ``slippage_bps`` = side * (avg fill - arrival) / arrival;
* ``shortfall_bps`` - implementation shortfall of the paper portfolio: executed cost + opportunity cost of
  the unfilled remainder marked at the end price + fees, over the full parent notional;
* ``participation`` = filled qty / market volume in ``(arrival, end]`` (the replayed tape does not contain
  our own fills, so this is our share of "the rest of the market");
* ``twap_price`` - the time-weighted average market price over ``[arrival, end]``, i.e. what a passive,
  zero-impact TWAP over the same window would have paid; ``twap_cost_bps`` is that benchmark's cost vs
  arrival and ``vs_twap_bps`` our fill price vs the benchmark (for an order filled at once the window is
  a point and the benchmark is the arrival price);
* ``duration_secs`` from arrival to the last event of the parent's family (the later of the last fill and
  the last order update, e.g. a final cancel).

Everything is computed column-wise with numpy (``searchsorted`` into the market tape and cumulative sums),
so a table of thousands of parents over millions of trades costs milliseconds. :func:`write_tca_parquet`
persists the table as a plain Parquet file with a fixed schema (:data:`TCA_SCHEMA`), and
:func:`tca_summary` / :func:`tca_markdown` aggregate it for reports.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from nautilus_trader.model.data import Bar, QuoteTick, TradeTick

__all__ = [
    "NO_ALGORITHM",
    "TCA_COLUMNS",
    "TCA_SCHEMA",
    "ParentOrderTCA",
    "fills_frame",
    "market_frame",
    "orders_frame",
    "parent_orders",
    "read_tca_parquet",
    "tca_from_backtest",
    "tca_markdown",
    "tca_records",
    "tca_summary",
    "tca_table",
    "write_tca_parquet",
]

#: ``algorithm`` value of parents sent without an exec algorithm (plain market/limit orders).
NO_ALGORITHM: str = "NONE"

#: Parquet schema-metadata key holding the caller's run metadata (JSON).
TCA_METADATA_KEY: bytes = b"sage.execution.tca"

#: Version of the TCA table layout, stored in the Parquet metadata; bumped when a column changes.
TCA_SCHEMA_VERSION: str = "1"


class ParentOrderTCA(msgspec.Struct, frozen=True, kw_only=True):
    """One parent order's transaction costs: one row of the TCA table (see the module docstring)."""

    parent_id: str
    """Client order id of the parent (the primary order given to the exec algorithm)."""
    instrument_id: str
    """Instrument traded."""
    algorithm: str
    """Exec algorithm id of the parent, or ``"NONE"``."""
    side: int
    """+1 buy, -1 sell."""
    quantity: float
    """Parent quantity as created (before the algorithm carved children out of it)."""
    filled_qty: float
    """Total filled over the parent and all its children."""
    fill_rate: float
    """filled_qty / quantity."""
    n_orders: int
    """Orders in the family (the primary plus its children)."""
    n_fills: int
    """Fill events in the family."""
    arrival_ts: int
    """Parent creation time (UTC ns)."""
    end_ts: int
    """Last event of the family: the later of the last fill and the last order update (UTC ns)."""
    duration_secs: float
    """(end_ts - arrival_ts) in seconds."""
    horizon_secs: float
    """``horizon_secs`` from the parent's exec_algorithm_params, NaN when absent."""
    arrival_price: float
    """Market price at or before arrival (NaN if the market frame starts later)."""
    avg_fill_price: float
    """Quantity-weighted fill price (NaN without fills)."""
    end_price: float
    """Market price at or before end_ts; marks the unfilled remainder."""
    twap_price: float
    """Time-weighted average market price over [arrival_ts, end_ts]."""
    market_volume: float
    """Market volume traded in (arrival_ts, end_ts]."""
    participation: float
    """filled_qty / market_volume (NaN when no market volume)."""
    slippage_bps: float
    """side * (avg_fill_price - arrival_price) / arrival_price * 1e4."""
    execution_cost_bps: float
    """Executed part of the shortfall over the full parent notional."""
    opportunity_cost_bps: float
    """Unfilled remainder marked at end_price, over the full parent notional."""
    fees_bps: float
    """Commissions over the full parent notional (needs ``multiplier`` for futures)."""
    shortfall_bps: float
    """execution_cost_bps + opportunity_cost_bps + fees_bps."""
    shortfall_ccy: float
    """Implementation shortfall in the quote currency (price points * qty * multiplier + fees)."""
    twap_cost_bps: float
    """side * (twap_price - arrival_price) / arrival_price * 1e4: the passive TWAP benchmark's cost."""
    vs_twap_bps: float
    """side * (avg_fill_price - twap_price) / twap_price * 1e4: our cost beyond the benchmark."""


#: Column order and Arrow types of the TCA table (derived from :class:`ParentOrderTCA`'s annotations).
_ARROW_TYPES: dict[str, pa.DataType] = {"str": pa.string(), "int": pa.int64(), "float": pa.float64()}
TCA_COLUMNS: tuple[str, ...] = ParentOrderTCA.__struct_fields__
TCA_SCHEMA: pa.Schema = pa.schema(
    [
        # Floats are nullable: pandas' NaN ("not defined", e.g. no fills -> no average price) becomes null.
        pa.field(name, _ARROW_TYPES[kind], nullable=kind == "float")
        for name, kind in ((n, str(ParentOrderTCA.__annotations__[n])) for n in TCA_COLUMNS)
    ]
)


def tca_records(table: pd.DataFrame) -> list[ParentOrderTCA]:
    """The rows of a TCA table as typed, immutable :class:`ParentOrderTCA` records (e.g. to publish them)."""
    cols = list(TCA_COLUMNS)
    kinds = [str(ParentOrderTCA.__annotations__[c]) for c in cols]
    cast = {"str": str, "int": int, "float": float}
    return [
        ParentOrderTCA(**{c: cast[k](v) for c, k, v in zip(cols, kinds, row)})
        for row in table[cols].itertuples(index=False, name=None)
    ]


# -- Inputs -------------------------------------------------------------------------------------------------


def _to_ns(values: Any) -> np.ndarray:
    """int64 UTC ns from ints, datetimes (tz-aware) or a DatetimeIndex/Series."""
    if isinstance(values, pd.DatetimeIndex):
        idx = values if values.tz is not None else values.tz_localize("UTC")
        return idx.as_unit("ns").asi8.astype(np.int64)
    s = pd.Series(values)
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        dt = s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")
        return dt.dt.as_unit("ns").astype("int64").to_numpy()
    if pd.api.types.is_integer_dtype(s.dtype):
        return s.to_numpy(dtype=np.int64)
    return pd.to_datetime(s, utc=True).dt.as_unit("ns").astype("int64").to_numpy()


def market_frame(
    data: pd.DataFrame | Sequence[TradeTick] | Sequence[Bar] | Sequence[QuoteTick],
) -> pd.DataFrame:
    """Normalise market data to a frame indexed by UTC time with float columns ``price`` and ``volume``.

    Accepts Nautilus trade ticks (price, size), bars (close, volume; time = bar close), quote ticks (mid,
    zero volume), or a DataFrame with a UTC DatetimeIndex and ``price``/``close``/``mid`` plus optionally
    ``size``/``quantity``/``volume``. Rows are sorted by time (stable, so equal stamps keep their order).
    """
    if isinstance(data, pd.DataFrame):
        if not isinstance(data.index, pd.DatetimeIndex):
            raise TypeError("market DataFrame needs a DatetimeIndex (UTC)")
        price_col = next((c for c in ("mid", "price", "close") if c in data.columns), None)
        if price_col is None:
            raise ValueError(
                f"market DataFrame needs a 'mid', 'price' or 'close' column, got {list(data.columns)}"
            )
        vol_col = next((c for c in ("size", "quantity", "volume") if c in data.columns), None)
        ts = _to_ns(data.index)
        price = data[price_col].to_numpy(dtype=np.float64)
        volume = data[vol_col].to_numpy(dtype=np.float64) if vol_col else np.zeros(len(data))
    else:
        items = list(data)
        n = len(items)
        ts = np.empty(n, dtype=np.int64)
        price = np.empty(n, dtype=np.float64)
        volume = np.zeros(n, dtype=np.float64)
        for i, item in enumerate(items):
            if isinstance(item, TradeTick):
                ts[i], price[i], volume[i] = item.ts_event, item.price.as_double(), item.size.as_double()
            elif isinstance(item, Bar):
                ts[i], price[i], volume[i] = item.ts_event, item.close.as_double(), item.volume.as_double()
            elif isinstance(item, QuoteTick):
                ts[i] = item.ts_event
                price[i] = 0.5 * (item.bid_price.as_double() + item.ask_price.as_double())
            else:
                raise TypeError(
                    f"market data item {i} is {type(item).__name__}; expected TradeTick/Bar/QuoteTick"
                )
    order = np.argsort(ts, kind="stable")
    index = pd.DatetimeIndex(ts[order].view("datetime64[ns]"), name="ts").tz_localize("UTC")
    return pd.DataFrame({"price": price[order], "volume": volume[order]}, index=index)


def _str_or_none(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value)
    return text if text and text != "None" else None


def orders_frame(orders: pd.DataFrame | Iterable[Any]) -> pd.DataFrame:
    """Normalise orders to one row per order with the columns the TCA needs.

    ``orders`` is either Nautilus order objects (``engine.cache.orders()``; the exact creation quantity
    comes from each order's ``init_event``) or an orders report (``trader.generate_orders_report()``,
    indexed by ``client_order_id``). A report only holds each order's *current* quantity; since an exec
    algorithm moves quantity from the primary into its children one for one, the family's creation
    quantity is recovered as the sum over the family (see :func:`parent_orders`).

    Columns: ``client_order_id, parent_id, instrument_id, side (+1/-1), quantity, init_quantity (NaN when
    unknown), filled_qty, exec_algorithm_id, exec_algorithm_params (dict or None), ts_init, ts_last``.
    """
    if isinstance(orders, pd.DataFrame):
        df = orders.reset_index() if "client_order_id" not in orders.columns else orders.copy()
        if df.empty:
            return _empty_orders()
        rows = {
            "client_order_id": df["client_order_id"].astype(str).to_numpy(),
            "exec_spawn_id": [_str_or_none(v) for v in df.get("exec_spawn_id", [None] * len(df))],
            "instrument_id": df["instrument_id"].astype(str).to_numpy(),
            "side": np.where(df["side"].astype(str).str.upper() == "BUY", 1, -1),
            "quantity": df["quantity"].astype(float).to_numpy(),
            "init_quantity": np.full(len(df), np.nan),
            "filled_qty": df["filled_qty"].astype(float).to_numpy(),
            "exec_algorithm_id": [_str_or_none(v) for v in df.get("exec_algorithm_id", [None] * len(df))],
            "exec_algorithm_params": [
                v if isinstance(v, Mapping) else None
                for v in df.get("exec_algorithm_params", [None] * len(df))
            ],
            "ts_init": _to_ns(df["ts_init"]),
            "ts_last": _to_ns(df["ts_last"].fillna(df["ts_init"]))
            if "ts_last" in df
            else _to_ns(df["ts_init"]),
        }
    else:
        items = list(orders)
        if not items:
            return _empty_orders()
        rows = {
            "client_order_id": [o.client_order_id.value for o in items],
            "exec_spawn_id": [o.exec_spawn_id.value if o.exec_spawn_id is not None else None for o in items],
            "instrument_id": [o.instrument_id.value for o in items],
            "side": [1 if o.is_buy else -1 for o in items],
            "quantity": [o.quantity.as_double() for o in items],
            "init_quantity": [o.init_event.quantity.as_double() for o in items],
            "filled_qty": [o.filled_qty.as_double() for o in items],
            "exec_algorithm_id": [
                o.exec_algorithm_id.value if o.exec_algorithm_id is not None else None for o in items
            ],
            "exec_algorithm_params": [
                dict(o.exec_algorithm_params) if o.exec_algorithm_params else None for o in items
            ],
            "ts_init": [int(o.ts_init) for o in items],
            "ts_last": [int(o.ts_last or o.ts_init) for o in items],
        }
    out = pd.DataFrame(rows)
    out["parent_id"] = [
        s if s is not None else c for s, c in zip(out["exec_spawn_id"], out["client_order_id"])
    ]
    out["ts_init"] = out["ts_init"].astype(np.int64)
    out["ts_last"] = np.maximum(out["ts_last"].astype(np.int64), out["ts_init"])
    return out.drop(columns="exec_spawn_id")


def _empty_orders() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "client_order_id": pd.Series(dtype=str),
            "instrument_id": pd.Series(dtype=str),
            "side": pd.Series(dtype=np.int64),
            "quantity": pd.Series(dtype=float),
            "init_quantity": pd.Series(dtype=float),
            "filled_qty": pd.Series(dtype=float),
            "exec_algorithm_id": pd.Series(dtype=object),
            "exec_algorithm_params": pd.Series(dtype=object),
            "ts_init": pd.Series(dtype=np.int64),
            "ts_last": pd.Series(dtype=np.int64),
            "parent_id": pd.Series(dtype=str),
        }
    )


def fills_frame(fills: pd.DataFrame) -> pd.DataFrame:
    """Normalise a fills report (``trader.generate_fills_report()``) to ``client_order_id, ts, price, qty,
    commission`` (commission as a float in its currency; 0 when the report has none)."""
    if fills is None or len(fills) == 0:
        return pd.DataFrame(
            {
                "client_order_id": pd.Series(dtype=str),
                "ts": pd.Series(dtype=np.int64),
                "price": pd.Series(dtype=float),
                "qty": pd.Series(dtype=float),
                "commission": pd.Series(dtype=float),
            }
        )
    df = fills.reset_index() if "client_order_id" not in fills.columns else fills
    commission = (
        df["commission"].astype(str).str.split(" ").str[0].astype(float).to_numpy()
        if "commission" in df.columns
        else np.zeros(len(df))
    )
    return pd.DataFrame(
        {
            "client_order_id": df["client_order_id"].astype(str).to_numpy(),
            "ts": _to_ns(df["ts_event"]),
            "price": df["last_px"].astype(float).to_numpy(),
            "qty": df["last_qty"].astype(float).to_numpy(),
            "commission": commission,
        }
    )


def parent_orders(orders: pd.DataFrame, parent_quantities: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Collapse an :func:`orders_frame` to one row per parent.

    Arrival = the primary's ``ts_init`` (or the earliest child's when the primary is missing from the
    input); algorithm/params from the primary. Quantity, in order of preference: ``parent_quantities``
    (e.g. from the algorithms' ``ParentReport``), the primary's creation quantity (order objects), else
    the sum of the family's current quantities - exact only while no child hands quantity back to the
    primary (sage's algorithms fold an unfilled child's remainder back into the held primary, which
    would then be counted twice), so pass order objects or ``parent_quantities`` with sage algorithms.
    """
    if orders.empty:
        return pd.DataFrame(
            columns=[
                "parent_id",
                "instrument_id",
                "side",
                "quantity",
                "algorithm",
                "params",
                "arrival_ts",
                "last_order_ts",
                "n_orders",
            ]
        )
    g = orders.groupby("parent_id", sort=False)
    agg = g.agg(
        instrument_id=("instrument_id", "first"),
        side=("side", "first"),
        family_qty=("quantity", "sum"),
        first_ts=("ts_init", "min"),
        last_order_ts=("ts_last", "max"),
        n_orders=("client_order_id", "size"),
    )
    primaries = orders[orders["client_order_id"] == orders["parent_id"]].set_index("parent_id")
    agg = agg.join(
        primaries[["init_quantity", "exec_algorithm_id", "exec_algorithm_params", "ts_init"]], how="left"
    )
    quantity = np.where(
        np.isfinite(agg["init_quantity"].to_numpy(dtype=float)),
        agg["init_quantity"].to_numpy(dtype=float),
        agg["family_qty"].to_numpy(dtype=float),
    )
    if parent_quantities:
        given = np.array([float(parent_quantities.get(str(pid), np.nan)) for pid in agg.index])
        quantity = np.where(np.isfinite(given), given, quantity)
    arrival = np.where(
        agg["ts_init"].notna(),
        agg["ts_init"].fillna(0).to_numpy(dtype=np.int64),
        agg["first_ts"].to_numpy(dtype=np.int64),
    )
    out = pd.DataFrame(
        {
            "parent_id": agg.index.astype(str),
            "instrument_id": agg["instrument_id"].to_numpy(),
            "side": agg["side"].to_numpy(dtype=np.int64),
            "quantity": quantity,
            "algorithm": [a if isinstance(a, str) else NO_ALGORITHM for a in agg["exec_algorithm_id"]],
            "params": [p if isinstance(p, Mapping) else None for p in agg["exec_algorithm_params"]],
            "arrival_ts": arrival.astype(np.int64),
            "last_order_ts": agg["last_order_ts"].to_numpy(dtype=np.int64),
            "n_orders": agg["n_orders"].to_numpy(dtype=np.int64),
        }
    )
    return out.sort_values(["arrival_ts", "parent_id"], kind="stable").reset_index(drop=True)


# -- Core --------------------------------------------------------------------------------------------------


def _price_at(ts: np.ndarray, price: np.ndarray, when: np.ndarray) -> np.ndarray:
    """Last price at or before each ``when`` (NaN before the first print)."""
    pos = np.searchsorted(ts, when, side="right") - 1
    out = np.full(when.shape, np.nan)
    ok = pos >= 0
    out[ok] = price[pos[ok]]
    return out


def _twap(ts: np.ndarray, price: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Time-weighted average of the step function "last price" over ``[start, end]``.

    Uses the running integral ``F(x) = F(t_j) + p_j (x - t_j)`` (``t_j`` the last print at or before ``x``),
    in seconds from the first print to keep the float magnitudes small. A zero-length window gets the
    price at ``start``; a window starting before the first print is NaN.
    """
    if ts.size == 0:
        return np.full(start.shape, np.nan)
    t = (ts - ts[0]).astype(np.float64) / 1e9
    area = np.concatenate(([0.0], np.cumsum(price[:-1] * np.diff(t))))

    def integral(x_ns: np.ndarray) -> np.ndarray:
        x = (x_ns - ts[0]).astype(np.float64) / 1e9
        j = np.clip(np.searchsorted(ts, x_ns, side="right") - 1, 0, ts.size - 1)
        return area[j] + price[j] * (x - t[j])

    width = (end - start).astype(np.float64) / 1e9
    with np.errstate(invalid="ignore", divide="ignore"):
        avg = (integral(end) - integral(start)) / width
    point = _price_at(ts, price, start)
    out = np.where(width > 0.0, avg, point)
    out[np.isnan(point)] = np.nan
    return out


def _window_volume(ts: np.ndarray, volume: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Market volume with time in ``(start, end]``."""
    cs = np.concatenate(([0.0], np.cumsum(volume)))
    return cs[np.searchsorted(ts, end, side="right")] - cs[np.searchsorted(ts, start, side="right")]


def _parent_quantities(parent_reports: Any) -> dict[str, float] | None:
    """``{parent id: quantity}`` from a mapping or from report objects with ``primary_id``/``quantity``."""
    if parent_reports is None:
        return None
    if isinstance(parent_reports, Mapping):
        items = (
            parent_reports.values()
            if all(hasattr(v, "primary_id") for v in parent_reports.values())
            else None
        )
        if items is None:
            return {str(k): float(v) for k, v in parent_reports.items()}
        parent_reports = items
    return {str(getattr(r.primary_id, "value", r.primary_id)): float(r.quantity) for r in parent_reports}


def tca_table(
    orders: pd.DataFrame | Iterable[Any],
    fills: pd.DataFrame,
    market: pd.DataFrame | Sequence[Any],
    multiplier: float = 1.0,
    parent_reports: Any = None,
) -> pd.DataFrame:
    """The TCA table: one row per parent order, columns :data:`TCA_COLUMNS` (see the module docstring).

    ``orders``: order objects or an orders report (see :func:`orders_frame`); ``fills``: a fills report;
    ``market``: the tape the costs are measured against (see :func:`market_frame`); ``multiplier``: the
    instrument's contract multiplier, used for ``shortfall_ccy`` and to express fees in bps;
    ``parent_reports``: optional parent quantities, as ``{parent id: qty}`` or report objects with
    ``primary_id`` and ``quantity`` (sage's ``ParentReport``), overriding what the orders imply.
    """
    of = (
        orders if isinstance(orders, pd.DataFrame) and "parent_id" in orders.columns else orders_frame(orders)
    )
    parents = parent_orders(of, _parent_quantities(parent_reports))
    ff = fills_frame(fills)
    normalised = (
        isinstance(market, pd.DataFrame)
        and list(market.columns) == ["price", "volume"]
        and market.index.is_monotonic_increasing
    )
    mk = market if normalised else market_frame(market)
    if not (np.isfinite(multiplier) and multiplier > 0):
        raise ValueError(f"multiplier must be > 0, got {multiplier}")
    n = len(parents)
    if n == 0:
        return pd.DataFrame({c: pd.Series(dtype=_pandas_dtype(c)) for c in TCA_COLUMNS})

    # Fills -> parent index.
    parent_of_order = dict(zip(of["client_order_id"], of["parent_id"]))
    row_of_parent = {pid: i for i, pid in enumerate(parents["parent_id"])}
    unknown = sorted(set(ff["client_order_id"]) - set(parent_of_order))
    if unknown:
        raise ValueError(f"fills reference orders missing from the orders input: {unknown[:5]}")
    prow = np.array([row_of_parent[parent_of_order[c]] for c in ff["client_order_id"]], dtype=np.int64)
    qty = ff["qty"].to_numpy(dtype=float)
    filled = np.bincount(prow, weights=qty, minlength=n)
    notional_filled = np.bincount(prow, weights=qty * ff["price"].to_numpy(dtype=float), minlength=n)
    fees = np.bincount(prow, weights=ff["commission"].to_numpy(dtype=float), minlength=n)
    n_fills = np.bincount(prow, minlength=n)
    last_fill = np.full(n, np.iinfo(np.int64).min)
    np.maximum.at(last_fill, prow, ff["ts"].to_numpy(dtype=np.int64))

    side = parents["side"].to_numpy(dtype=np.float64)
    quantity = parents["quantity"].to_numpy(dtype=np.float64)
    arrival_ts = parents["arrival_ts"].to_numpy(dtype=np.int64)
    end_ts = np.maximum(np.maximum(last_fill, parents["last_order_ts"].to_numpy(dtype=np.int64)), arrival_ts)

    mts = mk.index.asi8.astype(np.int64)
    mpx = mk["price"].to_numpy(dtype=np.float64)
    mvol = mk["volume"].to_numpy(dtype=np.float64)
    arrival = _price_at(mts, mpx, arrival_ts)
    end_px = _price_at(mts, mpx, end_ts)
    twap = _twap(mts, mpx, arrival_ts, end_ts)
    mvolume = _window_volume(mts, mvol, arrival_ts, end_ts)

    with np.errstate(invalid="ignore", divide="ignore"):
        avg_px = np.where(filled > 0, notional_filled / filled, np.nan)
        unfilled = np.maximum(quantity - filled, 0.0)
        parent_notional = quantity * arrival
        exec_pts = side * (notional_filled - filled * arrival)  # price points x qty
        opp_pts = side * unfilled * (end_px - arrival)
        exec_bps = exec_pts / parent_notional * 1e4
        opp_bps = opp_pts / parent_notional * 1e4
        fees_bps = fees / (parent_notional * multiplier) * 1e4
        slippage = side * (avg_px - arrival) / arrival * 1e4
        twap_cost = side * (twap - arrival) / arrival * 1e4
        vs_twap = side * (avg_px - twap) / twap * 1e4
        participation = np.where(mvolume > 0, filled / mvolume, np.nan)
        fill_rate = filled / quantity
    # side * 0.0 is -0.0 for sells; report a plain zero.
    exec_bps, opp_bps, slippage, twap_cost, vs_twap = (
        x + 0.0 for x in (exec_bps, opp_bps, slippage, twap_cost, vs_twap)
    )

    horizon = np.array(
        [
            float(p["horizon_secs"]) if isinstance(p, Mapping) and "horizon_secs" in p else np.nan
            for p in parents["params"]
        ]
    )
    return pd.DataFrame(
        {
            "parent_id": parents["parent_id"].astype(str).to_numpy(),
            "instrument_id": parents["instrument_id"].astype(str).to_numpy(),
            "algorithm": parents["algorithm"].astype(str).to_numpy(),
            "side": side.astype(np.int64),
            "quantity": quantity,
            "filled_qty": filled,
            "fill_rate": fill_rate,
            "n_orders": parents["n_orders"].to_numpy(dtype=np.int64),
            "n_fills": n_fills.astype(np.int64),
            "arrival_ts": arrival_ts,
            "end_ts": end_ts,
            "duration_secs": (end_ts - arrival_ts) / 1e9,
            "horizon_secs": horizon,
            "arrival_price": arrival,
            "avg_fill_price": avg_px,
            "end_price": end_px,
            "twap_price": twap,
            "market_volume": mvolume,
            "participation": participation,
            "slippage_bps": slippage,
            "execution_cost_bps": exec_bps,
            "opportunity_cost_bps": opp_bps,
            "fees_bps": fees_bps,
            "shortfall_bps": exec_bps + opp_bps + fees_bps,
            "shortfall_ccy": (exec_pts + opp_pts) * multiplier + fees,
            "twap_cost_bps": twap_cost,
            "vs_twap_bps": vs_twap,
        },
        columns=list(TCA_COLUMNS),
    )


def _pandas_dtype(column: str) -> Any:
    kind = TCA_SCHEMA.field(column).type
    return str if kind == pa.string() else (np.int64 if kind == pa.int64() else float)


def tca_from_backtest(
    engine_or_reports: Any,
    market_data: pd.DataFrame | Sequence[Any],
    multiplier: float | None = None,
    parent_reports: Any = None,
) -> pd.DataFrame:
    """TCA table of a finished Nautilus backtest.

    ``engine_or_reports`` is a ``BacktestEngine`` (orders read from its cache, so creation quantities are
    exact; the multiplier is taken from the cached instrument when there is exactly one) or a pair
    ``(orders_report, fills_report)`` as produced by ``trader.generate_orders_report()`` and
    ``trader.generate_fills_report()`` (collect them before the engine is disposed); with reports, pass
    ``parent_reports`` (sage's ``ParentReport`` objects or ``{parent id: qty}``) for exact parent sizes.
    ``market_data`` is the tape to measure against (trade ticks, bars or a frame; see :func:`market_frame`).
    """
    if isinstance(engine_or_reports, tuple):
        orders_report, fills_report = engine_or_reports
        return tca_table(orders_report, fills_report, market_data, multiplier or 1.0, parent_reports)
    engine = engine_or_reports
    orders = engine.cache.orders()
    if multiplier is None:
        ids = {o.instrument_id for o in orders}
        instruments = [engine.cache.instrument(i) for i in ids]
        mults = {float(i.multiplier) for i in instruments if i is not None}
        multiplier = mults.pop() if len(mults) == 1 else 1.0
    return tca_table(orders, engine.trader.generate_fills_report(), market_data, multiplier, parent_reports)


# -- Persistence and summaries -------------------------------------------------------------------------------


def write_tca_parquet(
    table: pd.DataFrame, path: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None
) -> Path:
    """Write a TCA table to ``path`` as Parquet with :data:`TCA_SCHEMA`, atomically (temp file + rename).

    ``metadata`` (JSON-serialisable: run id, config, data source...) is stored in the schema metadata
    under ``sage.execution.tca`` together with the layout version, so a file explains itself.
    """
    path = Path(path)
    missing = [c for c in TCA_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"TCA table lacks columns {missing}")
    arrow = pa.Table.from_pandas(table[list(TCA_COLUMNS)], schema=TCA_SCHEMA, preserve_index=False)
    meta = {"version": TCA_SCHEMA_VERSION, "run": dict(metadata or {})}
    arrow = arrow.replace_schema_metadata({TCA_METADATA_KEY: json.dumps(meta, default=str).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(arrow, tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the report is as readable as every other run file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_tca_parquet(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a file written by :func:`write_tca_parquet`: ``(table, run metadata)``."""
    arrow = pq.read_table(path)
    raw = (arrow.schema.metadata or {}).get(TCA_METADATA_KEY)
    if raw is None:
        raise ValueError(f"{path} is not a sage TCA file (no {TCA_METADATA_KEY.decode()} metadata)")
    meta = json.loads(raw)
    if meta.get("version") != TCA_SCHEMA_VERSION:
        raise ValueError(f"{path}: TCA layout version {meta.get('version')!r}, expected {TCA_SCHEMA_VERSION}")
    return arrow.to_pandas(), meta.get("run", {})


def tca_summary(table: pd.DataFrame, by: str | Sequence[str] = "algorithm") -> pd.DataFrame:
    """Aggregate a TCA table per group: costs weighted by parent notional (what a portfolio pays).

    Columns: ``parents, quantity, fill_rate, slippage_bps, shortfall_bps, vs_twap_bps, twap_cost_bps``
    (notional-weighted means; slippage over filled notional), ``participation`` (mean over parents),
    ``duration_secs`` (mean).
    """
    keys = [by] if isinstance(by, str) else list(by)
    if table.empty:
        return pd.DataFrame(columns=[*keys, "parents"]).set_index(keys)
    df = table.copy()
    df["_w"] = df["quantity"] * df["arrival_price"]
    df["_wf"] = df["filled_qty"] * df["arrival_price"]

    def wmean(values: pd.Series, weights: pd.Series) -> float:
        ok = np.isfinite(values) & np.isfinite(weights) & (weights > 0)
        return float(np.average(values[ok], weights=weights[ok])) if ok.any() else float("nan")

    rows = []
    for key, g in df.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        rows.append(
            {
                **dict(zip(keys, key)),
                "parents": len(g),
                "quantity": float(g["quantity"].sum()),
                "fill_rate": float(g["filled_qty"].sum() / g["quantity"].sum()),
                "slippage_bps": wmean(g["slippage_bps"], g["_wf"]),
                "shortfall_bps": wmean(g["shortfall_bps"], g["_w"]),
                "vs_twap_bps": wmean(g["vs_twap_bps"], g["_wf"]),
                "twap_cost_bps": wmean(g["twap_cost_bps"], g["_w"]),
                "participation": float(np.nanmean(g["participation"]))
                if g["participation"].notna().any()
                else float("nan"),
                "duration_secs": float(g["duration_secs"].mean()),
            }
        )
    return pd.DataFrame(rows).set_index(keys)


def tca_markdown(frame: pd.DataFrame, digits: int = 2, index: bool = True) -> str:
    """A GitHub-flavoured markdown table of a TCA table or summary (no extra dependency)."""
    named = frame.index.name is not None or isinstance(frame.index, pd.MultiIndex)
    df = frame.reset_index() if index and named else frame
    headers = [str(c) for c in df.columns]

    def fmt(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return "nan" if not np.isfinite(v) else f"{v:,.{digits}f}"
        if isinstance(v, (int, np.integer)):
            return f"{int(v):,d}"
        return str(v)

    numeric = [pd.api.types.is_numeric_dtype(df[c].dtype) for c in df.columns]
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---:" if num else ":---" for num in numeric) + "|",
    ]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False, name=None)]
    return "\n".join(lines)
