"""Sweep files: a base backtest config, a parameter grid, instruments and walk-forward folds -> tasks.

A sweep file is a small YAML that *points at* a Nautilus ``BacktestRunConfig`` YAML (``base``) and
says which of its keys to vary. Keys are dotted paths into the base config's mapping, with list
indices as numbers (``engine.strategies.0.config.fast_ema_period``), so any Nautilus or sage config
field can be swept without sage knowing what it means. See docs/sweeps.md for the full format.

Expansion is pure (no backtest runs here): every (instrument, fold, split, grid point) becomes one
:class:`SweepTask` holding the complete backtest config mapping it runs, in a fixed order. That order
is the order of the results table, whichever engine ran the tasks.
"""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")

#: Metrics a sweep can select on, and whether larger is better.
SELECTION_METRICS: dict[str, bool] = {
    "sharpe": True,
    "sortino": True,
    "pnl": True,
    "return": True,
    "max_drawdown": False,
    "win_rate": True,
}


class SweepSpecError(ValueError):
    """A sweep file that cannot be used; the message names the file and the offending key."""


class Window(msgspec.Struct, frozen=True, kw_only=True):
    """A time window; ``start``/``end`` are ISO-8601 strings (UTC if no offset) or epoch nanoseconds."""

    start: str | int
    """First instant included."""
    end: str | int
    """Last instant included."""


class FoldWindows(msgspec.Struct, frozen=True, kw_only=True):
    """One explicit walk-forward fold: parameters are chosen on ``train`` and judged on ``test``."""

    train: Window
    """In-sample window (selection)."""
    test: Window
    """Out-of-sample window (reported result); should start after ``train`` ends."""


class InstrumentSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One market the grid runs on: a name for the table and the base-config keys it overrides."""

    name: str
    """Label in the results table, e.g. ``ES``."""
    set: dict[str, Any] = msgspec.field(default_factory=dict)
    """Dotted key -> value overrides (bar types, instrument id, trade size, ...)."""


class SweepSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The content of a sweep YAML file."""

    base: str
    """Path of the base ``BacktestRunConfig`` YAML, relative to the sweep file."""
    grid: dict[str, list[Any]] = msgspec.field(default_factory=dict)
    """Dotted key -> values; the sweep runs the cartesian product, in the order the keys are written.
    Empty: one point (the base config's own values)."""
    set: dict[str, Any] = msgspec.field(default_factory=dict)
    """Dotted key -> value overrides applied to every task before instruments and grid values."""
    instruments: list[InstrumentSpec] = msgspec.field(default_factory=list)
    """Markets to run the grid on. Empty: one instrument named ``base`` with no overrides."""
    folds: int | list[FoldWindows] = 1
    """Walk-forward folds: a count (the data range is cut into that many equal consecutive blocks,
    each split into train then test by ``train_fraction``) or a list of explicit windows."""
    train_fraction: float = 0.7
    """Share of each generated fold's block used for training (0 < f < 1). Ignored for explicit folds."""
    anchored: bool = False
    """Generated folds only: every train window starts at the beginning of the data (expanding
    window) instead of at its own block's start (rolling window)."""
    metric: str = "sharpe"
    """Metric that picks the best parameters on each fold's train window (see ``SELECTION_METRICS``)."""


@dataclass(frozen=True)
class SweepTask:
    """One backtest of the sweep. Picklable; carries everything a worker on another machine needs."""

    index: int
    instrument: str
    fold: int
    split: Split
    point: int  #: grid point index (position in the cartesian product)
    params: tuple[tuple[str, Any], ...]  #: (dotted key, value) of this grid point
    start: int  #: window start, epoch ns (inclusive)
    end: int  #: window end, epoch ns (inclusive)
    config: dict[str, Any]  #: the complete BacktestRunConfig mapping (catalog_path still unset)
    catalog: str  #: catalog path as seen by the worker


# -- reading -----------------------------------------------------------------------------------------


def load_sweep_spec(path: Path | str) -> tuple[SweepSpec, dict[str, Any]]:
    """Read and validate a sweep file; return the spec and the base config mapping it names."""
    from sage.nodes.backtest import read_yaml_mapping

    path = Path(path)
    raw = read_yaml_mapping(path, "a mapping with base/grid/folds")
    if "base" not in raw:
        hint = " (this looks like a backtest config: run it with `sage backtest`)" if "engine" in raw else ""
        raise SweepSpecError(f"{path}: a sweep file needs a `base:` key naming the backtest config{hint}")
    try:
        spec = msgspec.convert(raw, SweepSpec)
    except msgspec.ValidationError as exc:
        raise SweepSpecError(f"{path}: {exc}") from None
    if spec.metric not in SELECTION_METRICS:
        raise SweepSpecError(f"{path}: metric {spec.metric!r} is not one of {sorted(SELECTION_METRICS)}")
    if not 0.0 < spec.train_fraction < 1.0:
        raise SweepSpecError(f"{path}: train_fraction must be in (0, 1), got {spec.train_fraction}")
    if isinstance(spec.folds, int) and spec.folds < 1:
        raise SweepSpecError(f"{path}: folds must be >= 1, got {spec.folds}")
    for key, values in spec.grid.items():
        if not values:
            raise SweepSpecError(f"{path}: grid.{key} has no values")
    names = [i.name for i in spec.instruments]
    if len(set(names)) != len(names):
        raise SweepSpecError(f"{path}: instrument names must be unique, got {names}")
    base_path = (path.parent / spec.base).resolve()
    base = read_yaml_mapping(base_path, "a BacktestRunConfig mapping with venues/data/engine")
    # Check every key against the base now, so a typo fails before any backtest starts.
    for where, overrides in [("set", spec.set), *((f"instruments[{i.name}].set", i.set) for i in spec.instruments)]:
        trial = copy.deepcopy(base)
        for key, value in overrides.items():
            _set_checked(trial, key, value, f"{path}: {where}")
    for key in spec.grid:
        _set_checked(copy.deepcopy(base), key, spec.grid[key][0], f"{path}: grid")
    return spec, base


def _set_checked(config: dict[str, Any], key: str, value: Any, where: str) -> None:
    try:
        set_dotted(config, key, value)
    except KeyError as exc:
        raise SweepSpecError(f"{where}: {exc.args[0]}") from None


def set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    """Set ``config[a][b][0][c] = value`` for ``key="a.b.0.c"``.

    Every intermediate step must exist (a typo is an error, not a new branch); the last step may add a
    new key to a mapping (an optional field the base config leaves at its default).
    """
    parts = key.split(".")
    node: Any = config
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        here = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
                raise KeyError(f"{key!r}: {here!r} is not an index of a list of {len(node)}")
            if last:
                node[int(part)] = copy.deepcopy(value)
                return
            node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = copy.deepcopy(value)
                return
            if part not in node or node[part] is None:
                raise KeyError(f"{key!r}: {here!r} does not exist in the base config")
            node = node[part]
        else:
            raise KeyError(f"{key!r}: {'.'.join(parts[:depth])!r} is a {type(node).__name__}, not a mapping or list")


# -- folds -------------------------------------------------------------------------------------------


def to_nanos(value: str | int) -> int:
    """Epoch nanoseconds of an ISO-8601 string (UTC when naive) or an integer."""
    import pandas as pd

    if isinstance(value, int):
        return value
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return int(ts.value)


def fold_windows(spec: SweepSpec, data_range: tuple[int, int] | None) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """``[((train_start, train_end), (test_start, test_end)), ...]`` in epoch ns, ends inclusive.

    Generated folds cut ``data_range`` into ``spec.folds`` equal blocks; block k's first
    ``train_fraction`` is its train window and the rest its test window, so test windows never
    overlap each other or any later fold's train window (with ``anchored``, train starts at the data's
    first instant). A train window ends 1 ns before its test window starts: no bar is in both.
    """
    if not isinstance(spec.folds, int):
        out = []
        for k, fold in enumerate(spec.folds):
            train = (to_nanos(fold.train.start), to_nanos(fold.train.end))
            test = (to_nanos(fold.test.start), to_nanos(fold.test.end))
            for name, (lo, hi) in (("train", train), ("test", test)):
                if hi < lo:
                    raise SweepSpecError(f"folds[{k}].{name}: end is before start")
            out.append((train, test))
        return out
    if data_range is None:
        raise SweepSpecError("folds: N needs bars in the catalog to divide; none were found")
    first, last = data_range
    span = last - first + 1
    if span < 2 * spec.folds:
        raise SweepSpecError(f"folds: the data range ({span} ns) is too short for {spec.folds} folds")
    edges = [first + (span * k) // spec.folds for k in range(spec.folds + 1)]
    out = []
    for k in range(spec.folds):
        lo, hi = edges[k], edges[k + 1] - 1
        cut = lo + int((hi - lo + 1) * spec.train_fraction)
        out.append(((first if spec.anchored else lo, cut - 1), (cut, hi)))
    return out


def bar_data_range(config: dict[str, Any], catalog: Path | str) -> tuple[int, int] | None:
    """First and last ``ts_init`` covered by the config's bar data in ``catalog`` (from file names).

    With several bar types the range is their intersection: every fold must have data for each.
    """
    from nautilus_trader.model.data import Bar
    from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

    catalog_obj = ParquetDataCatalog(str(Path(catalog).resolve()))
    ranges = []
    for entry in config.get("data") or []:
        if not str(entry.get("data_cls", "")).endswith(":Bar"):
            continue
        for bar_type in entry.get("bar_types") or []:
            intervals = catalog_obj.get_intervals(Bar, str(bar_type))
            if not intervals:
                raise SweepSpecError(f"the catalog {catalog} has no bars {bar_type}")
            ranges.append((min(i[0] for i in intervals), max(i[1] for i in intervals)))
    if not ranges:
        return None
    lo, hi = max(r[0] for r in ranges), min(r[1] for r in ranges)
    if hi < lo:
        raise SweepSpecError(f"the config's bar types do not overlap in time: {ranges}")
    return lo, hi


# -- expansion ---------------------------------------------------------------------------------------


def grid_points(grid: dict[str, list[Any]]) -> list[tuple[tuple[str, Any], ...]]:
    """The cartesian product of ``grid`` in the order its keys are written (last key varies fastest)."""
    keys = list(grid)
    return [tuple(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def param_labels(keys: list[str]) -> dict[str, str]:
    """Short, unique column names for dotted keys: the last component, longer only where needed."""
    labels: dict[str, str] = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            label = ".".join(parts[-n:])
            if sum(1 for k in keys if k.split(".")[-n:] == parts[-n:]) == 1:
                break
        labels[key] = label
    return labels


def expand_tasks(spec: SweepSpec, base: dict[str, Any], catalog: Path | str) -> list[SweepTask]:
    """Every backtest of the sweep, in table order: instrument, fold, split (train, test), grid point."""
    catalog = str(Path(catalog).resolve())
    instruments = spec.instruments or [InstrumentSpec(name="base")]
    points = grid_points(spec.grid)
    tasks: list[SweepTask] = []
    for instrument in instruments:
        config = copy.deepcopy(base)
        for key, value in {**spec.set, **instrument.set}.items():
            set_dotted(config, key, value)
        data_range = None if not isinstance(spec.folds, int) else bar_data_range(config, catalog)
        for fold, windows in enumerate(fold_windows(spec, data_range)):
            for split, (start, end) in zip(SPLITS, windows, strict=True):
                for point, params in enumerate(points):
                    task_config = copy.deepcopy(config)
                    for key, value in params:
                        set_dotted(task_config, key, value)
                    task_config["start"], task_config["end"] = int(start), int(end)
                    tasks.append(
                        SweepTask(
                            index=len(tasks), instrument=instrument.name, fold=fold, split=split,
                            point=point, params=params, start=int(start), end=int(end),
                            config=task_config, catalog=catalog,
                        )
                    )  # fmt: skip
    return tasks


def value_label(value: Any) -> Any:
    """A table cell for a parameter value: scalars as they are, anything else as compact JSON."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
