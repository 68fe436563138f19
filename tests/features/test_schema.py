"""FeatureSchema: names/order, a hash that is stable across processes and sensitive to every parameter."""

from __future__ import annotations

import subprocess
import sys

import msgspec
import pytest

from sage.features import DEFAULT_SCHEMA, FeatureSchema, SchemaMismatchError
from sage.features.basic import BasicParams
from sage.features.fvg import FvgParams
from sage.features.mmd import MmdParams
from sage.features.relative import RelativeParams
from sage.features.schema import FAMILIES, StrategicParams, TacticalParams


def test_default_names_cover_every_family_in_order() -> None:
    names = DEFAULT_SCHEMA.names
    expected = []
    for family, module, _ in FAMILIES:
        cols = DEFAULT_SCHEMA.family_columns(family)
        assert len(cols) == len(module.columns(DEFAULT_SCHEMA.family_params(family)))
        expected.extend(cols)
    assert names == tuple(expected)
    assert len(set(names)) == len(names)
    assert len(DEFAULT_SCHEMA.family_columns("relative")) == 11
    assert DEFAULT_SCHEMA.family_columns("fvg")[0] == "fvg_bullish_active"
    assert DEFAULT_SCHEMA.family_columns("mmd") == ("mmd2_ref100", "mmd2_ref500")


def test_hash_is_stable_across_processes() -> None:
    code = "from sage.features import FeatureSchema; print(FeatureSchema().hash)"
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert other == DEFAULT_SCHEMA.hash == FeatureSchema().hash
    assert len(other) == 64 and int(other, 16) >= 0


def test_hash_ignores_spelling_but_not_content() -> None:
    explicit = FeatureSchema(columns=DEFAULT_SCHEMA.names)
    assert explicit.hash == DEFAULT_SCHEMA.hash  # same resolved names, same params
    variants = [
        FeatureSchema(basic=BasicParams(rsi_period=10)),
        FeatureSchema(basic=BasicParams(ewma_lambda=0.97)),
        FeatureSchema(relative=RelativeParams(z_window=30)),
        FeatureSchema(fvg=FvgParams(expiry_bars=40)),
        FeatureSchema(mmd=MmdParams(ref_windows=(100, 400))),
        FeatureSchema(tactical=TacticalParams(age_tau=5.0)),
        FeatureSchema(strategic=StrategicParams(vol_z_window=50)),
        FeatureSchema(columns=DEFAULT_SCHEMA.names[::-1]),
        FeatureSchema(columns=DEFAULT_SCHEMA.names[:-1]),
    ]
    hashes = {v.hash for v in variants}
    assert len(hashes) == len(variants) and DEFAULT_SCHEMA.hash not in hashes


def test_check_accepts_match_and_refuses_mismatch() -> None:
    DEFAULT_SCHEMA.check(FeatureSchema().hash)
    DEFAULT_SCHEMA.check(FeatureSchema())
    other = FeatureSchema(basic=BasicParams(atr_period=20))
    with pytest.raises(SchemaMismatchError, match="differs in: basic"):
        DEFAULT_SCHEMA.check(other)
    with pytest.raises(SchemaMismatchError, match="trained on different features"):
        DEFAULT_SCHEMA.check(other.hash)
    reordered = FeatureSchema(columns=DEFAULT_SCHEMA.names[::-1])
    with pytest.raises(SchemaMismatchError, match="names/order"):
        DEFAULT_SCHEMA.check(reordered)
    assert issubclass(SchemaMismatchError, ValueError)


def test_json_round_trip_preserves_hash() -> None:
    schema = FeatureSchema(basic=BasicParams(mom_fast=3), columns=("atr", "rsi", "fvg_age", "z_close"))
    text = schema.to_json()
    back = FeatureSchema.from_json(text)
    assert back == schema and back.hash == schema.hash
    assert back.names == ("atr", "rsi", "fvg_age", "z_close")


def test_invalid_schemas_raise() -> None:
    with pytest.raises(ValueError, match="unknown feature column"):
        FeatureSchema(columns=("atr", "nope"))
    with pytest.raises(ValueError, match="duplicates"):
        FeatureSchema(columns=("atr", "atr"))
    with pytest.raises(ValueError, match="must not be empty"):
        FeatureSchema(columns=())
    with pytest.raises(ValueError, match="window"):
        TacticalParams(window=0)
    with pytest.raises(ValueError, match="z_clip"):
        StrategicParams(z_clip=0.0)
    with pytest.raises(msgspec.ValidationError):
        FeatureSchema.from_json(b'{"basic": {"atr_period": 0}}')
