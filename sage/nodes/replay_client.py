"""An offline venue for a real Nautilus ``TradingNode``: catalog replay in, sandbox fills out.

Paper trading without a network needs two clients a ``TradingNode`` can build from its config:

* :class:`ReplayDataClient`, a ``LiveMarketDataClient`` that streams bars from a ``ParquetDataCatalog``
  in (scaled) real time. Each bar is re-stamped to the live clock when it is emitted, because every
  live component (clock, timers, risk checks, the sandbox exchange, persistence) reasons in wall time;
  the original timestamps go to the DEBUG log and to :class:`ReplayStats`.
* :class:`PaperExecutionClient`, Nautilus's ``SandboxExecutionClient`` with two fixes it needs on
  bar-only data, built by a factory that must be called ``SandboxLiveExecClientFactory`` (the node
  builder hands the portfolio only to a factory of exactly that name).

Both are ordinary Nautilus clients: the node builder creates them from ``ImportableConfig`` entries
(``path`` / ``config`` / ``factory``) in a ``TradingNodeConfig``; see ``configs/live_paper.yaml`` and
``docs/live.md``.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from nautilus_trader.adapters.sandbox.config import SandboxExecutionClientConfig
from nautilus_trader.adapters.sandbox.execution import SandboxExecutionClient
from nautilus_trader.adapters.sandbox.factory import (
    SandboxLiveExecClientFactory as _NautilusSandboxFactory,
)
from nautilus_trader.cache.cache import Cache
from nautilus_trader.common.component import LiveClock, MessageBus
from nautilus_trader.common.providers import InstrumentProvider
from nautilus_trader.config import LiveDataClientConfig, RoutingConfig
from nautilus_trader.core.data import Data
from nautilus_trader.data.messages import (
    RequestBars,
    RequestInstrument,
    RequestInstruments,
    SubscribeBars,
    SubscribeInstrument,
    SubscribeInstruments,
    SubscribeQuoteTicks,
    SubscribeTradeTicks,
    UnsubscribeBars,
    UnsubscribeInstrument,
    UnsubscribeInstruments,
)
from nautilus_trader.execution.messages import (
    BatchCancelOrders,
    CancelAllOrders,
    CancelOrder,
    ModifyOrder,
    SubmitOrder,
    SubmitOrderList,
    TradingCommand,
)
from nautilus_trader.live.data_client import LiveMarketDataClient
from nautilus_trader.live.factories import LiveDataClientFactory
from nautilus_trader.model.data import (
    Bar,
    BarType,
    OrderBookDelta,
    OrderBookDeltas,
    OrderBookDepth10,
    QuoteTick,
    TradeTick,
)
from nautilus_trader.model.enums import BarAggregation
from nautilus_trader.model.identifiers import ClientId, InstrumentId
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.model.objects import Quantity
from nautilus_trader.persistence.catalog import ParquetDataCatalog
from nautilus_trader.portfolio.base import PortfolioFacade

__all__ = [
    "FEED_ENDED",
    "DerivedBarTypes",
    "FeedEnded",
    "PaperExecClientConfig",
    "PaperExecutionClient",
    "ReplayDataClient",
    "ReplayDataClientConfig",
    "ReplayLiveDataClientFactory",
    "ReplayStats",
    "SandboxLiveExecClientFactory",
    "TimeBarDeriver",
    "derivation_source",
    "interleave_derived",
    "is_max_speed",
    "venue_market_endpoint",
]

#: Message-bus priority of the paper exchange's bar handler: above strategies' default 0, so the
#: simulated market has moved to a bar before any strategy decides on it (the backtest engine's order).
EXCHANGE_HANDLER_PRIORITY = 10

_SHUTDOWN_TOPIC = "commands.system.shutdown"


# -- data: catalog replay ---------------------------------------------------------------------------


class ReplayDataClientConfig(LiveDataClientConfig, frozen=True, kw_only=True):
    """Configuration of a :class:`ReplayDataClient`.

    Parameters
    ----------
    bar_types : list[str]
        EXTERNAL bar types to replay (required, non-empty). Only those a component has subscribed to
        are emitted; all are merged into one stream ordered by ``ts_init`` (config order breaks ties).
    catalog_path : str, optional
        ``ParquetDataCatalog`` to replay. Default ``None``: ``sage live --catalog`` (or
        ``load_live_config(catalog=...)``) must supply it.
    speed : float or "max", default 60.0
        Data time per wall time: 60 plays one minute of data per second. ``0`` or ``"max"``: no
        waiting; each bar is emitted as soon as the previous one's consequences (strategy decisions,
        orders, fills) have been processed, which keeps runs deterministic and the loop responsive.
    max_wait_secs : float, optional
        Upper bound on the wall-clock wait between two bars (overnight / weekend gaps). Default
        ``None``: waits are exact.
    max_bars : int, optional
        Stop after emitting this many bars. Default ``None``: replay to the end of the data.
    start, end : str, optional
        ISO timestamps bounding the replayed data (catalog time, UTC). Default ``None``: all data.
    start_delay_secs : float, default 0.5
        Wait after the first subscription before the first bar, so that every strategy started in the
        same ``Trader.start()`` has subscribed before data flows.
    stop_node_on_end : bool, default True
        Ask the node to shut down (``ShutdownSystem``) after the last bar, so a replay run ends by
        itself. ``False`` keeps the node running, like a live feed that went quiet.
    derived_bar_types : list[str], optional
        Coarser EXTERNAL time-bar types the replay builds from the catalog's finer bars and emits as if
        the venue sent them, e.g. ``ESU3.XCME-5-MINUTE-LAST-EXTERNAL`` from the 1-minute bars. Each
        is built from the finest configured bar type of the same instrument and price type whose
        interval divides its own, exactly as Nautilus's internal time-bar aggregation does it in a
        backtest (see :class:`TimeBarDeriver`): a bar closing at T holds the source bars with close
        time in (T - interval, T], is stamped T and is emitted after every source bar of time T. Use
        them instead of ``...-INTERNAL@1-MINUTE-EXTERNAL`` types, which a live node aggregates on
        wall-clock timers and so cannot follow a replay faster than real time. Default ``None``.
    build_with_no_updates : bool, default True
        Emit a derived bar for an interval without source bars (OHLC = the last close, volume 0), as
        Nautilus's ``DataEngineConfig.time_bars_build_with_no_updates`` (default True) does.
    routing : RoutingConfig, default ``RoutingConfig(default=True)``
        The replay is the default data client, so subscriptions need no ``client_id``.
    """

    bar_types: list[str]
    catalog_path: str | None = None
    speed: float | str = 60.0
    max_wait_secs: float | None = None
    max_bars: int | None = None
    start: str | None = None
    end: str | None = None
    start_delay_secs: float = 0.5
    stop_node_on_end: bool = True
    derived_bar_types: list[str] | None = None
    build_with_no_updates: bool = True
    routing: RoutingConfig = RoutingConfig(default=True)

    def __post_init__(self) -> None:
        if not self.bar_types:
            raise ValueError("bar_types must list at least one bar type")
        for text in self.bar_types:
            try:
                bar_type = BarType.from_str(text)
            except ValueError as exc:
                raise ValueError(f"bar_types: {text!r} is not a bar type ({exc})") from None
            if not bar_type.is_externally_aggregated():
                raise ValueError(
                    f"bar_types: {text!r} must be an EXTERNAL bar type (the catalog holds the bars)"
                )
        if (self.speed != "max") if isinstance(self.speed, str) else (self.speed < 0):
            raise ValueError(f"speed must be a number >= 0 or 'max', was {self.speed!r}")
        if self.max_wait_secs is not None and self.max_wait_secs < 0:
            raise ValueError(f"max_wait_secs must be >= 0, was {self.max_wait_secs}")
        if self.max_bars is not None and self.max_bars < 1:
            raise ValueError(f"max_bars must be >= 1, was {self.max_bars}")
        if self.start_delay_secs < 0:
            raise ValueError(f"start_delay_secs must be >= 0, was {self.start_delay_secs}")
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None:
                try:
                    pd.Timestamp(value)
                except ValueError:
                    raise ValueError(f"{name}: {value!r} is not an ISO timestamp") from None
        sources = [BarType.from_str(s) for s in self.bar_types]
        for i, text in enumerate(self.derived_bar_types or []):
            try:
                bar_type = BarType.from_str(text)
            except ValueError as exc:
                raise ValueError(f"derived_bar_types[{i}]: {text!r} is not a bar type ({exc})") from None
            if text in self.bar_types:
                raise ValueError(
                    f"derived_bar_types[{i}]: {text} is also in bar_types (replayed from the catalog)"
                )
            try:
                derivation_source(bar_type, sources)
            except ValueError as exc:
                raise ValueError(f"derived_bar_types[{i}]: {exc}") from None


def is_max_speed(speed: float | str) -> bool:
    """True for the "as fast as possible" speeds (``0`` and ``"max"``)."""
    return isinstance(speed, str) or speed == 0


class FeedEnded:
    """Sent to a paper venue's endpoint when a replay has emitted its last bar."""

    def __repr__(self) -> str:
        return "FEED_ENDED"


#: The one :class:`FeedEnded` instance.
FEED_ENDED = FeedEnded()


def venue_market_endpoint(venue: Any) -> str:
    """Bus endpoint where a :class:`PaperExecutionClient` takes market data ahead of strategies."""
    return f"PaperVenue.{venue}.market"


@dataclass(frozen=True)
class DerivedBarTypes:
    """Sent to a paper venue's endpoint before a replay starts: bar types the replay builds itself.

    They reach every subscriber like venue bars, but are derived data (as Nautilus's INTERNAL bars in a
    backtest), so the simulated exchange must not trade on them a second time.
    """

    bar_types: frozenset[BarType]


# -- derived (coarser) time bars ------------------------------------------------------------------------

_TIME_UNIT_NS = {
    BarAggregation.SECOND: 1_000_000_000,
    BarAggregation.MINUTE: 60_000_000_000,
    BarAggregation.HOUR: 3_600_000_000_000,
    BarAggregation.DAY: 86_400_000_000_000,
}
_NS_PER_DAY = 86_400_000_000_000


def _interval_ns(bar_type: BarType) -> int | None:
    unit = _TIME_UNIT_NS.get(bar_type.spec.aggregation)
    return None if unit is None else unit * bar_type.spec.step


def derivation_source(target: BarType, sources: list[BarType]) -> BarType:
    """The bar type ``target`` is built from: the finest of ``sources`` with the same instrument and
    price type whose interval divides ``target``'s. Raises ``ValueError`` saying what is missing."""
    if not target.is_externally_aggregated():
        raise ValueError(f"{target} must be an EXTERNAL bar type (the replay emits it as venue data)")
    interval = _interval_ns(target)
    if interval is None:
        raise ValueError(f"{target} is not a SECOND/MINUTE/HOUR/DAY time bar type")
    candidates = []
    for source in sources:
        step = _interval_ns(source)
        if (
            source.instrument_id == target.instrument_id
            and source.spec.price_type == target.spec.price_type
            and step is not None
            and step < interval
            and interval % step == 0
        ):
            candidates.append((step, source))
    if not candidates:
        raise ValueError(
            f"no replayed bar type of {target.instrument_id} ({target.spec.price_type.name}) with an "
            f"interval dividing {target.spec} to build {target} from; add one to bar_types"
        )
    return min(candidates, key=lambda c: c[0])[1]


class TimeBarDeriver:
    """Builds coarser time bars from finer ones, bar for bar as Nautilus's ``TimeBarAggregator`` does in
    a backtest (nautilus_trader 1.221, ``DataEngineConfig`` defaults).

    What the backtest does, reproduced here without a clock (checked bar for bar against a
    ``BacktestEngine`` aggregating ``...-5-MINUTE-LAST-INTERNAL@1-MINUTE-EXTERNAL`` in
    ``tests/test_live_sage.py``):

    * the aggregation starts at the first data time ``t0``; interval boundaries are
      ``day_start(t0) + k * interval`` and the first bar closes at the first boundary after ``t0``;
    * the bar closing at boundary ``T`` holds every source bar with ``ts_init`` in (previous boundary,
      ``T``] (left-open): open of the first, max high, min low, close of the last, summed volume;
      it is stamped ``ts_event = ts_init = T``;
    * the engine fires a timer at ``T`` *after* all data of time ``T``, and timers before the next
      data time: so the bar at ``T`` is due once every source bar of time ``T`` is in (:meth:`due`
      with ``inclusive=True``), or just before the first source bar later than ``T``;
    * an interval without source bars still yields a bar (OHLC = last close, volume 0) unless
      ``build_with_no_updates`` is False.

    Streaming and causal: a bar closing at ``T`` depends only on source bars with ``ts_init <= T``.
    """

    def __init__(
        self,
        bar_type: BarType,
        source: BarType,
        *,
        size_precision: int,
        build_with_no_updates: bool = True,
    ) -> None:
        interval = _interval_ns(bar_type)
        if interval is None:
            raise ValueError(f"{bar_type} is not a SECOND/MINUTE/HOUR/DAY time bar type")
        self.bar_type = bar_type
        self.source = source
        self.interval_ns = interval
        self.build_with_no_updates = build_with_no_updates
        self._size_precision = size_precision
        self.next_close_ns: int | None = None  # None until start()
        self._open: Any = None
        self._high: Any = None
        self._low: Any = None
        self._close: Any = None
        self._last_close: Any = None
        self._volume_raw = 0
        self._count = 0
        self._ts_last = 0

    def start(self, t0: int) -> None:
        """Begin at data time ``t0`` (the backtest's first data time)."""
        day_start = t0 - t0 % _NS_PER_DAY
        origin = day_start + (t0 - day_start) // self.interval_ns * self.interval_ns
        self.next_close_ns = origin + self.interval_ns

    def update(self, bar: Bar) -> None:
        """Add a source bar (``BarBuilder.update_bar``: a bar older than the last one is ignored)."""
        if self.next_close_ns is None:
            self.start(bar.ts_init)
        if bar.ts_init < self._ts_last:
            return
        if self._open is None:
            self._open, self._high, self._low = bar.open, bar.high, bar.low
        else:
            self._high = max(self._high, bar.high)
            self._low = min(self._low, bar.low)
        self._close = bar.close
        self._volume_raw += bar.volume.raw
        self._count += 1
        self._ts_last = bar.ts_init

    def due(self, ts: int, *, inclusive: bool) -> list[Bar]:
        """Bars of every boundary before ``ts`` (or at ``ts`` too, when ``inclusive``), oldest first."""
        out: list[Bar] = []
        while self.next_close_ns is not None and (
            self.next_close_ns < ts or (inclusive and self.next_close_ns == ts)
        ):
            bar = self._build(self.next_close_ns)
            if bar is not None:
                out.append(bar)
            self.next_close_ns += self.interval_ns
        return out

    def _build(self, ts: int) -> Bar | None:
        if self._close is None and self._last_close is None:
            return None  # nothing seen yet (Nautilus defers to the next update; cannot happen from t0)
        if self._count == 0:
            if not self.build_with_no_updates:
                return None
            price = self._last_close
            open_, high, low, close = price, price, price, price
        else:
            open_, high, low, close = self._open, self._high, self._low, self._close
        bar = Bar(
            bar_type=self.bar_type,
            open=open_,
            high=high,
            low=low,
            close=close,
            volume=Quantity.from_raw(self._volume_raw, self._size_precision),
            ts_event=ts,
            ts_init=ts,
        )
        self._last_close = close
        self._open = self._high = self._low = None
        self._volume_raw = 0
        self._count = 0
        return bar


@dataclass(frozen=True)
class ReplayStats:
    """What a replay has emitted so far, with the original (catalog) time span it covered."""

    bars_loaded: int  #: bars read from the catalog for the configured bar types
    bars_emitted: int  #: bars sent to the data engine (re-stamped)
    bars_skipped: int  #: bars of configured types nobody had subscribed to when they came up
    first_original_ns: int | None  #: catalog ts_event of the first emitted bar
    last_original_ns: int | None  #: catalog ts_event of the last emitted bar
    first_live_ns: int | None  #: live ts_event given to the first emitted bar
    last_live_ns: int | None  #: live ts_event given to the last emitted bar
    finished: bool  #: the replay reached the end of the data or max_bars
    error: str | None  #: why the replay failed, if it did
    derived_emitted: int = 0  #: derived (coarser) bars emitted besides the catalog bars


class ReplayDataClient(LiveMarketDataClient):
    """Streams catalog bars into a live node, re-stamped to the live clock.

    Instruments are loaded from the catalog and sent to the data engine on connect, before any bar.
    Their ``ts_event``/``ts_init`` become the connect time, and a futures contract's activation and
    expiration are mapped onto the replay's time axis (``live = connect + (t - first bar) / speed``,
    speed 1 for "max"): the sandbox checks them against the live clock and would otherwise reject
    every order on a contract that expired years ago. Gaps capped by ``max_wait_secs`` and processing
    time only make live time lag that mapping, so a contract never expires early.

    The replay starts on the first bar subscription. When it ends (data exhausted or ``max_bars``) it
    logs a summary and, with ``stop_node_on_end``, publishes ``ShutdownSystem`` so ``node.run()``
    returns. A failure (missing catalog, no bars) is logged and also shuts the node down rather than
    leaving it waiting forever.
    """

    #: Yields to the loop after each bar when no idle probe is attached (see ``set_idle_probe``).
    FALLBACK_SETTLE_YIELDS = 16
    #: Upper bound on settle yields with a probe, so a permanently busy loop cannot stall the replay.
    MAX_SETTLE_YIELDS = 2_000

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        client_id: ClientId,
        msgbus: MessageBus,
        cache: Cache,
        clock: LiveClock,
        config: ReplayDataClientConfig,
    ) -> None:
        super().__init__(
            loop=loop,
            client_id=client_id,
            venue=None,  # multi-venue: routes by the default-client flag
            msgbus=msgbus,
            cache=cache,
            clock=clock,
            instrument_provider=InstrumentProvider(),
            config=config,
        )
        self._replay_config = config
        self._bar_types: list[BarType] = [BarType.from_str(s) for s in config.bar_types]
        self._derived_types: list[BarType] = [BarType.from_str(s) for s in config.derived_bar_types or []]
        self._derivers: list[TimeBarDeriver] = []
        self._derived_emitted = 0
        self._last_stamp: int | None = None
        self._bars: dict[BarType, list[Bar]] = {}
        self._instruments: dict[InstrumentId, Instrument] = {}
        self._subscribed: set[BarType] = set()
        self._replay_task: asyncio.Task | None = None
        self._idle_probe: Callable[[], bool] | None = None
        self._bars_loaded = 0
        self._emitted = 0
        self._skipped = 0
        self._first_original: int | None = None
        self._last_original: int | None = None
        self._first_live: int | None = None
        self._last_live: int | None = None
        self._finished = False
        self._error: str | None = None

    # -- public ------------------------------------------------------------------------------------

    def set_idle_probe(self, probe: Callable[[], bool]) -> None:
        """Install a check that the node has processed everything queued (engines' queues empty).

        Between bars the replay yields to the event loop until the probe holds on two consecutive
        yields, so each bar's consequences (decision, order, risk check, sandbox) are complete before
        the next bar: at ``speed: max`` that is what makes fills land on the bar after the decision.
        ``sage.nodes.live.build_node`` installs one built from the node's engines.
        """
        self._idle_probe = probe

    @property
    def stats(self) -> ReplayStats:
        """A snapshot of the replay's progress."""
        return ReplayStats(
            bars_loaded=self._bars_loaded,
            bars_emitted=self._emitted,
            bars_skipped=self._skipped,
            first_original_ns=self._first_original,
            last_original_ns=self._last_original,
            first_live_ns=self._first_live,
            last_live_ns=self._last_live,
            finished=self._finished,
            error=self._error,
            derived_emitted=self._derived_emitted,
        )

    # -- connection --------------------------------------------------------------------------------

    async def _connect(self) -> None:
        try:
            self._load()
        except Exception as exc:
            self._fail(f"cannot load the replay data: {exc}")
            raise
        for instrument in self._instruments.values():
            self._instrument_provider.add(instrument)
            self._handle_data(instrument)

    async def _disconnect(self) -> None:
        stats = self.stats
        self._log.info(
            f"Replay: {stats.bars_emitted} of {stats.bars_loaded} bars emitted "
            f"({stats.bars_skipped} unsubscribed skipped), finished={stats.finished}",
        )

    def _load(self) -> None:
        config = self._replay_config
        if not config.catalog_path:
            raise ValueError("catalog_path is empty")
        path = Path(config.catalog_path)
        if not path.is_dir():
            raise FileNotFoundError(f"catalog {path} does not exist")
        catalog = ParquetDataCatalog(str(path))
        start = _utc(config.start) if config.start else None
        end = _utc(config.end) if config.end else None
        for bar_type in self._bar_types:
            bars = catalog.bars(bar_types=[str(bar_type)], start=start, end=end)
            if not bars:
                raise ValueError(f"no {bar_type} bars in {path} between {start} and {end}")
            self._bars[bar_type] = bars
        self._bars_loaded = sum(len(b) for b in self._bars.values())
        wanted = {bt.instrument_id for bt in self._bar_types}
        found = {i.id: i for i in catalog.instruments(instrument_ids=[str(i) for i in wanted])}
        missing = sorted(str(i) for i in wanted - set(found))
        if missing:
            raise ValueError(f"instrument(s) {missing} not in catalog {path}")
        self._derivers = [
            TimeBarDeriver(
                bar_type,
                derivation_source(bar_type, self._bar_types),
                size_precision=found[bar_type.instrument_id].size_precision,
                build_with_no_updates=config.build_with_no_updates,
            )
            for bar_type in self._derived_types
        ]
        t0 = min(bars[0].ts_event for bars in self._bars.values())
        speed = 1.0 if is_max_speed(config.speed) else float(config.speed)
        now = self._clock.timestamp_ns()
        self._instruments = {iid: _to_live_instrument(inst, t0, now, speed) for iid, inst in found.items()}

    # -- subscriptions -----------------------------------------------------------------------------

    async def _subscribe_bars(self, command: SubscribeBars) -> None:
        bar_type = command.bar_type
        if bar_type not in self._bars and bar_type not in self._derived_types:
            self._log.error(
                f"{bar_type} is not replayed by this client (configured: "
                f"{[str(b) for b in (*self._bar_types, *self._derived_types)]})",
            )
            return
        self._subscribed.add(bar_type)
        if self._replay_task is None:
            self._replay_task = self.create_task(self._replay(), log_msg="catalog replay")

    async def _unsubscribe_bars(self, command: UnsubscribeBars) -> None:
        self._subscribed.discard(command.bar_type)

    async def _subscribe_instruments(self, command: SubscribeInstruments) -> None:
        pass  # every replayed instrument was sent on connect and never changes

    async def _subscribe_instrument(self, command: SubscribeInstrument) -> None:
        pass

    async def _unsubscribe_instruments(self, command: UnsubscribeInstruments) -> None:
        pass

    async def _unsubscribe_instrument(self, command: UnsubscribeInstrument) -> None:
        pass

    async def _subscribe_quote_ticks(self, command: SubscribeQuoteTicks) -> None:
        self._log.error(f"Quotes for {command.instrument_id} requested, but the replay serves bars only")

    async def _subscribe_trade_ticks(self, command: SubscribeTradeTicks) -> None:
        self._log.error(f"Trades for {command.instrument_id} requested, but the replay serves bars only")

    # -- requests ----------------------------------------------------------------------------------

    async def _request_instrument(self, request: RequestInstrument) -> None:
        instrument = self._instruments.get(request.instrument_id)
        if instrument is None:
            self._log.error(f"Instrument {request.instrument_id} is not in the replay")
            return
        self._handle_instrument(instrument, request.id, request.start, request.end, request.params)

    async def _request_instruments(self, request: RequestInstruments) -> None:
        instruments = [i for i in self._instruments.values() if i.id.venue == request.venue]
        self._handle_instruments(
            request.venue, instruments, request.id, request.start, request.end, request.params
        )

    async def _request_bars(self, request: RequestBars) -> None:
        """Answer with bars this replay has already emitted (live timestamps), like a venue's history.

        Catalog bars the replay has not reached yet are the future and are never returned.
        """
        bars = list(reversed(self._cache.bars(request.bar_type)))  # cache: newest first
        if request.start is not None:
            bars = [b for b in bars if b.ts_event >= pd.Timestamp(request.start).value]
        if request.end is not None:
            bars = [b for b in bars if b.ts_event <= pd.Timestamp(request.end).value]
        if request.limit:
            bars = bars[-request.limit :]
        self._handle_bars(request.bar_type, bars, request.id, request.start, request.end, request.params)

    # -- replay ------------------------------------------------------------------------------------

    def _stream(self) -> Iterator[Bar]:
        """All configured bars in ``ts_init`` order; ties keep the configured bar-type order."""
        keyed = (
            ((bar.ts_init, rank, i, bar) for i, bar in enumerate(self._bars[bar_type]))
            for rank, bar_type in enumerate(self._bar_types)
        )
        for *_, bar in heapq.merge(*keyed):
            yield bar

    async def _replay(self) -> None:
        config = self._replay_config
        max_speed = is_max_speed(config.speed)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.sleep(config.start_delay_secs)
            self._log.info(
                f"Replay starting: {self._bars_loaded} bars of {[str(b) for b in self._bar_types]}, "
                f"speed={config.speed}, max_bars={config.max_bars}",
            )
            # Paper venues registered on the bus see each bar before the data engine publishes it.
            venues = set(self._msgbus.endpoints())
            derived = frozenset(self._derived_types)
            for venue in {bt.instrument_id.venue for bt in self._derived_types}:
                if venue_market_endpoint(venue) in venues:
                    self._msgbus.send(venue_market_endpoint(venue), DerivedBarTypes(derived))
            pace = _Pacer(loop, None if max_speed else float(config.speed), config.max_wait_secs)

            def limit_reached() -> bool:
                return config.max_bars is not None and self._emitted >= config.max_bars

            for bar, is_derived in interleave_derived(self._stream(), self._derivers, stop=limit_reached):
                if bar.bar_type not in self._subscribed:
                    self._skipped += not is_derived
                    continue
                await self._settle()
                await pace.until(bar.ts_event)
                await self._emit(bar, venues, derived=is_derived)
            await self._settle()
            # Tell the paper venues no more prices are coming, so commands decided on the last bar
            # execute (at its close) and reach the portfolio before the shutdown stops strategies.
            for venue in {bt.instrument_id.venue for bt in self._bar_types}:
                endpoint = venue_market_endpoint(venue)
                if endpoint in venues:
                    self._msgbus.send(endpoint, FEED_ENDED)
            await self._settle()
            self._finished = True
            self._log.info(
                f"Replay finished: {self._emitted} bars emitted, original span "
                f"{_iso(self._first_original)} .. {_iso(self._last_original)}",
            )
            if config.stop_node_on_end:
                self.shutdown_system("catalog replay finished")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(f"replay failed: {exc!r}")
            raise

    async def _emit(self, bar: Bar, endpoints: set[str], *, derived: bool = False) -> None:
        """Re-stamp ``bar`` to now; show it to its paper venue first, then publish it.

        The venue-first step reproduces the backtest's order of events: the simulated exchange moves
        to the bar and fills what was waiting for it, the fills reach the portfolio (settle), and only
        then do strategies see the bar, knowing their positions. Derived bars skip the venue: in a
        backtest the exchange never sees internally aggregated bars either.

        Catalog bars get strictly increasing live stamps. A derived bar closing at the catalog time of
        the last catalog bar emitted shares that bar's live stamp, as in a backtest (and at a venue)
        the 5-minute bar closing at T carries the same timestamp as the 1-minute bar closing at T; so
        "stamped strictly before this bar" means the same thing live as in a backtest (SageStrategy
        picks its regime that way). A derived bar of an interval without a catalog bar at its close
        gets a fresh stamp.
        """
        if derived and self._last_original is not None and bar.ts_event == self._last_original:
            assert self._last_live is not None
            now = self._last_live
        else:
            now = self._clock.timestamp_ns()
            if self._last_stamp is not None and now <= self._last_stamp:
                now = self._last_stamp + 1  # strictly increasing, even within one clock tick
            self._last_stamp = now
        live = Bar(
            bar_type=bar.bar_type,
            open=bar.open,
            high=bar.high,
            low=bar.low,
            close=bar.close,
            volume=bar.volume,
            ts_event=now,
            ts_init=now,
            is_revision=bar.is_revision,
        )
        self._log.debug(f"Replay {bar.bar_type} original ts_event={_iso(bar.ts_event)} -> live {_iso(now)}")
        if derived:
            self._derived_emitted += 1
            self._handle_data(live)
            return
        if self._first_original is None:
            self._first_original, self._first_live = bar.ts_event, now
        self._last_original, self._last_live = bar.ts_event, now
        self._emitted += 1
        endpoint = venue_market_endpoint(bar.bar_type.instrument_id.venue)
        if endpoint in endpoints:
            self._msgbus.send(endpoint, live)
            await self._settle()
        self._handle_data(live)

    async def _settle(self) -> None:
        probe = self._idle_probe
        if probe is None:
            for _ in range(self.FALLBACK_SETTLE_YIELDS):
                await asyncio.sleep(0)
            return
        quiet = 0
        for _ in range(self.MAX_SETTLE_YIELDS):
            await asyncio.sleep(0)
            quiet = quiet + 1 if probe() else 0
            if quiet >= 2:
                return

    def _fail(self, message: str) -> None:
        self._error = message
        self._log.error(f"Replay: {message}; shutting the node down")
        self.shutdown_system(f"catalog replay: {message}")


def interleave_derived(
    stream: Iterable[Bar],
    derivers: list[TimeBarDeriver],
    stop: Callable[[], bool] = lambda: False,
) -> Iterator[tuple[Bar, bool]]:
    """``(bar, is_derived)`` in the order a backtest delivers the source bars and the bars its
    aggregators build from them (lazy, so causal: nothing is read ahead of the bar being yielded).

    Derivers all start at the first source bar's time, as a backtest's aggregators start at its first
    data time. Before each source bar come the derived bars of intervals that closed strictly earlier
    (the engine fires timers before data of a later time); after the last source bar (or when ``stop()``
    says so before the next one) come those closing at the last data time. Derived bars closing at the
    same time are ordered by bar-type name: the order a backtest's clock fires the aggregators' timers,
    which are named after their bar types (the 30-minute bar before the 5-minute bar, the 5-minute
    before the 60-minute). Every deriver is fed whether or not anyone subscribed to its bars.
    """

    def due(ts: int, inclusive: bool) -> list[Bar]:
        bars = [bar for deriver in derivers for bar in deriver.due(ts, inclusive=inclusive)]
        bars.sort(key=lambda b: (b.ts_init, str(b.bar_type)))
        return bars

    last_ts: int | None = None
    for bar in stream:
        if stop():
            break
        if last_ts is None:
            for deriver in derivers:
                deriver.start(bar.ts_init)
        for done in due(bar.ts_init, inclusive=False):
            yield done, True
        for deriver in derivers:
            if deriver.source == bar.bar_type:
                deriver.update(bar)
        last_ts = bar.ts_init
        yield bar, False
    if last_ts is not None:
        for done in due(last_ts, inclusive=True):
            yield done, True


class _Pacer:
    """Waits so that catalog time advances ``speed`` times faster than wall time (anchored, no drift);
    ``speed=None`` never waits. ``max_wait_secs`` caps each single wait (overnight gaps)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, speed: float | None, max_wait_secs: float | None):
        self._loop, self._speed, self._max_wait = loop, speed, max_wait_secs
        self._target = loop.time()
        self._previous: int | None = None

    async def until(self, ts: int) -> None:
        if self._speed is not None and self._previous is not None:
            wait = (ts - self._previous) / 1e9 / self._speed
            if self._max_wait is not None:
                wait = min(wait, self._max_wait)
            self._target += max(wait, 0.0)
            await asyncio.sleep(max(self._target - self._loop.time(), 0.0))
        self._previous = ts


def _to_live_instrument(instrument: Instrument, t0: int, now: int, speed: float) -> Instrument:
    """Re-stamp an instrument to the live clock (see :class:`ReplayDataClient`)."""
    cls = type(instrument)
    values = cls.to_dict(instrument)
    for key in ("activation_ns", "expiration_ns"):
        if values.get(key):  # 0 means "none"
            values[key] = max(now + int((values[key] - t0) / speed), 1)
    values["ts_event"] = values["ts_init"] = now
    return cls.from_dict(values)


def _utc(text: str) -> pd.Timestamp:
    """An ISO timestamp in UTC; a naive one is taken to be UTC already."""
    ts = pd.Timestamp(text)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _iso(ns: int | None) -> str:
    return "-" if ns is None else pd.Timestamp(ns, tz="UTC").isoformat()


class ReplayLiveDataClientFactory(LiveDataClientFactory):
    """Builds a :class:`ReplayDataClient`; the node config's client name becomes its ``ClientId``."""

    @staticmethod
    def create(  # type: ignore[override]
        loop: asyncio.AbstractEventLoop,
        name: str,
        config: ReplayDataClientConfig,
        msgbus: MessageBus,
        cache: Cache,
        clock: LiveClock,
    ) -> ReplayDataClient:
        return ReplayDataClient(
            loop=loop,
            client_id=ClientId(name),
            msgbus=msgbus,
            cache=cache,
            clock=clock,
            config=config,
        )


# -- execution: the sandbox, fixed for bars ---------------------------------------------------------


class PaperExecClientConfig(SandboxExecutionClientConfig, frozen=True, kw_only=True):
    """``SandboxExecutionClientConfig`` plus when commands reach the simulated exchange.

    Parameters
    ----------
    fill_on_next_bar : bool, default True
        Hold every command (submit, modify, cancel) until the next market update of its instrument,
        so a market order decided on bar t fills at bar t+1's close with ``ts_event`` = bar t+1's
        time: the demo backtest's convention (1 ms latency model), so paper and backtest results are
        comparable. Fed by a :class:`ReplayDataClient`, the fill is also processed before strategies
        see bar t+1, as in a backtest. ``False`` is the stock sandbox: commands execute on arrival
        against the last price, i.e. the decision bar's close (see ``docs/live.md``); use that with a
        real-time feed, where the next bar is a whole bar away.

    All other fields are Nautilus's ``SandboxExecutionClientConfig`` (venue, starting_balances, ...).
    """

    fill_on_next_bar: bool = True


class PaperExecutionClient(SandboxExecutionClient):
    """The Nautilus sandbox execution client, made to trade on bars.

    Changes to the stock client, each needed on bar data:

    * it also subscribes to ``data.bars.*.<VENUE>-*-EXTERNAL``: the stock client listens only to
      ``data.*.<VENUE>.*`` (quotes ``data.quotes.XCME.ESU3``, trades, book), which never matches a
      bar topic (``data.bars.ESU3.XCME-1-MINUTE-LAST-EXTERNAL``), so its exchange never saw a price.
      Only EXTERNAL bars are taken, as in a backtest: bars a strategy aggregates itself are derived
      data, not market data. The handler runs before strategies' (higher bus priority).
    * it registers the endpoint :func:`venue_market_endpoint`, where a replay client delivers each
      bar before publishing it (the same bar object then arriving on the topic is skipped), and
      announces the bar types it derives (:class:`DerivedBarTypes`), which the exchange ignores.
    * with ``fill_on_next_bar`` it holds commands until the next update of their instrument (see
      :class:`PaperExecClientConfig`); ``OrderSubmitted`` is still emitted on arrival, as a venue
      acknowledges before it fills. Once the node shuts down (``ShutdownSystem``, e.g. the replay
      ended) or the client disconnects, held commands are released against the last price, so a
      strategy's on_stop flattening still executes.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        portfolio: PortfolioFacade,
        msgbus: MessageBus,
        cache: Cache,
        clock: LiveClock,
        config: PaperExecClientConfig,
    ) -> None:
        super().__init__(
            loop=loop, portfolio=portfolio, msgbus=msgbus, cache=cache, clock=clock, config=config
        )
        self._hold_commands = config.fill_on_next_bar
        self._held: dict[InstrumentId, list[TradingCommand]] = {}
        self._bar_topic = f"data.bars.*.{self.venue}-*-EXTERNAL"
        self._endpoint = venue_market_endpoint(self.venue)
        self._seen_first: dict[BarType, Bar] = {}
        self._derived: frozenset[BarType] = frozenset()

    @property
    def held_commands(self) -> int:
        """Commands waiting for their instrument's next market update."""
        return sum(len(v) for v in self._held.values())

    def connect(self) -> None:
        super().connect()
        self._msgbus.subscribe(
            self._bar_topic, handler=self._on_bar_topic, priority=EXCHANGE_HANDLER_PRIORITY
        )
        self._msgbus.register(self._endpoint, self._on_venue_bar)
        self._msgbus.subscribe(_SHUTDOWN_TOPIC, handler=self._on_shutdown)

    def disconnect(self) -> None:
        self._release_all("disconnecting")
        self._msgbus.unsubscribe(self._bar_topic, handler=self._on_bar_topic)
        self._msgbus.deregister(self._endpoint, self._on_venue_bar)
        self._msgbus.unsubscribe(_SHUTDOWN_TOPIC, handler=self._on_shutdown)
        super().disconnect()

    # -- commands ----------------------------------------------------------------------------------

    def submit_order(self, command: SubmitOrder) -> None:
        if not self._hold_commands:
            return super().submit_order(command)
        self._client.generate_order_submitted(  # the inner backtest client holds the account id
            strategy_id=command.strategy_id,
            instrument_id=command.instrument_id,
            client_order_id=command.order.client_order_id,
            ts_event=self._clock.timestamp_ns(),
        )
        self._hold(command)

    def submit_order_list(self, command: SubmitOrderList) -> None:
        if not self._hold_commands:
            return super().submit_order_list(command)
        for order in command.order_list.orders:
            self._client.generate_order_submitted(
                strategy_id=order.strategy_id,
                instrument_id=order.instrument_id,
                client_order_id=order.client_order_id,
                ts_event=self._clock.timestamp_ns(),
            )
        self._hold(command)

    def modify_order(self, command: ModifyOrder) -> None:
        self._hold(command) if self._hold_commands else super().modify_order(command)

    def cancel_order(self, command: CancelOrder) -> None:
        self._hold(command) if self._hold_commands else super().cancel_order(command)

    def cancel_all_orders(self, command: CancelAllOrders) -> None:
        self._hold(command) if self._hold_commands else super().cancel_all_orders(command)

    def batch_cancel_orders(self, command: BatchCancelOrders) -> None:
        # The stock sandbox leaves this to LiveExecutionClient, which expects a coroutine it lacks.
        self._hold(command) if self._hold_commands else self.exchange.send(command)

    def _hold(self, command: TradingCommand) -> None:
        self._held.setdefault(command.instrument_id, []).append(command)

    # -- market data -------------------------------------------------------------------------------

    def _on_venue_bar(self, msg: Bar | FeedEnded | DerivedBarTypes) -> None:
        if isinstance(msg, FeedEnded):
            self._end_of_feed("the replay has ended")
            return
        if isinstance(msg, DerivedBarTypes):
            self._derived = self._derived | msg.bar_types
            return
        self._seen_first[msg.bar_type] = msg
        self.on_data(msg)

    def _on_bar_topic(self, bar: Bar) -> None:
        if bar.bar_type in self._derived:
            return  # built by the replay from bars this exchange has already traded on
        if self._seen_first.get(bar.bar_type) is not bar:  # not already delivered at the endpoint
            self.on_data(bar)

    def on_data(self, data: Data) -> None:
        super().on_data(data)  # moves the simulated market
        if not self._held:
            return
        if isinstance(data, Bar):
            self._release(data.bar_type.instrument_id)
        elif isinstance(data, _MARKET_DATA):
            self._release(data.instrument_id)

    def _release(self, instrument_id: InstrumentId) -> None:
        for command in self._held.pop(instrument_id, ()):
            self.exchange.send(command)

    def _release_all(self, why: str) -> None:
        if self._held:
            self._log.info(f"Releasing {self.held_commands} held command(s) at the last price ({why})")
        for instrument_id in list(self._held):
            self._release(instrument_id)

    def _on_shutdown(self, _command: Any) -> None:
        self._end_of_feed("the node is shutting down")

    def _end_of_feed(self, why: str) -> None:
        """No more market updates are coming: stop holding, execute what waits at the last price."""
        self._hold_commands = False
        self._release_all(why)


_MARKET_DATA = (QuoteTick, TradeTick, OrderBookDelta, OrderBookDeltas, OrderBookDepth10)


class SandboxLiveExecClientFactory(_NautilusSandboxFactory):
    """Builds a :class:`PaperExecutionClient`.

    The class name is load-bearing: ``TradingNodeBuilder.build_exec_clients`` passes the portfolio
    only when ``factory.__name__ == "SandboxLiveExecClientFactory"`` (Nautilus 1.221). A stock
    ``SandboxExecutionClientConfig`` is accepted and upgraded with the paper defaults.
    """

    @staticmethod
    def create(  # type: ignore[override]
        loop: asyncio.AbstractEventLoop,
        name: str,
        config: SandboxExecutionClientConfig,
        portfolio: PortfolioFacade,
        msgbus: MessageBus,
        cache: Cache,
        clock: LiveClock,
    ) -> PaperExecutionClient:
        if not isinstance(config, PaperExecClientConfig):
            config = PaperExecClientConfig(**{f: getattr(config, f) for f in config.__struct_fields__})
        return PaperExecutionClient(
            loop=loop,
            portfolio=portfolio,
            msgbus=msgbus,
            cache=cache,
            clock=clock,
            config=config,
        )
