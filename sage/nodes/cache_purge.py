"""Bound what a long backtest keeps in Nautilus's ``Cache`` without losing any report row.

Why: a NautilusTrader 1.221 backtest keeps every order (with all its events), every position (a NETTING
position also accumulates one pickled snapshot per closed cycle) and every ``AccountState`` for the
whole run. Memory grows with the order count, and the simulated venue walks
``cache.orders_for_position(position.id)`` on every fill, so a NETTING backtest gets quadratically
slower. Nautilus purges only live (``LiveExecEngineConfig.purge_closed_*_interval_mins``).

:class:`CachePurger` is an ``Actor`` that does the same in a backtest, on a clock timer (simulated time),
and first *archives* what it purges: the exact inputs Nautilus's ``ReportProvider`` turns into report
rows (``Order.to_dict()`` + its fills' ``OrderFilled.to_dict()``, pickled ``Position`` objects as the
cache itself stores snapshots, ``AccountState.to_dict()``). Archives are spilled to a temp directory
(a pickle stream per kind), so they cost disk, not memory. :meth:`CachePurger.reports` then runs the
very ``ReportProvider`` functions ``Trader`` uses over archived + current objects, in the order ``Trader``
passes them, so the reports equal an un-purged run's (see ``docs/cache_purge.md`` for the guarantees).

Each pass, in this order (every rule below is a way the naive ``Cache.purge_*`` breaks a backtest):

a. closed orders, closed for >= ``buffer_mins``, with no linked order, child or exec-spawn sibling still
   open, and whose position index is consistent (``Cache.purge_order`` only cleans
   ``_index_position_orders`` when ``order.position_id`` is set; an order mapped to a position but
   without a ``position_id`` would leave a dangling id there and the venue's next
   ``orders_for_position`` raises ``KeyError``);
b. closed positions, closed for >= ``buffer_mins``, once no order of theirs is left in the cache (purging
   an order after its position raises ``KeyError``); the position's snapshots go with it, and orders
   that were only index-mapped to it (see a.) are purged right after it;
c. account events older than ``buffer_mins`` (Nautilus always keeps each account's latest one).
"""

from __future__ import annotations

import pickle
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from nautilus_trader.analysis.reporter import ReportProvider
from nautilus_trader.common.actor import Actor
from nautilus_trader.common.events import TimeEvent
from nautilus_trader.config import ActorConfig
from nautilus_trader.model.events import AccountState, OrderFilled
from nautilus_trader.model.identifiers import ClientOrderId, PositionId, Venue
from nautilus_trader.model.orders import Order
from nautilus_trader.model.position import Position

_NS_PER_MIN = 60_000_000_000


class CachePurgerConfig(ActorConfig, frozen=True, kw_only=True):
    """Configuration of :class:`CachePurger` (all times are simulated time in a backtest)."""

    interval_mins: int = 60
    """Minutes between purge passes (a clock timer). Shorter keeps less in the cache but costs a scan of
    the remaining closed orders/positions per pass."""
    buffer_mins: int = 240
    """Only objects closed (account events: stamped) at least this long ago are purged. Must exceed the
    longest time anything may still look at a closed order: sage's exec algorithms re-read their children
    until the parent ends (selector horizons reach 60 min; open spawn groups are never purged anyway) and
    ``Flattener`` waits on open orders only (no timeout in ``SageStrategy``). 4 h is 4x the longest horizon."""
    purge_orders: bool = True
    """Archive and purge closed orders (rule a)."""
    purge_positions: bool = True
    """Archive and purge closed positions with their snapshots (rule b)."""
    purge_account_events: bool = True
    """Archive and purge old ``AccountState`` events (rule c)."""
    spill_rows: int = 5_000
    """Archived records buffered in memory per kind before they are appended to the spill file."""
    spill_dir: str | None = None
    """Where the spill files go: a fresh temp directory inside this one (default: the system temp dir).
    It is removed when the actor is disposed."""

    def __post_init__(self) -> None:
        if self.interval_mins <= 0:
            raise ValueError(f"CachePurgerConfig.interval_mins must be > 0, got {self.interval_mins}")
        if self.buffer_mins < 0:
            raise ValueError(f"CachePurgerConfig.buffer_mins must be >= 0, got {self.buffer_mins}")
        if self.spill_rows <= 0:
            raise ValueError(f"CachePurgerConfig.spill_rows must be > 0, got {self.spill_rows}")


@dataclass
class PurgeCounts:
    """What the purger did so far (cumulative over passes)."""

    passes: int = 0
    orders: int = 0
    positions: int = 0
    snapshots: int = 0
    account_events: int = 0
    #: closed, old orders the last pass kept because purging them would corrupt a cache index
    orders_deferred: int = 0


class _Spill:
    """An append-only archive of picklable records: an in-memory buffer, flushed as one pickle per chunk
    to a file. Reading yields every record in append order (file first, then the buffer)."""

    def __init__(self, path: Path, flush_at: int) -> None:
        self.path = path
        self.flush_at = flush_at
        self.buffer: list[Any] = []
        self.count = 0

    def extend(self, records: Iterable[Any]) -> None:
        for record in records:
            self.buffer.append(record)
            self.count += 1
        if len(self.buffer) >= self.flush_at:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as f:
            pickle.dump(self.buffer, f, protocol=pickle.HIGHEST_PROTOCOL)
        self.buffer = []

    def __iter__(self) -> Iterator[Any]:
        if self.path.exists():
            with self.path.open("rb") as f:
                while True:
                    try:
                        chunk = pickle.load(f)  # our own file, written above
                    except EOFError:
                        break
                    yield from chunk
        yield from list(self.buffer)


class _ArchivedOrder:
    """What ``ReportProvider``'s order reports read from an ``Order``: ``to_dict()``, ``filled_qty`` and
    the ``OrderFilled`` events (rebuilt from their dicts on demand)."""

    __slots__ = ("_fills", "_row", "client_order_id", "filled_qty")

    def __init__(self, record: tuple[str, dict[str, Any], Any, list[dict[str, Any]]]) -> None:
        coid, self._row, self.filled_qty, self._fills = record
        self.client_order_id = ClientOrderId(coid)

    def to_dict(self) -> dict[str, Any]:
        return dict(self._row)

    @property
    def events(self) -> list[OrderFilled]:
        return [OrderFilled.from_dict(d) for d in self._fills]


class _SnapshotOf:
    """A purged closed cycle of a reused (NETTING) position id seen as the snapshot an un-purged cache would
    have taken of it when the id reopened: the same position under ``{id}-{uuid4}`` (``Position.id`` is
    read-only from Python, so this wraps rather than renames)."""

    __slots__ = ("_position", "id")

    def __init__(self, position: Position) -> None:
        self._position = position
        self.id = PositionId(f"{position.id.value}-{uuid.uuid4()}")

    def to_dict(self) -> dict[str, Any]:
        return {**self._position.to_dict(), "position_id": self.id.value}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._position, name)


class _ArchivedAccount:
    """An ``Account`` as ``ReportProvider.generate_account_report`` sees it: its ``events``."""

    def __init__(self, events: list[AccountState]) -> None:
        self.events = events


def _order_archive(order: Order) -> tuple[str, dict[str, Any], Any, list[dict[str, Any]]]:
    fills = [OrderFilled.to_dict(e) for e in order.events if isinstance(e, OrderFilled)]
    return (order.client_order_id.value, order.to_dict(), order.filled_qty, fills)


def _spawn_key(order: Order) -> ClientOrderId | None:
    """The exec-spawn group an order belongs to (a primary is the root of its own group)."""
    if order.exec_spawn_id is not None:
        return order.exec_spawn_id
    return order.client_order_id if order.exec_algorithm_id is not None else None


class CachePurger(Actor):
    """Purges closed orders, closed positions and old account events from the cache every
    ``interval_mins`` (see the module docstring for the rules), archiving their report rows first.

    After the run (before the engine is disposed) :meth:`reports` / ``generate_*_report`` return what
    ``Trader.generate_*_report`` would have returned without purging, and :meth:`backtest_result`
    recomputes the ``BacktestResult`` statistics over every position of the run.
    """

    def __init__(self, config: CachePurgerConfig | None = None) -> None:
        config = config or CachePurgerConfig()
        super().__init__(config)
        self._cfg = config
        self._timer = f"CachePurger-{uuid.uuid4().hex[:8]}"
        parent = None if config.spill_dir is None else Path(config.spill_dir)
        if parent is not None:
            parent.mkdir(parents=True, exist_ok=True)
        self._dir = Path(tempfile.mkdtemp(prefix="sage-cache-purge-", dir=parent))
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self._dir), True)
        self._new_archive()

    def _new_archive(self) -> None:
        run = uuid.uuid4().hex[:8]  # a fresh set of files per run (engine.reset() runs again)
        self.counts = PurgeCounts()
        self._orders = _Spill(self._dir / f"orders-{run}.pkl", self._cfg.spill_rows)
        #: (position id, [pickled snapshot], pickled position) per purged position, chronological
        self._positions = _Spill(self._dir / f"positions-{run}.pkl", max(1, self._cfg.spill_rows // 10))
        #: (account id, AccountState dict) per purged event, chronological per account
        self._account_events = _Spill(self._dir / f"account_events-{run}.pkl", self._cfg.spill_rows)
        #: closed orders that may go only with the position their id is indexed under (rule a)
        self._trapped: dict[ClientOrderId, PositionId] = {}

    # -- lifecycle ---------------------------------------------------------------------------------

    def on_start(self) -> None:
        self.clock.set_timer(
            self._timer,
            timedelta(minutes=self._cfg.interval_mins),
            callback=self._on_timer,
        )

    def on_stop(self) -> None:
        if self._timer in self.clock.timer_names:
            self.clock.cancel_timer(self._timer)

    def on_reset(self) -> None:
        for spill in (self._orders, self._positions, self._account_events):
            spill.path.unlink(missing_ok=True)
        self._new_archive()

    def on_dispose(self) -> None:
        self._cleanup()  # the archive goes with the engine: collect reports before disposing

    def _on_timer(self, event: TimeEvent) -> None:
        self.purge(event.ts_event)

    # -- the pass ----------------------------------------------------------------------------------

    def purge(self, ts_now: int | None = None) -> PurgeCounts:
        """One pass (orders, then positions, then account events); returns the cumulative counts."""
        now = self.clock.timestamp_ns() if ts_now is None else ts_now
        cutoff = now - self._cfg.buffer_mins * _NS_PER_MIN
        self.counts.passes += 1
        if cutoff < 0:
            return self.counts
        if self._cfg.purge_orders:
            self._purge_orders(cutoff)
        if self._cfg.purge_positions:
            self._purge_positions(cutoff)
        if self._cfg.purge_account_events:
            self._purge_account_events(now)
        return self.counts

    def _purge_orders(self, cutoff: int) -> None:
        """Rule a. Orders held back only by their position's index are remembered in ``_trapped`` and not
        re-examined until that position can go (rule b), so a pass costs O(orders that may go)."""
        cache = self.cache
        closed_ids = cache.client_order_ids_closed()
        # Everything not closed yet: open, in flight, emulated, or held (INITIALIZED) by an exec algorithm.
        live_ids = cache.client_order_ids() - closed_ids
        guard = self._guard(live_ids)
        position_members: dict[PositionId, set[ClientOrderId] | None] = {}
        batch: list[Order] = []
        deferred = 0
        for order in map(cache.order, closed_ids - self._trapped.keys()):
            if order is None or order.ts_closed > cutoff or guard(order):
                continue
            coid = order.client_order_id
            indexed = cache.position_id(coid)
            if order.position_id is not None:
                # purge_order discards coid from _index_position_orders[order.position_id], a key that exists
                # exactly while the position is cached (add_position creates it, purge_position pops it).
                if cache.position(order.position_id) is None or (
                    indexed is not None and indexed != order.position_id
                ):
                    deferred += 1
                    continue
            elif indexed is not None:
                if indexed not in position_members:
                    position_members[indexed] = self._members(indexed)
                group = position_members[indexed]
                if group is None:
                    continue
                if coid in group:  # purging now would leave coid dangling in _index_position_orders
                    self._trapped[coid] = indexed
                    continue
            batch.append(order)
        self._archive_and_purge_orders(batch)
        self.counts.orders_deferred = deferred + len(self._trapped)

    def _guard(self, live_ids: set[ClientOrderId]) -> Any:
        """A predicate: is a closed order still needed by an open one (linked, child, spawn group)?"""
        live = [o for o in map(self.cache.order, live_ids) if o is not None]
        busy_groups = {key for key in map(_spawn_key, live) if key is not None}
        busy_parents = {o.parent_order_id for o in live if o.parent_order_id is not None}

        def blocked(order: Order) -> bool:
            if order.client_order_id in busy_parents:
                return True
            if order.linked_order_ids and any(i in live_ids for i in order.linked_order_ids):
                return True
            key = _spawn_key(order)
            return key is not None and key in busy_groups

        return blocked

    def _members(self, position_id: PositionId) -> set[ClientOrderId] | None:
        """Client order ids in the position's order index (None: the index is already corrupt)."""
        try:
            return {o.client_order_id for o in self.cache.orders_for_position(position_id)}
        except KeyError as exc:  # a dangling id left by someone else: do not touch this position
            self.log.error(f"cache index of {position_id} is inconsistent ({exc!r}); not purging it")
            return None

    def _archive_and_purge_orders(self, orders: list[Order]) -> None:
        if not orders:
            return
        self._orders.extend(_order_archive(o) for o in orders)
        for order in orders:
            self.cache.purge_order(order.client_order_id)
            self._trapped.pop(order.client_order_id, None)
        self.counts.orders += len(orders)

    def _purge_positions(self, cutoff: int) -> None:
        """Rule b, then the orders that were trapped by each purged position's index."""
        cache = self.cache
        eligible = [p for p in cache.positions_closed() if p.ts_closed <= cutoff]
        if not eligible:
            return
        # A position may go only when no cached order refers to it any more: purge_order of an order whose
        # position is gone raises KeyError. (NETTING fills after a reopen are not in the position's index,
        # so orders_for_position alone does not see them.)
        referenced = {
            o.position_id
            for o in map(cache.order, cache.client_order_ids())
            if o is not None and o.position_id is not None
        }
        guard = self._guard(cache.client_order_ids() - cache.client_order_ids_closed())
        for position in eligible:
            pid = position.id
            if pid in referenced:
                continue
            members = self._members(pid)
            if members is None:
                continue
            held_back = [cache.order(i) for i in members if i in self._trapped and self._trapped[i] == pid]
            if len(held_back) != len(members) or any(o is None or guard(o) for o in held_back):
                continue  # orders of this position are still in the cache: purge them first (next pass)
            snapshots = list(cache.position_snapshot_bytes(pid))
            self._positions.extend([(pid.value, snapshots, pickle.dumps(position))])
            cache.purge_position(pid)
            self.counts.positions += 1
            self.counts.snapshots += len(snapshots)
            # Orders only index-mapped to the position: the index is gone with it, so they are safe now.
            self._archive_and_purge_orders(held_back)
            self.counts.orders_deferred -= len(held_back)

    def _purge_account_events(self, now: int) -> None:
        lookback_secs = self._cfg.buffer_mins * 60
        lookback_ns = lookback_secs * 1_000_000_000
        before: dict[Any, list[AccountState]] = {}
        for account in self.cache.accounts():
            events = account.events
            gone = [e.ts_event + lookback_ns <= now for e in events]
            if gone and all(gone):
                gone[-1] = False  # Nautilus keeps the latest event
            n_gone = sum(gone)
            if any(gone[n_gone:]):  # only a prefix can be archived in place
                self.log.warning(
                    f"{account.id}: account events out of time order; not purging them this pass"
                )
                return
            before[account.id] = events
        if not any(len(e) > 1 for e in before.values()):
            return
        self.cache.purge_account_events(now, lookback_secs)
        for account in self.cache.accounts():
            events = before.get(account.id, [])
            after = account.events
            n_gone = len(events) - len(after)
            if n_gone <= 0:
                continue
            if [e.id for e in events[n_gone:]] != [e.id for e in after]:
                raise RuntimeError(
                    f"{account.id}: Cache.purge_account_events removed events that are not a prefix"
                )
            self._account_events.extend((account.id.value, AccountState.to_dict(e)) for e in events[:n_gone])
            self.counts.account_events += n_gone

    # -- reports -----------------------------------------------------------------------------------

    def all_orders(self) -> list[Any]:
        """Archived (stand-ins) and cached orders, sorted by client order id as ``Cache.orders()`` is."""
        orders: list[Any] = [_ArchivedOrder(r) for r in self._orders]
        orders += self.cache.orders()
        orders.sort(key=lambda o: o.client_order_id.value)
        return orders

    def generate_orders_report(self) -> pd.DataFrame:
        """``Trader.generate_orders_report()`` of the whole run."""
        return ReportProvider.generate_orders_report(self.all_orders())

    def generate_order_fills_report(self) -> pd.DataFrame:
        """``Trader.generate_order_fills_report()`` of the whole run."""
        return ReportProvider.generate_order_fills_report(self.all_orders())

    def generate_fills_report(self) -> pd.DataFrame:
        """``Trader.generate_fills_report()`` of the whole run."""
        return ReportProvider.generate_fills_report(self.all_orders())

    def all_positions(self) -> tuple[list[Any], list[Any]]:
        """(positions, snapshots) of the whole run as an un-purged cache would hold them.

        A NETTING position id is reused: each closed cycle becomes a snapshot when the next opens. So of
        the cycles archived for an id, every one is a snapshot (id suffixed with a UUID, as
        ``Cache.snapshot_position`` does) except the last when the cache holds no position of that id.
        """
        cache = self.cache
        current = cache.positions()
        current_ids = {p.id.value for p in current}
        cycles: dict[str, list[Position]] = {}
        for pid, snapshot_bytes, position_bytes in self._positions:
            cycle = cycles.setdefault(pid, [])
            cycle.extend(pickle.loads(b) for b in snapshot_bytes)  # our own archive (cache snapshot bytes)
            cycle.append(pickle.loads(position_bytes))
        positions: list[Position] = []
        snapshots: list[Position] = []
        for pid, cycle in cycles.items():
            if pid not in current_ids:
                positions.append(cycle.pop())
            for p in cycle:  # an archived closed cycle of the id that was later reopened -> a snapshot
                snapshots.append(_SnapshotOf(p) if p.id.value == pid else p)
        positions += current
        positions.sort(key=lambda p: p.id.value)
        snapshots += cache.position_snapshots()
        return positions, snapshots

    def generate_positions_report(self) -> pd.DataFrame:
        """``Trader.generate_positions_report()`` of the whole run (snapshot ids carry a random UUID, as
        Nautilus's own do)."""
        positions, snapshots = self.all_positions()
        return ReportProvider.generate_positions_report(positions, snapshots)

    def account_events(self, venue: Venue) -> list[AccountState] | None:
        """Every ``AccountState`` of the venue's account, archived first (None: no account)."""
        account = self.cache.account_for_venue(venue)
        if account is None:
            return None
        key = account.id.value
        archived = [AccountState.from_dict(d) for aid, d in self._account_events if aid == key]
        return archived + account.events

    def generate_account_report(self, venue: Venue) -> pd.DataFrame:
        """``Trader.generate_account_report(venue)`` of the whole run."""
        events = self.account_events(venue)
        if events is None:
            return pd.DataFrame()
        return ReportProvider.generate_account_report(_ArchivedAccount(events))

    def reports(self, venues: Iterable[Venue] | None = None) -> dict[str, pd.DataFrame]:
        """Every report of the run: ``orders``, ``order_fills``, ``fills``, ``positions`` and
        ``account.<VENUE>`` per venue (default: every venue with an account in the cache)."""
        if venues is None:
            venues = [a.id.get_issuer() for a in self.cache.accounts()]
        orders = self.all_orders()  # read the archive once for the three order reports
        out = {
            "orders": ReportProvider.generate_orders_report(orders),
            "order_fills": ReportProvider.generate_order_fills_report(orders),
            "fills": ReportProvider.generate_fills_report(orders),
            "positions": self.generate_positions_report(),
        }
        for venue in venues:
            out[f"account.{venue}"] = self.generate_account_report(Venue(str(venue)))
        return out

    def backtest_result(self, engine: Any, run_analysis: bool = True) -> Any:
        """``engine.get_result()`` with totals and statistics over every order and position of the run.

        The engine computes them at the end of the run from what is left in the cache; this redoes
        its post-run analysis (``PortfolioAnalyzer.calculate_statistics`` per venue, positions +
        snapshots) over archived + cached positions.
        """
        positions, snapshots = self.all_positions()
        if run_analysis:
            analyzer = engine.portfolio.analyzer
            analyzer.reset()
            analyzer._positions.clear()  # reset() keeps it; only the general stats read it
            everything = positions + snapshots
            for venue in engine.list_venues():
                account = engine.cache.account_for_venue(venue)
                if account is None:
                    continue
                analyzer.calculate_statistics(
                    account, [p for p in everything if p.instrument_id.venue == venue]
                )
        result = engine.get_result()
        return replace(
            result,
            total_orders=self._orders.count + self.cache.orders_total_count(),
            total_positions=len(positions),
        )


def find_purger(actors: Iterable[Any]) -> CachePurger | None:
    """The first :class:`CachePurger` among ``actors`` (e.g. ``engine.trader.actors()``)."""
    return next((a for a in actors if isinstance(a, CachePurger)), None)
