"""Instrument definitions for the bundled sample data and for users' own ingested files.

Why explicit constructors instead of Nautilus's ``TestInstrumentProvider``: the test provider is meant
for Nautilus's own tests and its contract specs (venues, fees, expiries) are not guaranteed; a catalog a
user trades against must carry instrument specs that match the data (price precision = the data's tick
grid, a futures multiplier that makes PnL in dollars right).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import pandas as pd
from nautilus_trader.model.currencies import EUR, USD
from nautilus_trader.model.enums import AssetClass
from nautilus_trader.model.identifiers import InstrumentId, Symbol
from nautilus_trader.model.instruments import Cfd, CurrencyPair, Equity, FuturesContract, Instrument
from nautilus_trader.model.objects import Currency, Price, Quantity

InstrumentKind = Literal["equity", "future", "fx", "cfd"]
INSTRUMENT_KINDS: tuple[str, ...] = ("equity", "future", "fx", "cfd")


def _ns(iso: str) -> int:
    return pd.Timestamp(iso, tz="UTC").value


def es_future() -> FuturesContract:
    """E-mini S&P 500, September 2013 contract (ESU3), as traded in the ES sample file.

    Tick 0.25 index points, multiplier 50 USD per point (so one tick = 12.50 USD), whole contracts.
    Activation/expiry are the contract's listing (2012-09-21) and last trade (2013-09-20) dates.
    """
    return FuturesContract(
        instrument_id=InstrumentId.from_str("ESU3.XCME"),
        raw_symbol=Symbol("ESU3"),
        asset_class=AssetClass.INDEX,
        currency=USD,
        price_precision=2,
        price_increment=Price.from_str("0.25"),
        multiplier=Quantity.from_int(50),
        lot_size=Quantity.from_int(1),
        underlying="ES",
        activation_ns=_ns("2012-09-21 13:30"),
        expiration_ns=_ns("2013-09-20 13:30"),
        ts_event=0,
        ts_init=0,
        margin_init=Decimal("0.05"),
        margin_maint=Decimal("0.04"),
        maker_fee=Decimal(0),
        taker_fee=Decimal(0),
        exchange="XCME",
    )


def eurusd_fx() -> CurrencyPair:
    """EUR/USD spot at 5 decimals (pipettes), 1,000-unit lots, as in the EUR/USD sample bars."""
    return CurrencyPair(
        instrument_id=InstrumentId.from_str("EUR/USD.SIM"),
        raw_symbol=Symbol("EUR/USD"),
        base_currency=EUR,
        quote_currency=USD,
        price_precision=5,
        size_precision=0,
        price_increment=Price.from_str("0.00001"),
        size_increment=Quantity.from_int(1),
        lot_size=Quantity.from_int(1000),
        margin_init=Decimal("0.03"),
        margin_maint=Decimal("0.03"),
        maker_fee=Decimal("0.00002"),
        taker_fee=Decimal("0.00002"),
        ts_event=0,
        ts_init=0,
    )


def spx_cfd() -> Cfd:
    """S&P 500 index as a CFD (an index itself is not tradeable; a CFD on it is).

    Quoted to 0.01 index points, 1 USD per point, fractional size to 0.1 like retail index CFDs.
    """
    return Cfd(
        instrument_id=InstrumentId.from_str("SPX.SIM"),
        raw_symbol=Symbol("SPX"),
        asset_class=AssetClass.INDEX,
        quote_currency=USD,
        price_precision=2,
        size_precision=1,
        price_increment=Price.from_str("0.01"),
        size_increment=Quantity.from_str("0.1"),
        lot_size=Quantity.from_str("1.0"),
        margin_init=Decimal("0.05"),
        margin_maint=Decimal("0.05"),
        maker_fee=Decimal("0.0001"),
        taker_fee=Decimal("0.0001"),
        ts_event=0,
        ts_init=0,
    )


def goog_equity() -> Equity:
    """Alphabet (GOOG) common stock on NASDAQ, cents, whole shares."""
    return Equity(
        instrument_id=InstrumentId.from_str("GOOG.XNAS"),
        raw_symbol=Symbol("GOOG"),
        currency=USD,
        price_precision=2,
        price_increment=Price.from_str("0.01"),
        lot_size=Quantity.from_int(1),
        maker_fee=Decimal("0.0005"),
        taker_fee=Decimal("0.0005"),
        ts_event=0,
        ts_init=0,
    )


def generic_instrument(
    instrument_id: str,
    kind: InstrumentKind = "equity",
    price_precision: int = 2,
    size_precision: int = 0,
    tick_size: str | None = None,
    multiplier: int = 1,
    currency: str = "USD",
) -> Instrument:
    """Build an instrument for a user's own data file from a few explicit facts.

    ``tick_size`` defaults to one unit of the last price digit (``10**-price_precision``). ``fx``
    expects an id like ``GBP/USD.SIM`` (base/quote taken from the symbol). Raises ``ValueError``
    naming the bad argument rather than letting Nautilus fail deep inside a constructor.
    """
    if kind not in INSTRUMENT_KINDS:
        raise ValueError(f"instrument kind {kind!r} is not one of {INSTRUMENT_KINDS}")
    if not 0 <= price_precision <= 9:
        raise ValueError(f"price_precision must be in 0..9, got {price_precision}")
    if not 0 <= size_precision <= 9:
        raise ValueError(f"size_precision must be in 0..9, got {size_precision}")
    if multiplier < 1:
        raise ValueError(f"multiplier must be >= 1, got {multiplier}")
    try:
        iid = InstrumentId.from_str(instrument_id)
    except Exception as exc:  # Nautilus raises ValueError with a terse message
        raise ValueError(f"instrument id {instrument_id!r} is not SYMBOL.VENUE: {exc}") from exc
    tick = tick_size if tick_size is not None else format(Decimal(1).scaleb(-price_precision), "f")
    increment = Price.from_str(tick)
    if increment.precision != price_precision:
        raise ValueError(
            f"tick_size {tick!r} has {increment.precision} decimals but price_precision is {price_precision}"
        )
    ccy = Currency.from_str(currency)
    size_inc = Quantity.from_str(format(Decimal(1).scaleb(-size_precision), "f"))
    if kind == "equity":
        if size_precision != 0:
            raise ValueError("equities trade whole shares: size_precision must be 0")
        return Equity(
            instrument_id=iid,
            raw_symbol=iid.symbol,
            currency=ccy,
            price_precision=price_precision,
            price_increment=increment,
            lot_size=Quantity.from_int(1),
            ts_event=0,
            ts_init=0,
        )
    if kind == "future":
        return FuturesContract(
            instrument_id=iid,
            raw_symbol=iid.symbol,
            asset_class=AssetClass.INDEX,
            currency=ccy,
            price_precision=price_precision,
            price_increment=increment,
            multiplier=Quantity.from_int(multiplier),
            lot_size=Quantity.from_int(1),
            underlying=iid.symbol.value,
            activation_ns=0,
            expiration_ns=_ns("2100-01-01"),
            ts_event=0,
            ts_init=0,
        )
    if kind == "fx":
        symbol = iid.symbol.value
        if "/" not in symbol:
            raise ValueError(f"fx instrument id must look like BASE/QUOTE.VENUE, got {instrument_id!r}")
        base, quote = symbol.split("/", 1)
        return CurrencyPair(
            instrument_id=iid,
            raw_symbol=iid.symbol,
            base_currency=Currency.from_str(base),
            quote_currency=Currency.from_str(quote),
            price_precision=price_precision,
            size_precision=size_precision,
            price_increment=increment,
            size_increment=size_inc,
            ts_event=0,
            ts_init=0,
        )
    return Cfd(
        instrument_id=iid,
        raw_symbol=iid.symbol,
        asset_class=AssetClass.INDEX,
        quote_currency=ccy,
        price_precision=price_precision,
        size_precision=size_precision,
        price_increment=increment,
        size_increment=size_inc,
        ts_event=0,
        ts_init=0,
    )
