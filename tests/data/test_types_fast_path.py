"""The compiled fast field checks must agree with ``FieldSpec.coerce`` on every value they accept.

``_fast_converter`` may decline any value (the constructor then calls ``coerce``), but when it returns,
it must return exactly what ``coerce`` returns -- same value, same type -- and it must never accept a
value ``coerce`` rejects. Checked field by field for every sage record type over random values that mix
valid, boundary and invalid inputs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nautilus_trader.model.identifiers import InstrumentId

from sage.data.types import SAGE_DATA_TYPES, _fast_converter, _NotFast

SPECS = [(cls.__name__, spec) for cls in SAGE_DATA_TYPES for spec in cls._ALL]

floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 1e300, -1e300, math.nan, math.inf]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True).map(np.float64),
    st.floats(width=32, allow_nan=True).map(np.float32),
    st.integers(-(2**62), 2**62).map(np.int64),
    st.text(max_size=3),
    st.none(),
)


def _vectors(size: int):
    n = st.sampled_from([size, size, size, size - 1, size + 1])
    return st.one_of(
        n.flatmap(lambda k: st.lists(floats, min_size=k, max_size=k)),
        n.flatmap(lambda k: st.lists(st.floats(0.0, 1.0), min_size=k, max_size=k)).map(tuple),
        n.flatmap(lambda k: st.lists(st.floats(allow_nan=True), min_size=k, max_size=k)).map(np.array),
        n.flatmap(lambda k: st.lists(st.floats(0.0, 1.0), min_size=k, max_size=k)).map(
            lambda xs: np.array(xs, dtype=np.float32)
        ),
        st.text(max_size=5),
    )


strings = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["", "BUY", "HOLD", "mrms", "rule", "{}", '{"a": 1}', "[1, 2]", "{bad", "NaN", '{"x": NaN}']),
    st.integers(),
)


def _values_for(spec):
    if spec.kind == "float":
        return floats
    if spec.kind in ("int", "ts"):
        return st.one_of(
            st.integers(min_value=-(2**64), max_value=2**64),
            st.sampled_from(list(spec.choices or ()) + [0, 1, 5, -1, 2**63 - 1, 2**63]),
            st.booleans(),
            st.integers(-(2**62), 2**62).map(np.int64),
            st.floats(allow_nan=True),
            st.text(max_size=2),
        )
    if spec.kind == "vector":
        return _vectors(spec.size)
    if spec.kind == "instrument":
        return st.one_of(
            st.sampled_from([InstrumentId.from_str("ESU3.XCME"), "ESU3.XCME", "bad", "", 3]),
        )
    return strings


def _outcome(fn, value):
    try:
        return "ok", fn(value)
    except (TypeError, ValueError, OverflowError) as e:
        return "error", type(e)


@pytest.mark.parametrize(("owner", "spec"), SPECS, ids=[f"{o}.{s.name}" for o, s in SPECS])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_fast_check_agrees_with_coerce(owner, spec, data):
    fast = _fast_converter(spec)
    value = data.draw(_values_for(spec))
    try:
        got = fast(value)
    except _NotFast:
        return  # declined: the constructor falls back to coerce
    status, expected = _outcome(lambda v: spec.coerce(v, owner), value)
    assert status == "ok", f"fast path accepted {value!r}, which coerce rejects ({expected})"
    assert type(got) is type(expected)
    if isinstance(got, tuple):
        assert all(type(x) is float for x in got)
        assert np.array_equal(np.array(got), np.array(expected), equal_nan=True)
    elif isinstance(got, float):
        assert got == expected or (math.isnan(got) and math.isnan(expected))
    else:
        assert got == expected


def test_fast_path_taken_for_internal_values():
    """The values the package itself builds (Python floats/ints/tuples, InstrumentId) take the fast path."""
    from sage.data.types import RegimeData

    fast = {spec.name: f for spec, f in RegimeData._FAST}
    assert fast["confidence"](0.7) == 0.7
    assert fast["uncertainty"](math.nan) != fast["uncertainty"](math.nan)  # NaN allowed, returned as is
    assert fast["probabilities"]((0.1, 0.2, 0.3, 0.4)) == (0.1, 0.2, 0.3, 0.4)
    assert fast["ts_event"](1) == 1
    with pytest.raises(_NotFast):
        fast["confidence"](math.nan)  # not allowed: coerce raises the documented error
