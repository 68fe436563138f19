"""Bar-type helpers agree with Nautilus's own parser, including symbols that contain '-'."""

from __future__ import annotations

import pytest
from nautilus_trader.model.data import BarType

from sage.data.bar_types import aggregated_bar_type, bar_minutes, bar_source, instrument_of, standard_name


@pytest.mark.parametrize(
    ("text", "instrument", "minutes", "source"),
    [
        ("ESU3.XCME-1-MINUTE-LAST-EXTERNAL", "ESU3.XCME", 1.0, "1-MINUTE-EXTERNAL"),
        ("ES-FUT.XCME-1-MINUTE-LAST-EXTERNAL", "ES-FUT.XCME", 1.0, "1-MINUTE-EXTERNAL"),
        ("EUR/USD.SIM-1-HOUR-MID-EXTERNAL", "EUR/USD.SIM", 60.0, "1-HOUR-EXTERNAL"),
        ("SPX.XNAS-1-DAY-LAST-EXTERNAL", "SPX.XNAS", 1440.0, "1-DAY-EXTERNAL"),
        ("X.Y-30-SECOND-BID-INTERNAL", "X.Y", 0.5, "30-SECOND-INTERNAL"),
        ("ES.XCME-5-MINUTE-LAST-INTERNAL@1-MINUTE-EXTERNAL", "ES.XCME", 5.0, "5-MINUTE-INTERNAL"),
    ],
)
def test_parts(text: str, instrument: str, minutes: float, source: str) -> None:
    assert instrument_of(text) == instrument
    assert bar_minutes(text) == minutes
    assert bar_source(text) == source
    assert standard_name(text) == text.split("@", 1)[0]


def test_aggregated_bar_type_is_the_composite_nautilus_aggregates() -> None:
    base = BarType.from_str("ES-FUT.XCME-1-MINUTE-LAST-EXTERNAL")
    five = aggregated_bar_type(base, 5)
    assert str(five) == "ES-FUT.XCME-5-MINUTE-LAST-INTERNAL@1-MINUTE-EXTERNAL"
    assert five == BarType.from_str(str(five)) and five.is_composite()
    assert str(aggregated_bar_type(str(five), 30)) == "ES-FUT.XCME-30-MINUTE-LAST-INTERNAL@5-MINUTE-INTERNAL"


@pytest.mark.parametrize("bad", ["", "ESU3.XCME", "ESU3.XCME-1-MINUTE-LAST", "ESU3.XCME-x-MINUTE-LAST-EXTERNAL"])
def test_bad_bar_types_name_the_value(bad: str) -> None:
    with pytest.raises(ValueError, match="is not a bar type"):
        instrument_of(bad)


def test_bar_minutes_refuses_non_time_bars() -> None:
    with pytest.raises(ValueError, match="not a time bar"):
        bar_minutes("ESU3.XCME-100-TICK-LAST-EXTERNAL")
