"""Bar-type helpers built on Nautilus's own ``BarType`` parser (one place, no string splitting).

Why: strategy routing, aggregation and the CLI's ``--bar-type`` overrides all need parts of a bar type
(instrument, step, source); splitting strings by ``-`` breaks on symbols that contain ``-`` and drifts
from what Nautilus accepts. Every helper parses with ``BarType.from_str`` and raises ``ValueError``
naming the bad value.
"""

from __future__ import annotations

from nautilus_trader.model.data import BarSpecification, BarType
from nautilus_trader.model.enums import (
    AggregationSource,
    BarAggregation,
    aggregation_source_to_str,
    bar_aggregation_to_str,
)

__all__ = ["aggregated_bar_type", "bar_minutes", "bar_source", "instrument_of", "parse_bar_type", "standard_name"]


def parse_bar_type(value: str | BarType) -> BarType:
    """``value`` as a ``BarType`` (``ValueError`` with an example when Nautilus cannot parse it)."""
    if isinstance(value, BarType):
        return value
    try:
        return BarType.from_str(str(value))
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{value!r} is not a bar type (e.g. AAPL.XNAS-1-MINUTE-LAST-EXTERNAL): {exc}"
        ) from None


def instrument_of(value: str | BarType) -> str:
    """The instrument id of a bar type, e.g. ``ES-FUT.XCME`` of ``ES-FUT.XCME-1-MINUTE-LAST-EXTERNAL``."""
    return str(parse_bar_type(value).instrument_id)


def standard_name(value: str | BarType) -> str:
    """The name bars of this type carry: a composite type loses its ``@...`` source part."""
    return str(parse_bar_type(value).standard())


def bar_source(value: str | BarType) -> str:
    """``1-MINUTE-EXTERNAL`` of ``X-1-MINUTE-LAST-EXTERNAL``: how a composite bar type names its source."""
    bar_type = parse_bar_type(value).standard()
    spec = bar_type.spec
    return f"{spec.step}-{bar_aggregation_to_str(spec.aggregation)}-{aggregation_source_to_str(bar_type.aggregation_source)}"


def bar_minutes(value: str | BarType) -> float:
    """Length of a time bar in minutes (``ValueError`` for tick/volume/value bars)."""
    spec = parse_bar_type(value).spec
    if not spec.is_time_aggregated():
        raise ValueError(f"{value} is not a time bar type (SECOND/MINUTE/HOUR/DAY...)")
    return spec.timedelta.total_seconds() / 60.0


def aggregated_bar_type(base: str | BarType, minutes: int) -> BarType:
    """``minutes``-minute bars Nautilus aggregates internally from ``base`` (e.g. 1-minute EXTERNAL bars)."""
    source = parse_bar_type(base).standard()
    return BarType.new_composite(
        source.instrument_id,
        BarSpecification(int(minutes), BarAggregation.MINUTE, source.spec.price_type),
        AggregationSource.INTERNAL,
        source.spec.step,
        source.spec.aggregation,
        source.aggregation_source,
    )

