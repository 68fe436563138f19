"""VWAP: slices follow an intraday volume profile, capped by a share of the volume actually traded.

Schedule. Slices are due at ``t_k = t0 + k * interval`` (``k < floor(horizon / interval)``). By the end of
slice ``k``'s interval the parent should have released the profile's share of the horizon,
``Q * F(t0, t_{k+1}) / F(t0, t0 + horizon)`` with ``F`` = :meth:`VolumeProfile.fraction_between` (the
last slice targets all of ``Q``). Each slice releases the gap between that target and what is already
filled or working, so quantity held back by the cap, or handed back by an IOC child, is caught up later.
If the profile has no volume at all inside the horizon the target falls back to linear in time (logged).

Participation cap. A slice may not exceed ``max_participation`` times the market volume traded in the
interval just before it (``[t_k - interval, t_k]``), read from the cache: trade ticks when the cache has
any for the instrument, otherwise the volume of the finest bar type it holds for it (bars stamped at
close, so a bar closing at ``t_k`` counts). The cap looks back because the volume of the coming interval
cannot be observed in time; when no market data at all is available yet it falls back to the profile's
expected volume (``mean_daily_volume`` x fraction of the interval), and releases nothing when that is
unknown too. What the cap holds back at the horizon follows ``at_horizon`` (``"complete"`` sweeps it
without a cap). The algorithm subscribes to the instrument's trade ticks itself so the cache has them in
live trading; in a backtest the data engine caches all replayed data anyway.

Profiles come from the config (``catalog_path`` + ``profile_bar_types``, loaded on start) or from
:meth:`VWAPExecAlgorithm.set_profile`. A primary for an instrument without a profile is denied unless
``flat_profile_fallback`` is set.

Params (``exec_algorithm_params``):

* ``horizon_secs`` (required, > 0), ``interval_secs`` (default 60, <= horizon).
* ``max_participation`` (default 0.1, in ``(0, 1]``).
* ``child_type``, ``limit_offset_ticks``, ``at_horizon``: as for TWAP.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from nautilus_trader.config import PositiveInt
from nautilus_trader.model.data import BarType
from nautilus_trader.model.identifiers import ExecAlgorithmId, InstrumentId
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.model.orders import Order

from sage.execution.algorithms.base import SageExecAlgorithm, SageExecAlgorithmConfig
from sage.execution.algorithms.params import (
    AT_HORIZON,
    CHILD_TYPE,
    LIMIT_OFFSET_TICKS,
    REQUIRED,
    Param,
    ParamError,
)
from sage.execution.algorithms.parent import Parent, floor_to_increment
from sage.execution.algorithms.twap import check_child_type
from sage.execution.volume_profile import VolumeProfile

VWAP_ID = "VWAP"

VWAP_PARAMS: tuple[Param, ...] = (
    Param("horizon_secs", "float", REQUIRED, "schedule length in seconds", minimum=0, exclusive_minimum=True),
    Param("interval_secs", "float", 60.0, "seconds between slices", minimum=0, exclusive_minimum=True),
    Param(
        "max_participation",
        "float",
        0.1,
        "largest slice as a share of the market volume of the previous interval",
        minimum=0,
        maximum=1,
        exclusive_minimum=True,
    ),
    CHILD_TYPE,
    LIMIT_OFFSET_TICKS,
    AT_HORIZON,
)


class VWAPConfig(SageExecAlgorithmConfig, frozen=True, kw_only=True):
    """
    Configuration for :class:`VWAPExecAlgorithm`.

    Parameters
    ----------
    exec_algorithm_id : ExecAlgorithmId, default "VWAP"
        The id strategies put on their primary orders.
    catalog_path : str, optional
        ``ParquetDataCatalog`` to estimate profiles from on start (with ``profile_bar_types``).
        Default none: profiles must be given with ``set_profile``.
    profile_bar_types : tuple[str, ...], default ()
        Bar types (one per instrument) whose volume defines each instrument's profile.
    profile_start : str, optional
        Only use history from this timestamp on (default: all of it).
    profile_end : str, optional
        Only use history up to this timestamp (default: all of it). Set it to the backtest start to
        keep the profile out of the future.
    bucket_minutes : PositiveInt, default 30
        Profile bucket width; must divide a day.
    profile_tz : str, default "UTC"
        Time zone of the profile's buckets (use the exchange's, e.g. "America/Chicago" for CME).
    flat_profile_fallback : bool, default False
        Execute instruments without a profile on a flat profile (time-weighted) instead of denying.
    max_rejections : PositiveInt, default 1
        See :class:`SageExecAlgorithmConfig`.
    at_horizon : {"complete", "cancel"}, default "complete"
        See :class:`SageExecAlgorithmConfig`.

    """

    exec_algorithm_id: ExecAlgorithmId | None = ExecAlgorithmId(VWAP_ID)
    catalog_path: str | None = None
    profile_bar_types: tuple[str, ...] = ()
    profile_start: str | None = None
    profile_end: str | None = None
    bucket_minutes: PositiveInt = 30
    profile_tz: str = "UTC"
    flat_profile_fallback: bool = False


@dataclass
class _Plan:
    profile: VolumeProfile
    n_slices: int
    interval_ns: int
    horizon_fraction: float
    next_index: int = 0
    capped_slices: int = 0


class VWAPExecAlgorithm(SageExecAlgorithm):
    """Profile-following slicing with a participation cap."""

    PARAMS = VWAP_PARAMS

    def __init__(
        self,
        config: VWAPConfig | None = None,
        profiles: Mapping[InstrumentId | str, VolumeProfile] | None = None,
    ) -> None:
        super().__init__(config or VWAPConfig())
        self._profiles: dict[InstrumentId, VolumeProfile] = {}
        self._subscribed: set[InstrumentId] = set()
        for instrument_id, profile in (profiles or {}).items():
            self.set_profile(instrument_id, profile)

    def set_profile(self, instrument_id: InstrumentId | str, profile: VolumeProfile) -> None:
        """Use ``profile`` for primaries on ``instrument_id`` (replaces a configured one)."""
        key = (
            instrument_id if isinstance(instrument_id, InstrumentId) else InstrumentId.from_str(instrument_id)
        )
        self._profiles[key] = profile

    def profile(self, instrument_id: InstrumentId) -> VolumeProfile | None:
        return self._profiles.get(instrument_id)

    def on_start(self) -> None:
        super().on_start()
        if self.config.profile_bar_types and self.config.catalog_path is None:
            self.log.error("profile_bar_types given without catalog_path; no profiles loaded")
            return
        for bar_type in self.config.profile_bar_types:
            instrument_id = BarType.from_str(bar_type).instrument_id
            if instrument_id in self._profiles:
                continue
            self._profiles[instrument_id] = VolumeProfile.from_catalog(
                self.config.catalog_path,
                bar_type,
                bucket_minutes=self.config.bucket_minutes,
                tz=self.config.profile_tz,
                start=self.config.profile_start,
                end=self.config.profile_end,
            )
            self.log.info(f"volume profile for {instrument_id} estimated from {bar_type}")

    def validate(self, order: Order, instrument: Instrument, params: dict[str, Any]) -> dict[str, Any]:
        if params["interval_secs"] > params["horizon_secs"]:
            raise ParamError(
                f"interval_secs ({params['interval_secs']}) must not exceed horizon_secs ({params['horizon_secs']})"
            )
        check_child_type(order, params)
        if order.instrument_id not in self._profiles and not self.config.flat_profile_fallback:
            raise ParamError(
                f"no volume profile for {order.instrument_id} (set VWAPConfig.catalog_path/profile_bar_types, "
                "call set_profile, or enable flat_profile_fallback)"
            )
        return params

    def start_parent(self, parent: Parent) -> None:
        instrument_id = parent.instrument.id
        profile = self._profiles.get(instrument_id)
        if profile is None:
            self.log.warning(f"{parent.primary_id}: no profile for {instrument_id}, using a flat one")
            profile = VolumeProfile.flat(self.config.bucket_minutes, self.config.profile_tz)
        if instrument_id not in self._subscribed:
            self.subscribe_trade_ticks(instrument_id)
            self._subscribed.add(instrument_id)
        horizon_fraction = profile.fraction_between(parent.ts_start, parent.ts_end)
        if horizon_fraction <= 0:
            self.log.warning(
                f"{parent.primary_id}: profile has no volume in the horizon; targets are linear in time"
            )
        parent.plan = _Plan(
            profile=profile,
            n_slices=max(1, int(parent.params["horizon_secs"] // parent.params["interval_secs"])),
            interval_ns=round(parent.params["interval_secs"] * 1e9),
            horizon_fraction=horizon_fraction,
        )
        self._slice(parent)

    def target_fraction(self, parent: Parent, until_ns: int) -> float:
        """Share of the parent that should be released by ``until_ns``."""
        plan: _Plan = parent.plan
        if until_ns >= parent.ts_end:
            return 1.0
        if plan.horizon_fraction <= 0:
            return (until_ns - parent.ts_start) / (parent.ts_end - parent.ts_start)
        return plan.profile.fraction_between(parent.ts_start, until_ns) / plan.horizon_fraction

    def observed_volume(self, instrument_id: InstrumentId, start_ns: int, end_ns: int) -> float | None:
        """Market volume in ``[start_ns, end_ns]`` from cached trades (preferred) or the finest cached bars.

        ``None`` when the cache holds no trades and no bars for the instrument at all. The cache keeps
        the newest first and a bounded history (``CacheConfig.tick_capacity``/``bar_capacity``,
        10,000 by default), plenty for one interval.
        """
        trades = self.cache.trade_ticks(instrument_id)
        if trades:
            return _sum_window(
                ((t.ts_event, t.size.as_double()) for t in trades), start_ns, end_ns, closed_start=True
            )
        bar_types = [
            bt for bt in self.cache.bar_types(instrument_id=instrument_id) if self.cache.bar(bt) is not None
        ]
        if not bar_types:
            return None
        finest = min(bar_types, key=lambda bt: bt.spec.timedelta)
        bars = self.cache.bars(finest)
        return _sum_window(
            ((b.ts_event, b.volume.as_double()) for b in bars), start_ns, end_ns, closed_start=False
        )

    def _slice(self, parent: Parent) -> None:
        plan: _Plan = parent.plan
        index = plan.next_index
        plan.next_index += 1
        if plan.next_index < plan.n_slices:
            self.schedule(parent, parent.ts_start + plan.next_index * plan.interval_ns, "slice", self._slice)
        now = self.clock.timestamp_ns()
        last = index == plan.n_slices - 1
        until = parent.ts_end if last else parent.ts_start + (index + 1) * plan.interval_ns
        remaining = self.unreleased(parent)
        released = parent.quantity - remaining
        target = parent.quantity * Decimal(repr(self.target_fraction(parent, until)))
        want = floor_to_increment(target - released + parent.increment / 2, parent.increment)
        if last:
            want = remaining
        if want <= 0:
            return
        volume = self.observed_volume(parent.instrument.id, now - plan.interval_ns, now)
        if volume is None:
            volume = plan.profile.expected_volume(now - plan.interval_ns, now)
        if math.isnan(volume):  # no market data and no volume level in the profile
            self.log.warning(
                f"{parent.primary_id}: no volume information yet, slice {index} releases nothing"
            )
            return
        cap = floor_to_increment(Decimal(repr(parent.params["max_participation"] * volume)), parent.increment)
        qty = min(want, cap)
        if qty < want:
            plan.capped_slices += 1
        if qty <= 0:
            return
        price = None
        if parent.params["child_type"] == "limit":
            price = self.marketable_price(parent, parent.params["limit_offset_ticks"])
            if price is None:
                self.log.warning(f"{parent.primary_id}: no reference price yet, slice {index} skipped")
                return
        self.release(parent, qty, price=price)


def _sum_window(items: Any, start_ns: int, end_ns: int, closed_start: bool) -> float:
    """Sum volumes of newest-first ``(ts, volume)`` items inside the window (stops at the first older one)."""
    total = 0.0
    for ts, volume in items:
        if ts > end_ns:
            continue
        if ts < start_ns or (ts == start_ns and not closed_start):
            break
        total += volume
    return total
