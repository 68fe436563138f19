"""Unit tests of sage's custom Nautilus data types: schema, validation, dict/msgpack/Arrow round trips,
and how they travel over a real Nautilus message bus (DataType metadata rules)."""

from __future__ import annotations

import math
import pickle
from decimal import Decimal
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig, LoggingConfig, StrategyConfig
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import Bar, BarType, DataType
from nautilus_trader.model.enums import AccountType, OmsType
from nautilus_trader.model.identifiers import InstrumentId, Venue
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.serialization.arrow.serializer import ArrowSerializer, get_schema
from nautilus_trader.serialization.serializer import MsgSpecSerializer
from nautilus_trader.test_kit.providers import TestInstrumentProvider
from nautilus_trader.trading.strategy import Strategy

from sage.data.regimes import Regime
from sage.data.types import (
    SAGE_DATA_TYPES,
    AgentSignal,
    DecisionRecord,
    RegimeData,
    RegimeHealth,
    RiskProposal,
    SageData,
)

IID = InstrumentId.from_str("EUR/USD.SIM")
T0 = 1_700_000_000_000_000_000
MINUTE = 60_000_000_000


def make(cls: type[SageData], i: int = 0, **overrides: Any) -> SageData:
    """A valid record of ``cls`` whose values vary with ``i`` (NaN where the field allows it)."""
    ts = T0 + i * MINUTE
    common: dict[str, Any] = {"ts_event": ts, "ts_init": ts + 1}
    if cls is RegimeData:
        p = np.roll([0.55, 0.25, 0.15, 0.05], i)
        kw = {
            "label": int(np.argmax(p)),
            "probabilities": p,
            "vector": np.linspace(-1, 1, 8) * (i + 1),
            "confidence": float(p.max()),
            "uncertainty": math.nan if i % 2 else 0.02 * i,
            "fallback_level": 1 + i % 5,
            "model_version": "hmm-1.2",
            "latency_us": 120.5 + i,
            "drift": math.nan if i % 3 == 0 else 0.1 * i,
            "health_flags": int(RegimeHealth.DRIFT_WARNING) if i % 4 == 3 else 0,
        }
    elif cls is AgentSignal:
        kw = {
            "agent": "trend",
            "timeframe": "5m",
            "direction": (i % 5) - 2,
            "strength": 0.1 * i,
            "probabilities": np.roll([0.6, 0.1, 0.1, 0.1, 0.1], i),
            "value": -0.5 + i,
            "model_version": "ppo-3",
        }
    elif cls is RiskProposal:
        kw = {
            "side": (i % 3) - 1,
            "quantity": float(i % 6),
            "size_probabilities": np.eye(6)[i % 6],
            "stop_atr_multiple": 1.5,
            "reward_risk": math.nan if i % 3 == 1 else 2.0,
            "entry_price": 1.1 + i * 1e-4,
            "stop_price": 1.09,
            "target_price": 1.12,
            "risk_amount": 250.0,
            "confidence": 0.7,
            "source": "mrms" if i % 2 else "rule",
            "model_version": "mrms-0.4",
        }
    else:
        kw = {
            "decision_id": f"D-{i}",
            "action": ("BUY", "SELL", "CLOSE", "HOLD", "NO_TRADE")[i % 5],
            "regime_label": i % 4,
            "regime_level": 1 + i % 5,
            "combined_signal": math.nan if i % 5 == 4 else 0.3,
            "combined_uncertainty": 0.05,
            "quantity": float(i),
            "algorithm": "ensemble-v1",
            "explanation": f"trend agreed with regime {i % 4}; ünïcode ok",
            "details_json": msgspec.json.encode({"weights": {"trend": 0.6, "mr": 0.4}, "i": i}).decode(),
        }
    kw.update(common)
    kw.update(overrides)
    return cls(IID, **kw)


def field_values(obj: SageData) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.SCHEMA.names}


def assert_same(got: SageData, want: SageData) -> None:
    """Field-by-field equality with NaN == NaN; names the first differing field."""
    assert type(got) is type(want)
    for name, w in field_values(want).items():
        g = getattr(got, name)
        same = (
            (g == w)
            or (isinstance(w, float) and math.isnan(w) and isinstance(g, float) and math.isnan(g))
            or (isinstance(w, tuple) and np.array_equal(np.array(g), np.array(w), equal_nan=True))
        )
        assert same, f"{type(want).__name__}.{name}: got {g!r}, want {w!r}"


def tables_equal(a: pa.Table, b: pa.Table) -> bool:
    """``Table.equals`` treats NaN != NaN; compare schema (with metadata) and NaN-aware values."""
    if not a.schema.equals(b.schema, check_metadata=True):
        return False
    for x, y in zip(a.columns, b.columns, strict=True):
        x, y = x.combine_chunks(), y.combine_chunks()
        if pa.types.is_fixed_size_list(x.type):
            x, y = x.flatten(), y.flatten()
        if pa.types.is_floating(x.type):
            if not np.array_equal(x.to_numpy(), y.to_numpy(), equal_nan=True):
                return False
        elif x.to_pylist() != y.to_pylist():
            return False
    return True


# -- schema ------------------------------------------------------------------------------------------

F64 = pa.float64()
EXPECTED_SCHEMAS = {
    RegimeData: [
        ("instrument_id", pa.string()),
        ("label", pa.int8()),
        ("probabilities", pa.list_(F64, 4)),
        ("vector", pa.list_(F64, 8)),
        ("confidence", F64),
        ("uncertainty", F64),
        ("fallback_level", pa.int8()),
        ("model_version", pa.string()),
        ("latency_us", F64),
        ("drift", F64),
        ("health_flags", pa.int64()),
        ("ts_event", pa.uint64()),
        ("ts_init", pa.uint64()),
    ],
    AgentSignal: [
        ("instrument_id", pa.string()),
        ("agent", pa.string()),
        ("timeframe", pa.string()),
        ("direction", pa.int8()),
        ("strength", F64),
        ("probabilities", pa.list_(F64, 5)),
        ("value", F64),
        ("model_version", pa.string()),
        ("ts_event", pa.uint64()),
        ("ts_init", pa.uint64()),
    ],
    RiskProposal: [
        ("instrument_id", pa.string()),
        ("side", pa.int8()),
        ("quantity", F64),
        ("size_probabilities", pa.list_(F64, 6)),
        ("stop_atr_multiple", F64),
        ("reward_risk", F64),
        ("entry_price", F64),
        ("stop_price", F64),
        ("target_price", F64),
        ("risk_amount", F64),
        ("confidence", F64),
        ("source", pa.string()),
        ("model_version", pa.string()),
        ("ts_event", pa.uint64()),
        ("ts_init", pa.uint64()),
    ],
    DecisionRecord: [
        ("instrument_id", pa.string()),
        ("decision_id", pa.string()),
        ("action", pa.string()),
        ("regime_label", pa.int8()),
        ("regime_level", pa.int8()),
        ("combined_signal", F64),
        ("combined_uncertainty", F64),
        ("quantity", F64),
        ("algorithm", pa.string()),
        ("explanation", pa.string()),
        ("details_json", pa.string()),
        ("ts_event", pa.uint64()),
        ("ts_init", pa.uint64()),
    ],
}


@pytest.mark.parametrize("cls", SAGE_DATA_TYPES, ids=lambda c: c.__name__)
def test_schema_is_pinned_and_registered_with_nautilus(cls: type[SageData]) -> None:
    # Later stages (catalog files, feature stores) depend on these exact columns; a change here must be
    # deliberate and come with a SCHEMA_VERSION bump.
    assert [(f.name, f.type) for f in cls.SCHEMA] == EXPECTED_SCHEMAS[cls]
    assert all(not f.nullable for f in cls.SCHEMA)
    assert cls.SCHEMA.metadata == {b"sage_type": cls.__name__.encode(), b"sage_schema_version": b"1"}
    assert get_schema(cls) is cls.SCHEMA


# -- construction and validation ------------------------------------------------------------------------


@pytest.mark.parametrize("cls", SAGE_DATA_TYPES, ids=lambda c: c.__name__)
def test_numpy_inputs_become_plain_python_values(cls: type[SageData]) -> None:
    obj = make(cls, 3)
    for name, value in field_values(obj).items():
        spec_kind = {s.name: s.kind for s in cls._ALL}[name]
        expected = {
            "instrument": InstrumentId,
            "int": int,
            "ts": int,
            "float": float,
            "str": str,
            "vector": tuple,
        }
        assert type(value) is expected[spec_kind], name
        if spec_kind == "vector":
            assert all(type(x) is float for x in value)


BAD_VALUES = [
    (RegimeData, "label", 4, ValueError),
    (RegimeData, "label", -1, ValueError),
    (RegimeData, "label", 1.0, TypeError),
    (RegimeData, "probabilities", [0.5, 0.5, 0.0], ValueError),
    (RegimeData, "probabilities", [0.5, 0.5, 0.0, 1.5], ValueError),
    (RegimeData, "probabilities", [0.5, math.nan, 0.0, 0.5], ValueError),
    (RegimeData, "vector", list(range(7)), ValueError),
    (RegimeData, "vector", [0.0] * 7 + [math.inf], ValueError),
    (RegimeData, "fallback_level", 0, ValueError),
    (RegimeData, "fallback_level", 6, ValueError),
    (RegimeData, "confidence", math.nan, ValueError),
    (RegimeData, "confidence", 1.01, ValueError),
    (RegimeData, "uncertainty", -0.1, ValueError),
    (RegimeData, "health_flags", -1, ValueError),
    (RegimeData, "model_version", 3, TypeError),
    (RegimeData, "ts_event", -5, ValueError),
    (RegimeData, "ts_init", 2**63, ValueError),
    (AgentSignal, "direction", 3, ValueError),
    (AgentSignal, "probabilities", [0.2] * 4, ValueError),
    (AgentSignal, "agent", "", ValueError),
    (AgentSignal, "value", math.inf, ValueError),
    (RiskProposal, "side", 2, ValueError),
    (RiskProposal, "size_probabilities", [0.0] * 5, ValueError),
    (RiskProposal, "quantity", -1.0, ValueError),
    (RiskProposal, "source", "MRMS", ValueError),
    (DecisionRecord, "action", "buy", ValueError),
    (DecisionRecord, "regime_label", 4, ValueError),
    (DecisionRecord, "regime_level", 6, ValueError),
    (DecisionRecord, "details_json", "{not json", ValueError),
    (DecisionRecord, "decision_id", "", ValueError),
]


@pytest.mark.parametrize(
    ("cls", "field", "value", "error"), BAD_VALUES, ids=lambda v: getattr(v, "__name__", str(v))
)
def test_constructor_rejects_invalid_values_naming_the_field(
    cls: type[SageData], field: str, value: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match=rf"{cls.__name__}\.{field}\b"):
        make(cls, **{field: value})


def test_instrument_id_accepts_str_and_rejects_garbage() -> None:
    kw = {k: v for k, v in field_values(make(RegimeData)).items() if k != "instrument_id"}
    assert RegimeData("EUR/USD.SIM", **kw).instrument_id == IID
    with pytest.raises(ValueError, match=r"RegimeData\.instrument_id"):
        RegimeData("no-venue", **kw)
    with pytest.raises(TypeError, match=r"RegimeData\.instrument_id"):
        RegimeData(42, **kw)  # type: ignore[arg-type]


def test_convenience_properties() -> None:
    r = make(
        RegimeData, 0, label=Regime.VOLATILE, health_flags=RegimeHealth.DRIFT_ALARM | RegimeHealth.STALE_INPUT
    )
    assert r.label == 3 and type(r.label) is int
    assert r.label_name == "VOLATILE" and r.regime is Regime.VOLATILE
    assert r.health & RegimeHealth.DRIFT_ALARM and not r.health & RegimeHealth.DRIFT_WARNING
    d = make(DecisionRecord, 2)
    assert d.details == {"weights": {"trend": 0.6, "mr": 0.4}, "i": 2}
    d.details["i"] = 99  # a parsed copy: the record itself cannot be changed through it
    assert d.details["i"] == 2
    assert d.regime is Regime.SIDEWAYS


@pytest.mark.parametrize("cls", SAGE_DATA_TYPES, ids=lambda c: c.__name__)
def test_records_are_immutable_values(cls: type[SageData]) -> None:
    a, b, c = make(cls, 1), make(cls, 1), make(cls, 2)
    assert a == b and hash(a) == hash(b) and a is not b
    assert a != c
    assert a != make(cls, 1, ts_init=a.ts_init + 1)
    with pytest.raises(AttributeError):
        a.instrument_id = IID  # type: ignore[misc]
    with pytest.raises(AttributeError):
        a.new_attribute = 1  # type: ignore[attr-defined]
    assert repr(a).startswith(f"{cls.__name__}(instrument_id=InstrumentId('EUR/USD.SIM')")
    assert f"ts_init={a.ts_init}" in repr(a)


# -- dict / msgpack / JSON / pickle ---------------------------------------------------------------------


@pytest.mark.parametrize("cls", SAGE_DATA_TYPES, ids=lambda c: c.__name__)
def test_dict_msgpack_json_pickle_round_trips(cls: type[SageData]) -> None:
    msgpack = MsgSpecSerializer(encoding=msgspec.msgpack)
    as_json = MsgSpecSerializer(encoding=msgspec.json, timestamps_as_str=True)
    for i in range(6):  # covers the NaN variants
        obj = make(cls, i)
        d = obj.to_dict()
        assert d["type"] == cls.__name__ and d["instrument_id"] == "EUR/USD.SIM"
        assert_same(cls.from_dict(d), obj)
        assert_same(msgpack.deserialize(msgpack.serialize(obj)), obj)  # registered type -> our class back
        assert_same(as_json.deserialize(as_json.serialize(obj)), obj)  # NaN -> null -> NaN
        assert_same(pickle.loads(pickle.dumps(obj)), obj)


def test_from_dict_rejects_foreign_or_unknown_keys() -> None:
    d = make(RegimeData).to_dict()
    with pytest.raises(ValueError, match="unknown fields"):
        RegimeData.from_dict({**d, "extra": 1})
    with pytest.raises(ValueError, match="AgentSignal"):
        RegimeData.from_dict({**d, "type": "AgentSignal"})
    with pytest.raises(ValueError, match=r"RegimeData\.label"):
        RegimeData.from_dict({**d, "label": 9})


# -- Arrow ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", SAGE_DATA_TYPES, ids=lambda c: c.__name__)
def test_arrow_round_trip_through_nautilus_serializer(cls: type[SageData]) -> None:
    objs = [make(cls, i) for i in range(7)]
    batch = ArrowSerializer.serialize(objs[0])  # what the StreamingFeatherWriter calls per message
    assert isinstance(batch, pa.RecordBatch) and batch.schema == cls.SCHEMA
    table = ArrowSerializer.serialize_batch(objs, data_cls=cls)  # what catalog.write_data calls
    assert table.schema == cls.SCHEMA and table.num_rows == 7
    for got, want in zip(ArrowSerializer.deserialize(cls, table), objs, strict=True):
        assert_same(got, want)


def _columns_of(objs: list[SageData]) -> dict[str, Any]:
    cols: dict[str, Any] = {}
    for name in objs[0].SCHEMA.names:
        values = [getattr(o, name) for o in objs]
        if name == "instrument_id":
            cols[name] = [v.value for v in values]
        elif isinstance(values[0], tuple):
            cols[name] = np.array(values)
        else:
            cols[name] = np.array(values) if not isinstance(values[0], str) else values
    return cols


@pytest.mark.parametrize("cls", SAGE_DATA_TYPES, ids=lambda c: c.__name__)
def test_columnar_path_matches_object_path(cls: type[SageData]) -> None:
    objs = [make(cls, i) for i in range(9)]
    from_objects = cls.objects_to_table(objs)
    from_columns = cls.columns_to_table(_columns_of(objs))
    assert tables_equal(from_columns, from_objects)
    for got, want in zip(cls.table_to_objects(from_columns), objs, strict=True):
        assert_same(got, want)


def test_columns_broadcast_scalars_defaults_and_datetimes() -> None:
    n = 4
    ts = np.datetime64("2024-01-02T03:04:05", "ns") + np.arange(n).astype("timedelta64[m]")
    table = RegimeData.columns_to_table(
        {
            "instrument_id": IID,
            "label": np.arange(n) % 4,
            "probabilities": np.full((n, 4), 0.25),
            "vector": np.zeros((n, 8)),
            "confidence": 0.25,
            "fallback_level": 2,
            "model_version": "v",
            "ts_event": ts,
            "ts_init": ts,
        }
    )
    objs = RegimeData.table_to_objects(table)
    assert [o.label for o in objs] == [0, 1, 2, 3]
    assert all(o.fallback_level == 2 and math.isnan(o.uncertainty) and o.health_flags == 0 for o in objs)
    assert objs[1].ts_init == objs[0].ts_init + MINUTE


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"label": np.array([0, 1, 2, 7, 0])}, r"RegimeData\.label: row 3: .*got 7"),
        ({"fallback_level": np.array([1, 1, 0, 1, 1])}, r"RegimeData\.fallback_level: row 2"),
        ({"vector": np.zeros((5, 7))}, r"RegimeData\.vector: expected an \(n, 8\) array"),
        (
            {"probabilities": np.where(np.arange(20).reshape(5, 4) == 9, np.nan, 0.25)},
            r"probabilities: row 2",
        ),
        ({"confidence": np.array([0.1, 0.2, np.inf, 0.3, 0.4])}, r"RegimeData\.confidence: row 2"),
        ({"ts_init": np.array([1, 2, -3, 4, 5])}, r"RegimeData\.ts_init: row 2"),
        ({"label": np.array([0.0, 1.0, 2.0, 3.0, 0.0])}, r"RegimeData\.label: expected an integer column"),
        ({"model_version": pa.array(["a", None, "b", "c", "d"])}, r"RegimeData\.model_version: row 1: null"),
        ({"label": np.arange(4)}, r"RegimeData\.label: expected 5 rows, got 4"),
        ({"colour": np.arange(5)}, r"unknown columns \['colour'\]"),
    ],
)
def test_columnar_validation_names_field_and_first_bad_row(change: dict[str, Any], message: str) -> None:
    objs = [make(RegimeData, i) for i in range(5)]
    cols = {**_columns_of(objs), **change}
    with pytest.raises((ValueError, TypeError), match=message):
        RegimeData.columns_to_table(cols)


def test_missing_required_column_is_reported() -> None:
    cols = _columns_of([make(RegimeData, i) for i in range(3)])
    del cols["vector"], cols["uncertainty"]  # uncertainty has a default, vector does not
    with pytest.raises(ValueError, match=r"missing columns \['vector'\]"):
        RegimeData.columns_to_table(cols)


_SCALAR_FIELDS = [(cls, s) for cls in SAGE_DATA_TYPES for s in cls.FIELDS if s.kind in ("int", "float")]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=st.sampled_from(_SCALAR_FIELDS),
    value=st.one_of(
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([-2, -1, 0, 1, 2, 3, 4, 5, 6, 0.5, 1.0, -0.0]),
    ),
)
def test_scalar_and_columnar_validation_agree(case: tuple[type[SageData], Any], value: float) -> None:
    """Whatever the constructor accepts the column path accepts, and vice versa (same FieldSpec rules)."""
    cls, spec = case
    if spec.kind == "int" and isinstance(value, float):
        return  # floats for int fields are a type error on both paths; covered above
    try:
        make(cls, **{spec.name: value})
        scalar_ok = True
    except ValueError:
        scalar_ok = False
    cols = _columns_of([make(cls, 0)])
    cols[spec.name] = np.array([value], dtype=np.float64 if spec.kind == "float" else np.int64)
    try:
        cls.columns_to_table(cols)
        column_ok = True
    except ValueError:
        column_ok = False
    assert scalar_ok == column_ok, (
        f"{cls.__name__}.{spec.name}={value!r}: scalar {scalar_ok}, column {column_ok}"
    )


# -- message bus inside a real BacktestEngine -----------------------------------------------------------------

REGIME_TOPICS: list[tuple[str, dict[str, Any] | None]] = [
    ("plain", None),
    ("model_a", {"model": "a"}),
    ("model_b_5m", {"model": "b", "tf": "5m"}),
]


class Publisher(Actor):
    """On every bar publishes a RegimeData under three DataTypes, plus one record of each other type."""

    def __init__(self, bar_type: BarType) -> None:
        super().__init__(ActorConfig(component_id="PUBLISHER"))
        self.bar_type = bar_type
        self.sent: dict[str, list[SageData]] = {}

    def on_start(self) -> None:
        self.subscribe_bars(self.bar_type)

    def on_bar(self, bar: Bar) -> None:
        i = len(self.sent.get("plain", []))
        ts = self.clock.timestamp_ns()
        for name, metadata in REGIME_TOPICS:
            obj = make(RegimeData, i, ts_event=bar.ts_event, ts_init=ts, model_version=name)
            self.publish_data(DataType(RegimeData, metadata=metadata), obj)
            self.sent.setdefault(name, []).append(obj)
        for cls in (AgentSignal, RiskProposal, DecisionRecord):
            obj = make(cls, i, ts_event=bar.ts_event, ts_init=ts)
            self.publish_data(DataType(cls), obj)
            self.sent.setdefault(cls.__name__, []).append(obj)


class Listener(Actor):
    """Subscribes to one DataType (optionally by instrument) and records what arrives."""

    def __init__(self, name: str, data_type: DataType, by_instrument: bool = False) -> None:
        super().__init__(ActorConfig(component_id=f"LISTEN-{name}"))
        self.data_type = data_type
        self.by_instrument = by_instrument
        self.received: list[SageData] = []

    def on_start(self) -> None:
        self.subscribe_data(self.data_type, instrument_id=IID if self.by_instrument else None)

    def on_data(self, data: Any) -> None:
        self.received.append(data)


class RecordingStrategy(Strategy):
    def __init__(self) -> None:
        super().__init__(StrategyConfig(strategy_id="RECORDER-001"))
        self.received: dict[str, list[SageData]] = {}

    def on_start(self) -> None:
        for cls in (AgentSignal, RiskProposal, DecisionRecord):
            self.subscribe_data(DataType(cls))

    def on_data(self, data: Any) -> None:
        self.received.setdefault(type(data).__name__, []).append(data)


LISTENERS: dict[str, tuple[DataType, bool]] = {
    "any": (DataType(RegimeData), False),  # no metadata: every publisher of the type
    "model_a": (DataType(RegimeData, metadata={"model": "a"}), False),  # exact metadata
    "model_c": (DataType(RegimeData, metadata={"model": "c"}), False),  # nobody publishes it
    "model_wild": (DataType(RegimeData, metadata={"model": None}), False),  # None renders as '*'
    "reordered": (DataType(RegimeData, metadata={"tf": "5m", "model": "b"}), False),  # key order matters
    "by_instrument": (DataType(RegimeData), True),  # catalog-replay topic, not the publish_data topic
}


@pytest.fixture(scope="module")
def bus_run() -> tuple[Publisher, dict[str, Listener], RecordingStrategy]:
    instrument = TestInstrumentProvider.default_fx_ccy("EUR/USD")
    bar_type = BarType.from_str(f"{instrument.id}-1-MINUTE-LAST-EXTERNAL")
    bars = [
        Bar(
            bar_type,
            Price.from_str("1.10000"),
            Price.from_str("1.10020"),
            Price.from_str("1.09990"),
            Price.from_str("1.10010"),
            Quantity.from_int(1000),
            T0 + k * MINUTE,
            T0 + k * MINUTE,
        )
        for k in range(5)
    ]
    engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(bypass_logging=True)))
    try:
        engine.add_venue(
            Venue("SIM"),
            OmsType.NETTING,
            AccountType.MARGIN,
            [Money(1_000_000, USD)],
            default_leverage=Decimal(1),
        )
        engine.add_instrument(instrument)
        engine.add_data(bars)
        publisher = Publisher(bar_type)
        listeners = {name: Listener(name, dt, by_inst) for name, (dt, by_inst) in LISTENERS.items()}
        engine.add_actor(publisher)
        for listener in listeners.values():
            engine.add_actor(listener)
        strategy = RecordingStrategy()
        engine.add_strategy(strategy)
        engine.run()
    finally:
        engine.dispose()
    return publisher, listeners, strategy


def test_publish_subscribe_between_actor_and_strategy(bus_run: Any) -> None:
    publisher, _, strategy = bus_run
    for cls in (AgentSignal, RiskProposal, DecisionRecord):
        sent = publisher.sent[cls.__name__]
        assert len(sent) == 5
        # The bus hands over the very object: no copy, no serialisation in-process.
        assert all(g is s for g, s in zip(strategy.received[cls.__name__], sent, strict=True))


def test_metadata_is_part_of_the_topic(bus_run: Any) -> None:
    publisher, listeners, _ = bus_run
    sent = publisher.sent
    got = {name: listener.received for name, listener in listeners.items()}
    # No metadata subscribes to the pattern "data.RegimeData*": everything of the type, in publish order.
    assert got["any"] == [
        o for i in range(5) for o in (sent["plain"][i], sent["model_a"][i], sent["model_b_5m"][i])
    ]
    assert got["model_a"] == sent["model_a"]
    # A metadata mismatch delivers nothing and Nautilus does not warn.
    assert got["model_c"] == []
    # A None value renders as '*' in the topic and matches any value of that key (and the rest of the topic).
    assert got["model_wild"] == [o for i in range(5) for o in (sent["model_a"][i], sent["model_b_5m"][i])]
    # The topic is built in dict order: {"tf", "model"} is a different topic from {"model", "tf"}.
    assert got["reordered"] == []
    # subscribe_data(instrument_id=...) listens on data.RegimeData.<venue>.<symbol>, which publish_data
    # never uses (it is what the data engine uses when replaying catalog data without metadata).
    assert got["by_instrument"] == []


def test_publish_data_checks_the_data_type() -> None:
    engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(bypass_logging=True)))
    try:
        actor = Actor(ActorConfig(component_id="CHECK"))
        engine.add_actor(actor)
        with pytest.raises(TypeError):
            actor.publish_data(DataType(AgentSignal), make(RegimeData))
    finally:
        engine.dispose()
