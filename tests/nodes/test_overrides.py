"""``--instrument`` / ``--bar-type`` rewrite every occurrence, refuse ambiguity, and the result runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sage.nodes.backtest import ConfigError, load_backtest_config, read_yaml_mapping
from sage.nodes.overrides import apply_overrides, configured_instruments

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs" / "demo.yaml"


def _es_only() -> dict:
    raw = read_yaml_mapping(DEMO, "mapping")
    raw["data"] = raw["data"][:1]
    raw["engine"]["strategies"] = raw["engine"]["strategies"][:1]
    raw["engine"]["actors"][0]["config"]["bar_type"] = "ESU3.XCME-5-MINUTE-LAST-INTERNAL@1-MINUTE-EXTERNAL"
    return raw


def test_instrument_override_rewrites_every_occurrence_and_renames_the_venue():
    raw = _es_only()
    out = apply_overrides(raw, instrument="AAPL.XNAS")
    text = repr(out)
    assert "ESU3" not in text and "XCME" not in text
    assert out["data"][0]["bar_types"] == ["AAPL.XNAS-1-MINUTE-LAST-EXTERNAL"]
    assert out["engine"]["strategies"][0]["config"]["instrument_id"] == "AAPL.XNAS"
    assert out["engine"]["actors"][0]["config"]["bar_type"] == "AAPL.XNAS-5-MINUTE-LAST-INTERNAL@1-MINUTE-EXTERNAL"
    assert [v["name"] for v in out["venues"]] == ["XNAS", "SIM"]
    assert raw["data"][0]["bar_types"] == ["ESU3.XCME-1-MINUTE-LAST-EXTERNAL"]  # input untouched


def test_bar_type_override_moves_composites_to_the_new_source():
    out = apply_overrides(_es_only(), bar_type="ESU3.XCME-5-MINUTE-LAST-EXTERNAL")
    assert out["data"][0]["bar_types"] == ["ESU3.XCME-5-MINUTE-LAST-EXTERNAL"]
    assert out["engine"]["actors"][0]["config"]["bar_type"] == "ESU3.XCME-5-MINUTE-LAST-INTERNAL@5-MINUTE-EXTERNAL"


def test_bar_type_on_another_instrument_implies_the_instrument():
    out = apply_overrides(_es_only(), bar_type="GOOG.XNAS-1-DAY-LAST-EXTERNAL")
    assert out["engine"]["strategies"][0]["config"]["instrument_id"] == "GOOG.XNAS"
    assert out["engine"]["strategies"][0]["config"]["bar_type"] == "GOOG.XNAS-1-DAY-LAST-EXTERNAL"


def test_ambiguous_overrides_are_refused_with_the_choices():
    raw = read_yaml_mapping(DEMO, "mapping")
    assert configured_instruments(raw) == ["ESU3.XCME", "EUR/USD.SIM"]
    with pytest.raises(ConfigError, match="loads 2 instruments"):
        apply_overrides(raw, instrument="AAPL.XNAS")
    with pytest.raises(ConfigError, match="is not loaded"):
        apply_overrides(raw, instrument="NQ.XCME=AAPL.XNAS")
    with pytest.raises(ConfigError, match="loads 2 bar types"):
        apply_overrides(raw, bar_type="AAPL.XNAS-1-MINUTE-LAST-EXTERNAL")
    with pytest.raises(ConfigError, match="not a bar type"):
        apply_overrides(raw, bar_type="ESU3.XCME-1-MINUTE-LAST-EXTERNAL=garbage")
    # OLD=NEW picks one of several
    out = apply_overrides(raw, instrument="EUR/USD.SIM=GBP/USD.SIM")
    assert out["data"][1]["bar_types"] == ["GBP/USD.SIM-1-HOUR-MID-EXTERNAL"]


def test_overridden_config_runs_on_the_users_instrument(sample_catalog):
    # The sample catalog has GOOG daily bars: the ES half of the demo runs on them unchanged otherwise.
    config = load_backtest_config(
        DEMO, catalog=sample_catalog, instrument="ESU3.XCME=GOOG.XNAS", bar_type="ESU3.XCME-1-MINUTE-LAST-EXTERNAL=GOOG.XNAS-1-DAY-LAST-EXTERNAL"
    )
    assert config.data[0].bar_types == ["GOOG.XNAS-1-DAY-LAST-EXTERNAL"]
    assert [v.name for v in config.venues] == ["XNAS", "SIM"]
