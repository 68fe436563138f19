"""sage's custom Nautilus data types: regime estimates, agent signals, risk proposals, decision records.

Why hand-written ``Data`` subclasses instead of ``@customdataclass``: the decorator only knows scalar
fields (int/float/str/bool/bytes/InstrumentId), while these records carry fixed-length vectors
(regime probabilities, the 8-D regime vector, action/size distributions). Each type therefore declares
its fields once, as :class:`FieldSpec` rows, and everything else is derived from that single table:

* the explicit Arrow schema (vectors as ``fixed_size_list<float64>[n]``, timestamps ``uint64``),
* scalar validation in the constructor and the *same* rules applied column-wise to Arrow/numpy batches
  (so a row the catalog writer accepts is always a row the decoder can rebuild),
* ``to_dict``/``from_dict`` (msgpack/JSON via Nautilus' ``MsgSpecSerializer``) and the Arrow
  encoder/decoder registered with Nautilus (``StreamingConfig`` feather files, ``ParquetDataCatalog``).

Instances are immutable (read-only properties over ``__slots__``) because they travel over the message
bus to several subscribers; equality is value equality with NaN == NaN, which is what round-trip tests
and de-duplication need. Numpy scalars are cast to Python ``int``/``float``/``str`` on construction so
that msgpack, JSON and Arrow all see plain Python values.

Importing this module registers the four types with Nautilus (Arrow + dict serialisation); import it
before creating a ``StreamingConfig``, querying a catalog or starting a ``BacktestNode``.
"""

from __future__ import annotations

import gc
import json
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntFlag
from itertools import chain
from typing import Any, ClassVar, Literal, Self, TypeVar

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from nautilus_trader.core.data import Data
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.serialization.arrow.serializer import list_schemas, register_arrow
from nautilus_trader.serialization.base import register_serializable_type

from sage.data.regimes import Regime

__all__ = [
    "ACTIONS",
    "RISK_PROPOSAL_SOURCES",
    "SAGE_DATA_TYPES",
    "SCHEMA_VERSION",
    "AgentSignal",
    "DecisionRecord",
    "FieldSpec",
    "RegimeData",
    "RegimeHealth",
    "RiskProposal",
    "SageData",
]

#: Bumped whenever a field is added/renamed/retyped; stored in every schema's metadata.
SCHEMA_VERSION = "1"

#: Largest timestamp the catalog can name a file after (pandas ``Timestamp`` range, int64 ns).
_TS_MAX = 2**63 - 1
_INT64_MAX = 2**63 - 1
_REGIME_CODES: tuple[int, ...] = tuple(int(r) for r in Regime)
_LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5)

#: Allowed ``DecisionRecord.action`` values.
ACTIONS: tuple[str, ...] = ("BUY", "SELL", "CLOSE", "HOLD", "NO_TRADE")
#: Allowed ``RiskProposal.source`` values: the learned sizer ("mrms") or the rule-based fallback.
RISK_PROPOSAL_SOURCES: tuple[str, ...] = ("mrms", "rule")


class RegimeHealth(IntFlag):
    """Bits of ``RegimeData.health_flags``: why a regime estimate should be trusted less.

    A bitmask rather than separate columns so new conditions can be added without a schema change;
    consumers test bits (``flags & RegimeHealth.DRIFT_ALARM``) and ignore unknown ones.
    """

    OK = 0
    STALE_INPUT = 1  # the newest feature row is older than expected (gap in data)
    MISSING_FEATURES = 2  # some inputs were NaN and imputed
    DRIFT_WARNING = 4  # ``drift`` above the warning threshold
    DRIFT_ALARM = 8  # ``drift`` above the alarm threshold
    LATENCY_BUDGET_EXCEEDED = 16  # ``latency_us`` above the per-bar budget
    UNCALIBRATED = 32  # no calibrated interval available (``uncertainty`` is NaN)
    FALLBACK_ACTIVE = 64  # ``fallback_level`` > 1: a simpler model produced this estimate


FieldKind = Literal["instrument", "int", "float", "str", "vector", "ts"]

_REQUIRED: Any = object()


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One column of a sage data type: its Arrow type and its validation rule.

    The same spec validates a single constructor argument (:meth:`coerce`) and a whole Arrow column
    (:meth:`check_column`), so object and columnar paths can never disagree about what is valid.
    Floats reject +-inf always and NaN unless ``nan_ok``; bounds are inclusive.
    """

    name: str
    kind: FieldKind
    arrow_type: pa.DataType
    doc: str = ""
    size: int = 0
    lo: float | None = None
    hi: float | None = None
    choices: tuple[Any, ...] | None = None
    nan_ok: bool = False
    nonempty: bool = False
    is_json: bool = False
    default: Any = _REQUIRED

    @property
    def has_default(self) -> bool:
        return self.default is not _REQUIRED

    @property
    def rule(self) -> str:
        """Human-readable constraint, used in error messages and the docs."""
        parts: list[str] = []
        if self.kind == "vector":
            parts.append(f"{self.size} floats")
        if self.choices is not None:
            parts.append(f"one of {list(self.choices)}")
        if self.lo is not None and self.hi is not None:
            parts.append(f"in [{self.lo}, {self.hi}]")
        elif self.lo is not None:
            parts.append(f">= {self.lo}")
        elif self.hi is not None:
            parts.append(f"<= {self.hi}")
        if self.kind in ("float", "vector"):
            parts.append("NaN allowed" if self.nan_ok else "finite")
        if self.nonempty:
            parts.append("non-empty")
        if self.is_json:
            parts.append("valid JSON")
        return ", ".join(parts) or "any"

    # -- scalar path -------------------------------------------------------------------------------

    def coerce(self, value: Any, owner: str) -> Any:
        """Validate one value and return it as the plain Python type stored on the object."""
        where = f"{owner}.{self.name}"
        kind = self.kind
        if kind == "float":
            return self._check_float(_as_float(value, where), where)
        if kind in ("int", "ts"):
            if isinstance(value, bool):
                raise TypeError(f"{where}: expected an integer, got bool {value!r}")
            try:
                v = operator.index(value)
            except TypeError:
                raise TypeError(
                    f"{where}: expected an integer, got {type(value).__name__} {value!r}"
                ) from None
            self._check_number(v, where)
            if self.choices is not None and v not in self.choices:
                raise ValueError(f"{where}: expected one of {list(self.choices)}, got {v!r}")
            return int(v)
        if kind == "vector":
            try:
                items = tuple(_as_float(x, where) for x in value)
            except TypeError:
                raise TypeError(
                    f"{where}: expected a sequence of {self.size} floats, got {value!r}"
                ) from None
            if len(items) != self.size:
                raise ValueError(f"{where}: expected {self.size} values, got {len(items)}")
            for x in items:
                self._check_float(x, where, shown=items)
            return items
        if kind == "instrument":
            if isinstance(value, InstrumentId):
                return value
            if isinstance(value, str):
                try:
                    return InstrumentId.from_str(value)
                except ValueError as e:
                    raise ValueError(f"{where}: invalid instrument id {value!r} ({e})") from None
            raise TypeError(f"{where}: expected InstrumentId or str, got {type(value).__name__}")
        # str
        if not isinstance(value, str):
            raise TypeError(f"{where}: expected str, got {type(value).__name__} {value!r}")
        v = str(value)  # numpy.str_ -> str
        if self.nonempty and not v:
            raise ValueError(f"{where}: must be non-empty")
        if self.choices is not None and v not in self.choices:
            raise ValueError(f"{where}: expected one of {list(self.choices)}, got {v!r}")
        if self.is_json:
            try:
                json.loads(v)
            except ValueError as e:
                raise ValueError(f"{where}: not valid JSON ({e})") from None
        return v

    def _check_float(self, v: float, where: str, shown: Any = None) -> float:
        shown = v if shown is None else shown
        if math.isnan(v):
            if not self.nan_ok:
                raise ValueError(f"{where}: NaN not allowed (got {shown!r})")
            return v
        if math.isinf(v):
            raise ValueError(f"{where}: must be finite (got {shown!r})")
        self._check_number(v, where, shown)
        return v

    def _check_number(self, v: float, where: str, shown: Any = None) -> None:
        if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
            raise ValueError(f"{where}: expected {self.rule}, got {v if shown is None else shown!r}")

    # -- columnar path -----------------------------------------------------------------------------

    def to_arrow(self, value: Any, n: int, owner: str) -> pa.Array:
        """Turn a column given as numpy/list/Arrow (or a scalar to broadcast) into an Arrow array of
        this field's *family* (any integer width for ints; float64 for floats; string for text).
        No value checks here: :meth:`check_column` runs on the result before the final cast."""
        where = f"{owner}.{self.name}"
        if isinstance(value, pa.ChunkedArray):
            value = value.combine_chunks()
        if self.kind == "vector":
            arr = _vector_to_arrow(value, self.size, where)
        elif isinstance(value, pa.Array):
            arr = value
        elif _is_scalar(value):
            if self.kind == "instrument" and isinstance(value, InstrumentId):
                value = value.value
            arr = pa.repeat(pa.scalar(value), n)
        else:
            np_value = np.asarray(value)
            if np_value.ndim != 1:
                raise ValueError(f"{where}: expected a 1-D column, got shape {np_value.shape}")
            if np_value.dtype.kind == "M":  # datetime64 -> ns integers
                np_value = np_value.astype("datetime64[ns]").astype(np.int64)
            arr = pa.array(np_value) if np_value.dtype.kind != "O" else pa.array(list(np_value))
        if len(arr) != n:
            raise ValueError(f"{where}: expected {n} rows, got {len(arr)}")
        return self._normalise_type(arr, where)

    def _normalise_type(self, arr: pa.Array, where: str) -> pa.Array:
        t = arr.type
        if pa.types.is_dictionary(t):
            arr = arr.cast(t.value_type)
            t = arr.type
        if self.kind in ("int", "ts"):
            if pa.types.is_timestamp(t) and self.kind == "ts":
                return arr.cast(pa.int64())
            if not pa.types.is_integer(t) and not pa.types.is_null(t):
                raise TypeError(f"{where}: expected an integer column, got {t}")
            return arr
        if self.kind == "float":
            if not (pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_null(t)):
                raise TypeError(f"{where}: expected a numeric column, got {t}")
            return arr if t == pa.float64() else arr.cast(pa.float64())
        if self.kind in ("str", "instrument"):
            if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)):
                raise TypeError(f"{where}: expected a string column, got {t}")
            return arr if t == pa.string() else arr.cast(pa.string())
        return arr  # vectors are normalised by _vector_to_arrow

    def check_column(self, arr: pa.Array, owner: str) -> None:
        """Raise ``ValueError`` naming this field and the first offending row if any value is invalid."""
        where = f"{owner}.{self.name}"
        if arr.null_count:
            row = _first_true(arr.is_null())
            raise ValueError(f"{where}: row {row}: null values are not allowed")
        if len(arr) == 0:
            return
        kind = self.kind
        if kind in ("float", "vector"):
            values = arr.flatten() if kind == "vector" else arr
            if values.null_count:
                row = _first_true(values.is_null()) // max(self.size, 1)
                raise ValueError(f"{where}: row {row}: null values are not allowed")
            ok = self._float_ok(values.to_numpy(zero_copy_only=False))
            if not ok.all():
                idx = int(np.argmin(ok))
                row = idx // self.size if kind == "vector" else idx
                raise ValueError(f"{where}: row {row}: expected {self.rule}, got {arr[row].as_py()!r}")
            return
        if kind in ("int", "ts"):
            bad = self._out_of_bounds(arr, None)
            if self.choices is not None:
                outside = pc.invert(pc.is_in(arr, value_set=pa.array(self.choices, type=pa.int64())))
                bad = outside if bad is None else pc.or_(bad, outside)
            idx = _first_true(bad) if bad is not None else None
            if idx is not None:
                raise ValueError(f"{where}: row {idx}: expected {self.rule}, got {arr[idx].as_py()!r}")
            return
        # str / instrument
        bad = None
        if self.nonempty or kind == "instrument":
            bad = pc.equal(pc.utf8_length(arr), 0)
        if self.choices is not None:
            outside = pc.invert(pc.is_in(arr, value_set=pa.array(self.choices, type=pa.string())))
            bad = outside if bad is None else pc.or_(bad, outside)
        idx = _first_true(bad) if bad is not None else None
        if idx is not None:
            raise ValueError(f"{where}: row {idx}: expected {self.rule}, got {arr[idx].as_py()!r}")
        if kind == "instrument":
            for v in pc.unique(arr).to_pylist():
                try:
                    InstrumentId.from_str(v)
                except ValueError as e:
                    row = _first_true(pc.equal(arr, v))
                    raise ValueError(f"{where}: row {row}: invalid instrument id {v!r} ({e})") from None
        if self.is_json:
            for row, text in enumerate(arr.to_pylist()):
                try:
                    json.loads(text)
                except ValueError as e:
                    raise ValueError(f"{where}: row {row}: not valid JSON ({e})") from None

    def _float_ok(self, v: np.ndarray) -> np.ndarray:
        """Row mask of valid floats in as few passes as possible (NaN fails every comparison)."""
        lo = -np.inf if self.lo is None else float(self.lo)
        hi = np.inf if self.hi is None else float(self.hi)
        with np.errstate(invalid="ignore"):
            ok = (v >= lo) & (v <= hi)
        if math.isinf(lo) or math.isinf(hi):  # an open side lets +-inf through the comparisons
            ok &= ~np.isinf(v)
        if self.nan_ok:
            ok |= np.isnan(v)
        return ok

    def _out_of_bounds(self, values: pa.Array, bad: pa.Array | None) -> pa.Array | None:
        """Integer bound violations, compared in the column's own type (casting uint64 to int64 would
        overflow); a bound outside the type's range is either vacuous or violated by every row."""
        info = np.iinfo(values.type.to_pandas_dtype())
        for bound, is_lo in ((self.lo, True), (self.hi, False)):
            if bound is None:
                continue
            b = int(bound)
            if (is_lo and b <= info.min) or (not is_lo and b >= info.max):
                continue
            if info.min <= b <= info.max:
                cmp = (pc.less if is_lo else pc.greater)(values, pa.scalar(b, type=values.type))
            else:
                cmp = pa.repeat(pa.scalar(True), len(values))
            bad = cmp if bad is None else pc.or_(bad, cmp)
        return bad


_TS_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("ts_event", "ts", pa.uint64(), "UNIX ns when the underlying event occurred.", lo=0, hi=_TS_MAX),
    FieldSpec(
        "ts_init", "ts", pa.uint64(), "UNIX ns when the record was created (sort key).", lo=0, hi=_TS_MAX
    ),
)


def _as_float(value: Any, where: str) -> float:
    if value is None:  # JSON encodes NaN as null; accept it back as NaN
        return math.nan
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{where}: expected a number, got {type(value).__name__} {value!r}") from None


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, bytes, int, float, np.generic, InstrumentId))


def _first_true(mask: pa.Array | pa.ChunkedArray) -> int | None:
    if not pc.any(mask).as_py():
        return None
    return int(pc.index(mask, True).as_py())


def _vector_to_arrow(value: Any, size: int, where: str) -> pa.Array:
    if isinstance(value, pa.Array):
        t = value.type
        if pa.types.is_fixed_size_list(t):
            if t.list_size != size:
                raise ValueError(f"{where}: expected vectors of {size} values, got {t.list_size}")
        elif pa.types.is_list(t) or pa.types.is_large_list(t):
            lengths = pc.list_value_length(value)
            wrong = pc.not_equal(lengths, size)
            row = _first_true(pc.fill_null(wrong, False))
            if row is not None:
                raise ValueError(f"{where}: row {row}: expected {size} values, got {lengths[row].as_py()}")
        else:
            raise TypeError(f"{where}: expected a list column, got {t}")
        if not pa.types.is_floating(t.value_type) and not pa.types.is_integer(t.value_type):
            raise TypeError(f"{where}: expected numeric vectors, got {t}")
        return value.cast(pa.list_(pa.float64(), size))
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:  # ragged rows or non-numbers
        raise ValueError(f"{where}: expected an (n, {size}) array of numbers ({e})") from None
    if arr.ndim != 2 or arr.shape[1] != size:
        raise ValueError(f"{where}: expected an (n, {size}) array, got shape {arr.shape}")
    flat = pa.array(np.ascontiguousarray(arr).reshape(-1), type=pa.float64())
    return pa.FixedSizeListArray.from_arrays(flat, size)


def _same(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN (element-wise for vectors)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


T = TypeVar("T", bound="SageData")


def _restore(cls: type[T], values: dict[str, Any]) -> T:
    return cls.from_dict(values)


class SageData(Data):
    """Base of the sage record types; subclasses only declare ``FIELDS`` and an explicit ``__init__``.

    Not instantiable itself. Everything column-related (schema, Arrow conversion, validation) is driven by
    ``FIELDS`` + the ``ts_event``/``ts_init`` pair that every Nautilus ``Data`` carries.
    """

    __slots__ = ("_ts_event", "_ts_init")

    FIELDS: ClassVar[tuple[FieldSpec, ...]] = ()
    SCHEMA: ClassVar[pa.Schema]
    _ALL: ClassVar[tuple[FieldSpec, ...]]
    _SLOTS: ClassVar[tuple[str, ...]]
    _SET_ALL: ClassVar[Callable[..., None]]
    _FAST: ClassVar[tuple[tuple[FieldSpec, Callable[[Any], Any]], ...]]

    # -- construction ------------------------------------------------------------------------------

    def _assign(self, **values: Any) -> None:
        # Each field first tries its compiled fast check (plain Python values that are plainly valid);
        # anything else -- numpy scalars, strings for instruments, NaN where it may be an error, every
        # invalid value -- goes through ``FieldSpec.coerce``, which converts or raises the documented error.
        converted = []
        for spec, fast in self._FAST:
            value = values[spec.name]
            try:
                converted.append(fast(value))
            except _NotFast:
                converted.append(spec.coerce(value, type(self).__name__))
        self._SET_ALL(self, *converted)  # compiled slot stores, as the Arrow decoder uses

    @property
    def ts_event(self) -> int:
        """UNIX timestamp (nanoseconds) when the underlying event occurred."""
        return self._ts_event

    @property
    def ts_init(self) -> int:
        """UNIX timestamp (nanoseconds) when this record was created; the catalog's sort key."""
        return self._ts_init

    # -- value semantics ---------------------------------------------------------------------------

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, slot) for slot in self._SLOTS)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(_same(a, b) for a, b in zip(self._values(), other._values(), strict=True))

    def __hash__(self) -> int:
        # Consistent with __eq__ (equal records share these) and cheap; vectors/NaNs stay out of it.
        return hash(
            (type(self).__name__, getattr(self, "_instrument_id", None), self._ts_event, self._ts_init)
        )

    def __repr__(self) -> str:
        body = ", ".join(
            f"{spec.name}={value!r}" for spec, value in zip(self._ALL, self._values(), strict=True)
        )
        return f"{type(self).__name__}({body})"

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return _restore, (type(self), self.to_dict())

    # -- dict / msgpack ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (``type`` key included) as Nautilus' ``MsgSpecSerializer`` expects."""
        d: dict[str, Any] = {"type": type(self).__name__}
        for spec, value in zip(self._ALL, self._values(), strict=True):
            if spec.kind == "instrument":
                value = value.value
            elif spec.kind == "vector":
                value = list(value)
            d[spec.name] = value
        return d

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`; validates like the constructor (``None`` floats become NaN)."""
        d = dict(values)
        kind = d.pop("type", cls.__name__)
        if kind != cls.__name__:
            raise ValueError(f"{cls.__name__}.from_dict: dict is for type {kind!r}")
        unknown = set(d) - {spec.name for spec in cls._ALL}
        if unknown:
            raise ValueError(f"{cls.__name__}.from_dict: unknown fields {sorted(unknown)}")
        return cls(**d)

    # -- Arrow -------------------------------------------------------------------------------------

    @classmethod
    def objects_to_table(cls, objs: Sequence[SageData]) -> pa.Table:
        """Arrow table (exactly ``SCHEMA``) from instances; order is preserved, values are not re-checked
        because every instance was validated when constructed."""
        return pa.Table.from_arrays(cls._object_arrays(objs), schema=cls.SCHEMA)

    @classmethod
    def _object_arrays(cls, objs: Sequence[SageData]) -> list[pa.Array]:
        for obj in objs:
            if type(obj) is not cls:
                raise TypeError(f"{cls.__name__}: cannot encode {type(obj).__name__}")
        arrays: list[pa.Array] = []
        for spec, slot in zip(cls._ALL, cls._SLOTS, strict=True):
            getter = operator.attrgetter(slot)
            if spec.kind == "instrument":
                arrays.append(pa.array([getter(o).value for o in objs], type=pa.string()))
            elif spec.kind == "vector":
                flat = pa.array(list(chain.from_iterable(map(getter, objs))), type=pa.float64())
                arrays.append(pa.FixedSizeListArray.from_arrays(flat, spec.size))
            else:
                arrays.append(pa.array(list(map(getter, objs)), type=spec.arrow_type))
        return arrays

    @classmethod
    def columns_to_table(cls, columns: Mapping[str, Any] | pa.Table, *, validate: bool = True) -> pa.Table:
        """Arrow table (exactly ``SCHEMA``) from columns, without building Python objects.

        ``columns`` maps field names to numpy arrays / lists / Arrow arrays (vectors as an ``(n, k)``
        array or a list column); a scalar is broadcast to every row; fields with a default may be
        omitted. With ``validate`` every column is checked against its field rule and the first
        offending row is reported (``ValueError``); wrong column types raise ``TypeError``.
        This is the fast path a precompute uses to hand results to the catalog writer.
        """
        owner = cls.__name__
        if isinstance(columns, pa.Table | pa.RecordBatch):
            columns = {name: columns.column(name) for name in columns.column_names}
        known = {spec.name for spec in cls._ALL}
        unknown = set(columns) - known
        if unknown:
            raise ValueError(f"{owner}: unknown columns {sorted(unknown)}")
        missing = [s.name for s in cls._ALL if s.name not in columns and not s.has_default]
        if missing:
            raise ValueError(f"{owner}: missing columns {missing}")
        n = _column_length(columns, owner)
        arrays: list[pa.Array] = []
        for spec in cls._ALL:
            value = columns.get(spec.name, spec.default)
            arr = spec.to_arrow(value, n, owner)
            if validate:
                spec.check_column(arr, owner)
            arrays.append(arr if arr.type == spec.arrow_type else arr.cast(spec.arrow_type))
        return pa.Table.from_arrays(arrays, schema=cls.SCHEMA)

    @classmethod
    def validate_table(cls, table: pa.Table) -> None:
        """Check a table in ``SCHEMA`` row-wise against every field rule (``ValueError`` on the first bad row)."""
        for spec in cls._ALL:
            col = table.column(spec.name)
            spec.check_column(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col, cls.__name__)

    @classmethod
    def table_to_objects(cls, table: pa.Table | pa.RecordBatch) -> list[Self]:
        """Rebuild instances from an Arrow table/batch in ``SCHEMA`` (columns selected by name, so extra
        columns or schema metadata from feather streams do not matter). Validates column-wise first."""
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        n = table.num_rows
        cols: list[Iterable[Any]] = []
        for spec in cls._ALL:
            col = table.column(spec.name)
            arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
            arr = spec._normalise_type(arr, f"{cls.__name__}.{spec.name}") if spec.kind != "vector" else arr
            spec.check_column(arr, cls.__name__)
            if spec.kind == "instrument":
                cache: dict[str, InstrumentId] = {}
                values = arr.to_pylist()
                for v in set(values):
                    cache[v] = InstrumentId.from_str(v)
                cols.append([cache[v] for v in values])
            elif spec.kind == "vector":
                flat = arr.flatten().to_numpy(zero_copy_only=False).reshape(n, spec.size)
                cols.append(list(map(tuple, flat.tolist())))
            elif spec.kind in ("int", "ts", "float"):
                cols.append(arr.to_numpy(zero_copy_only=False).tolist())
            else:
                cols.append(arr.to_pylist())
        new, set_all = cls.__new__, cls._SET_ALL
        out: list[Self] = []
        append = out.append
        # Millions of fresh container objects would trigger the cyclic GC over and over (none of them
        # can form cycles); pausing it makes large decodes several times faster.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for row in zip(*cols, strict=True):
                obj = new(cls)
                set_all(obj, *row)
                append(obj)
        finally:
            if gc_was_enabled:
                gc.enable()
        return out

    @classmethod
    def _arrow_encode(cls, data: SageData | Sequence[SageData]) -> pa.RecordBatch:
        objs = list(data) if isinstance(data, list | tuple) else [data]
        return pa.RecordBatch.from_arrays(cls._object_arrays(objs), schema=cls.SCHEMA)

    @classmethod
    def _arrow_decode(cls, table: pa.Table | pa.RecordBatch) -> list[Self]:
        return cls.table_to_objects(table)


def _column_length(columns: Mapping[str, Any], owner: str) -> int:
    for value in columns.values():
        if not _is_scalar(value):
            return len(value)
    raise ValueError(f"{owner}: cannot infer the row count when every column is a scalar")


class _NotFast(Exception):
    """Raised by a fast field check when the value needs :meth:`FieldSpec.coerce` (to convert or to fail)."""


_NOT_FAST = _NotFast()
_FAST_NUMBER_TYPES = (int, float, np.float64, np.float32, np.int64, np.int32)


def _fast_converter(spec: FieldSpec) -> Callable[[Any], Any]:
    """A converter that returns exactly what ``spec.coerce`` would for the common valid values and raises
    :class:`_NotFast` for everything else.

    Why: every published record is built from values the package computed itself (Python floats, ints,
    tuples, ``InstrumentId``), and the generic ``coerce`` (error-message strings, ``operator.index``,
    per-element ``_as_float``) was a third of the regime actor's per-bar cost. The fast path never
    *accepts* more than ``coerce``: it only short-circuits values that are already of the stored type
    and inside every rule, so validation and errors are unchanged (tested against ``coerce``).
    """
    lo, hi, choices, kind = spec.lo, spec.hi, spec.choices, spec.kind
    number_types = _FAST_NUMBER_TYPES

    if kind == "float":
        nan_ok = spec.nan_ok

        def fast_float(v: Any) -> float:
            if type(v) is not float:
                if type(v) not in number_types:
                    raise _NOT_FAST
                v = float(v)
            if v - v != 0.0:  # NaN or +-inf
                if nan_ok and math.isnan(v):
                    return v
                raise _NOT_FAST
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                raise _NOT_FAST
            return v

        return fast_float

    if kind in ("int", "ts"):

        def fast_int(v: Any) -> int:
            if type(v) is not int:
                raise _NOT_FAST
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                raise _NOT_FAST
            if choices is not None and v not in choices:
                raise _NOT_FAST
            return v

        return fast_int

    if kind == "vector":
        size = spec.size
        float_only = {float}

        def fast_vector(v: Any) -> tuple[float, ...]:
            t = type(v)
            if t is np.ndarray:
                if v.dtype != np.float64 or v.ndim != 1:
                    raise _NOT_FAST
                items = tuple(v.tolist())
            elif t is tuple or t is list:
                if set(map(type, v)) != float_only:
                    raise _NOT_FAST
                items = tuple(v)
            else:
                raise _NOT_FAST
            if len(items) != size:
                raise _NOT_FAST
            total = sum(items)
            if total - total != 0.0:  # a NaN or inf somewhere (or an overflowing sum): let coerce decide
                raise _NOT_FAST
            if (lo is not None and min(items) < lo) or (hi is not None and max(items) > hi):
                raise _NOT_FAST
            return items

        return fast_vector

    if kind == "instrument":

        def fast_instrument(v: Any) -> InstrumentId:
            if type(v) is not InstrumentId:
                raise _NOT_FAST
            return v

        return fast_instrument

    nonempty, is_json = spec.nonempty, spec.is_json
    json_decode = msgspec.json.decode

    def fast_str(v: Any) -> str:
        if type(v) is not str:
            raise _NOT_FAST
        if nonempty and not v:
            raise _NOT_FAST
        if choices is not None and v not in choices:
            raise _NOT_FAST
        if is_json:
            try:
                json_decode(v)  # strict JSON, a subset of what json.loads accepts; else coerce decides
            except msgspec.DecodeError:
                raise _NOT_FAST from None
        return v

    return fast_str


def _finalize(cls: type[T]) -> type[T]:
    """Derive schema, slots order and read-only properties from ``FIELDS``; register with Nautilus."""
    cls._ALL = (*cls.FIELDS, *_TS_FIELDS)
    cls._SLOTS = tuple(f"_{spec.name}" for spec in cls._ALL)
    missing = [s for s in cls._SLOTS if not hasattr(cls, s)]
    if missing:
        raise TypeError(f"{cls.__name__}: __slots__ lacks {missing}")
    for spec in cls.FIELDS:
        setattr(cls, spec.name, property(operator.attrgetter(f"_{spec.name}"), doc=spec.doc))
    cls._SET_ALL = staticmethod(_slot_setter(cls._SLOTS))
    cls._FAST = tuple((spec, _fast_converter(spec)) for spec in cls._ALL)  # same order as _SLOTS / _SET_ALL
    cls.SCHEMA = pa.schema(
        [pa.field(spec.name, spec.arrow_type, nullable=False) for spec in cls._ALL],
        metadata={"sage_type": cls.__name__, "sage_schema_version": SCHEMA_VERSION},
    )
    _register(cls)
    return cls


def _slot_setter(slots: tuple[str, ...]) -> Callable[..., None]:
    """Compile ``f(obj, v0, v1, ..) -> obj._a = v0; obj._b = v1; ..`` for the decoder's hot loop.

    Plain attribute stores are ~3x faster than a ``setattr`` loop; rebuilding a million rows from a
    catalog spends most of its time here. Same technique as ``dataclasses``; the slot names are
    generated from our own ``FieldSpec`` names, never from data.
    """
    if not all(s.isidentifier() for s in slots):
        raise ValueError(f"invalid slot names {slots}")
    args = ", ".join(f"v{i}" for i in range(len(slots)))
    body = "; ".join(f"obj.{slot} = v{i}" for i, slot in enumerate(slots))
    namespace: dict[str, Any] = {}
    exec(f"def set_all(obj, {args}):\n    {body}\n", {}, namespace)  # noqa: S102
    return namespace["set_all"]


def _register(cls: type[SageData]) -> None:
    others = [c for c in list_schemas() if c.__name__ == cls.__name__ and c is not cls]
    foreign = [c for c in others if c.__module__ != cls.__module__ or c.__qualname__ != cls.__qualname__]
    if foreign:
        raise RuntimeError(f"another Nautilus-registered type is already named {cls.__name__}: {foreign[0]}")
    register_arrow(cls, cls.SCHEMA, encoder=cls._arrow_encode, decoder=cls._arrow_decode)
    try:
        register_serializable_type(cls, cls.to_dict, cls.from_dict)
    except KeyError:
        # Only reachable when this module is executed a second time (e.g. importlib.reload): the name
        # maps to the previous incarnation of this very class, which serialises identically.
        if not others:
            raise


def _slots(fields: tuple[FieldSpec, ...]) -> tuple[str, ...]:
    return tuple(f"_{spec.name}" for spec in fields)


# ---------------------------------------------------------------------------------------------------
# The four types. Field order below is the Arrow column order; do not reorder (bump SCHEMA_VERSION).
# ---------------------------------------------------------------------------------------------------

_INSTRUMENT = FieldSpec("instrument_id", "instrument", pa.string(), "Instrument the record is about.")
_MODEL_VERSION = FieldSpec(
    "model_version", "str", pa.string(), "Version tag of the producing model/rule set."
)


@_finalize
class RegimeData(SageData):
    """A regime estimate for one instrument at one bar.

    ``label`` is the :class:`~sage.data.regimes.Regime` code; ``probabilities`` are ordered
    (bull, bear, sideways, volatile) like ``Regime``; ``vector`` is the model's 8-D regime embedding.
    ``uncertainty`` is the calibrated forecast-interval width (NaN when no calibration is available).
    ``fallback_level`` 1 means the primary model, 5 the last-resort rule. Health: ``latency_us`` is the
    inference latency in microseconds (NaN if not measured), ``drift`` the input drift score (NaN if not
    computed), ``health_flags`` a :class:`RegimeHealth` bitmask.
    """

    FIELDS = (
        _INSTRUMENT,
        FieldSpec(
            "label", "int", pa.int8(), "Regime code (sage.data.regimes.Regime).", choices=_REGIME_CODES
        ),
        FieldSpec(
            "probabilities",
            "vector",
            pa.list_(pa.float64(), 4),
            "P(bull), P(bear), P(sideways), P(volatile).",
            size=4,
            lo=0.0,
            hi=1.0,
        ),
        FieldSpec("vector", "vector", pa.list_(pa.float64(), 8), "8-D regime embedding.", size=8),
        FieldSpec("confidence", "float", pa.float64(), "Confidence in the label, 0..1.", lo=0.0, hi=1.0),
        FieldSpec(
            "uncertainty",
            "float",
            pa.float64(),
            "Calibrated forecast interval width; NaN if unavailable.",
            lo=0.0,
            nan_ok=True,
            default=math.nan,
        ),
        FieldSpec(
            "fallback_level", "int", pa.int8(), "1 = primary model .. 5 = last-resort rule.", choices=_LEVELS
        ),
        _MODEL_VERSION,
        FieldSpec(
            "latency_us",
            "float",
            pa.float64(),
            "Inference latency in microseconds; NaN if not measured.",
            lo=0.0,
            nan_ok=True,
            default=math.nan,
        ),
        FieldSpec(
            "drift",
            "float",
            pa.float64(),
            "Input drift score; NaN if not computed.",
            nan_ok=True,
            default=math.nan,
        ),
        FieldSpec("health_flags", "int", pa.int64(), "RegimeHealth bitmask.", lo=0, hi=_INT64_MAX, default=0),
    )
    __slots__ = _slots(FIELDS)

    instrument_id: InstrumentId
    label: int
    probabilities: tuple[float, float, float, float]
    vector: tuple[float, ...]
    confidence: float
    uncertainty: float
    fallback_level: int
    model_version: str
    latency_us: float
    drift: float
    health_flags: int

    def __init__(
        self,
        instrument_id: InstrumentId | str,
        *,
        label: int | Regime,
        probabilities: Sequence[float],
        vector: Sequence[float],
        confidence: float,
        fallback_level: int,
        model_version: str,
        ts_event: int,
        ts_init: int,
        uncertainty: float = math.nan,
        latency_us: float = math.nan,
        drift: float = math.nan,
        health_flags: int = 0,
    ) -> None:
        self._assign(
            instrument_id=instrument_id,
            label=label,
            probabilities=probabilities,
            vector=vector,
            confidence=confidence,
            uncertainty=uncertainty,
            fallback_level=fallback_level,
            model_version=model_version,
            latency_us=latency_us,
            drift=drift,
            health_flags=health_flags,
            ts_event=ts_event,
            ts_init=ts_init,
        )

    @property
    def regime(self) -> Regime:
        """The label as a :class:`Regime` member."""
        return Regime(self._label)

    @property
    def label_name(self) -> str:
        """The label's name, e.g. ``"BULL"``."""
        return Regime(self._label).name

    @property
    def health(self) -> RegimeHealth:
        """``health_flags`` as a :class:`RegimeHealth` flag set."""
        return RegimeHealth(self._health_flags)


@_finalize
class AgentSignal(SageData):
    """One trading agent's view for one instrument and timeframe.

    ``direction`` is -2 (strong sell), -1 (sell), 0 (hold), 1 (buy), 2 (strong buy); ``probabilities``
    is the policy's distribution over those five levels in that order; ``value`` is the critic's value
    estimate; ``strength`` is the agent's signal strength (finite, scale defined by the agent).
    """

    FIELDS = (
        _INSTRUMENT,
        FieldSpec("agent", "str", pa.string(), "Agent name.", nonempty=True),
        FieldSpec(
            "timeframe", "str", pa.string(), 'Bar timeframe the agent runs on, e.g. "5m".', nonempty=True
        ),
        FieldSpec("direction", "int", pa.int8(), "-2 strong sell .. 2 strong buy.", lo=-2, hi=2),
        FieldSpec("strength", "float", pa.float64(), "Signal strength."),
        FieldSpec(
            "probabilities",
            "vector",
            pa.list_(pa.float64(), 5),
            "Policy probabilities over directions -2..2.",
            size=5,
            lo=0.0,
            hi=1.0,
        ),
        FieldSpec("value", "float", pa.float64(), "Critic value estimate."),
        _MODEL_VERSION,
    )
    __slots__ = _slots(FIELDS)

    instrument_id: InstrumentId
    agent: str
    timeframe: str
    direction: int
    strength: float
    probabilities: tuple[float, float, float, float, float]
    value: float
    model_version: str

    def __init__(
        self,
        instrument_id: InstrumentId | str,
        *,
        agent: str,
        timeframe: str,
        direction: int,
        strength: float,
        probabilities: Sequence[float],
        value: float,
        model_version: str,
        ts_event: int,
        ts_init: int,
    ) -> None:
        self._assign(
            instrument_id=instrument_id,
            agent=agent,
            timeframe=timeframe,
            direction=direction,
            strength=strength,
            probabilities=probabilities,
            value=value,
            model_version=model_version,
            ts_event=ts_event,
            ts_init=ts_init,
        )


@_finalize
class RiskProposal(SageData):
    """A position-size and bracket proposal for one instrument.

    ``side`` is +1 long, -1 short, 0 none; ``quantity`` is in instrument units; ``size_probabilities``
    is the sizer's distribution over 0..5 units. Prices and ratios may be NaN when ``side`` is 0.
    ``risk_amount`` is in account currency. ``source`` is ``"mrms"`` (learned) or ``"rule"`` (fallback).
    """

    FIELDS = (
        _INSTRUMENT,
        FieldSpec("side", "int", pa.int8(), "+1 long, -1 short, 0 none.", choices=(-1, 0, 1)),
        FieldSpec("quantity", "float", pa.float64(), "Proposed quantity in units.", lo=0.0),
        FieldSpec(
            "size_probabilities",
            "vector",
            pa.list_(pa.float64(), 6),
            "Probabilities over 0..5 units.",
            size=6,
            lo=0.0,
            hi=1.0,
        ),
        FieldSpec("stop_atr_multiple", "float", pa.float64(), "Stop distance in ATRs.", lo=0.0, nan_ok=True),
        FieldSpec(
            "reward_risk", "float", pa.float64(), "Target distance / stop distance.", lo=0.0, nan_ok=True
        ),
        FieldSpec("entry_price", "float", pa.float64(), "Reference entry price.", nan_ok=True),
        FieldSpec("stop_price", "float", pa.float64(), "Stop-loss price.", nan_ok=True),
        FieldSpec("target_price", "float", pa.float64(), "Take-profit price.", nan_ok=True),
        FieldSpec(
            "risk_amount", "float", pa.float64(), "Money at risk (account currency).", lo=0.0, nan_ok=True
        ),
        FieldSpec("confidence", "float", pa.float64(), "Sizer confidence, 0..1.", lo=0.0, hi=1.0),
        FieldSpec("source", "str", pa.string(), '"mrms" or "rule".', choices=RISK_PROPOSAL_SOURCES),
        _MODEL_VERSION,
    )
    __slots__ = _slots(FIELDS)

    instrument_id: InstrumentId
    side: int
    quantity: float
    size_probabilities: tuple[float, float, float, float, float, float]
    stop_atr_multiple: float
    reward_risk: float
    entry_price: float
    stop_price: float
    target_price: float
    risk_amount: float
    confidence: float
    source: str
    model_version: str

    def __init__(
        self,
        instrument_id: InstrumentId | str,
        *,
        side: int,
        quantity: float,
        size_probabilities: Sequence[float],
        stop_atr_multiple: float,
        reward_risk: float,
        entry_price: float,
        stop_price: float,
        target_price: float,
        risk_amount: float,
        confidence: float,
        source: str,
        model_version: str,
        ts_event: int,
        ts_init: int,
    ) -> None:
        self._assign(
            instrument_id=instrument_id,
            side=side,
            quantity=quantity,
            size_probabilities=size_probabilities,
            stop_atr_multiple=stop_atr_multiple,
            reward_risk=reward_risk,
            entry_price=entry_price,
            stop_price=stop_price,
            target_price=target_price,
            risk_amount=risk_amount,
            confidence=confidence,
            source=source,
            model_version=model_version,
            ts_event=ts_event,
            ts_init=ts_init,
        )


@_finalize
class DecisionRecord(SageData):
    """The audit record of one trading decision, with room for a human-readable explanation.

    ``details_json`` holds the variable-size structured payload (agent signals and weights, the risk
    proposal, feature attributions) as a JSON document; :attr:`details` parses it. ``regime_level`` is the
    regime model's fallback level (1..5) at decision time.
    """

    FIELDS = (
        _INSTRUMENT,
        FieldSpec("decision_id", "str", pa.string(), "Unique id of the decision.", nonempty=True),
        FieldSpec("action", "str", pa.string(), "BUY, SELL, CLOSE, HOLD or NO_TRADE.", choices=ACTIONS),
        FieldSpec("regime_label", "int", pa.int8(), "Regime code at decision time.", choices=_REGIME_CODES),
        FieldSpec("regime_level", "int", pa.int8(), "Regime fallback level 1..5.", choices=_LEVELS),
        FieldSpec("combined_signal", "float", pa.float64(), "Ensemble signal.", nan_ok=True),
        FieldSpec(
            "combined_uncertainty", "float", pa.float64(), "Ensemble uncertainty.", lo=0.0, nan_ok=True
        ),
        FieldSpec("quantity", "float", pa.float64(), "Quantity acted on (units).", lo=0.0),
        FieldSpec("algorithm", "str", pa.string(), "Decision algorithm / policy name."),
        FieldSpec("explanation", "str", pa.string(), "Human-readable explanation.", default=""),
        FieldSpec(
            "details_json", "str", pa.string(), "Structured details as JSON.", is_json=True, default="{}"
        ),
    )
    __slots__ = _slots(FIELDS)

    instrument_id: InstrumentId
    decision_id: str
    action: str
    regime_label: int
    regime_level: int
    combined_signal: float
    combined_uncertainty: float
    quantity: float
    algorithm: str
    explanation: str
    details_json: str

    def __init__(
        self,
        instrument_id: InstrumentId | str,
        *,
        decision_id: str,
        action: str,
        regime_label: int | Regime,
        regime_level: int,
        combined_signal: float,
        combined_uncertainty: float,
        quantity: float,
        algorithm: str,
        ts_event: int,
        ts_init: int,
        explanation: str = "",
        details_json: str = "{}",
    ) -> None:
        self._assign(
            instrument_id=instrument_id,
            decision_id=decision_id,
            action=action,
            regime_label=regime_label,
            regime_level=regime_level,
            combined_signal=combined_signal,
            combined_uncertainty=combined_uncertainty,
            quantity=quantity,
            algorithm=algorithm,
            explanation=explanation,
            details_json=details_json,
            ts_event=ts_event,
            ts_init=ts_init,
        )

    @property
    def regime(self) -> Regime:
        """``regime_label`` as a :class:`Regime` member."""
        return Regime(self._regime_label)

    @property
    def details(self) -> Any:
        """``details_json`` parsed (a fresh object each call, so callers cannot mutate the record)."""
        return json.loads(self._details_json)


#: The four types, e.g. for ``StreamingConfig(include_types=list(SAGE_DATA_TYPES))``.
SAGE_DATA_TYPES: tuple[type[SageData], ...] = (RegimeData, AgentSignal, RiskProposal, DecisionRecord)
