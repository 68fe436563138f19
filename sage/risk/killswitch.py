"""Kill switch: on a breach, cancel working orders, flatten, halt trading in Nautilus's risk engine, and
stay engaged until someone explicitly resets it.

Breach test (:meth:`KillSwitch.check`, pure arithmetic): drawdown from the equity peak >=
``max_drawdown``, today's loss >= ``max_daily_loss`` x day-start equity, or ``max_consecutive_losses``
losing trades in a row (0 = off).

Engaging (:meth:`KillSwitch.engage`, the Nautilus adapter):

1. the risk engine's trading state goes to ``REDUCING`` -- closing orders still pass, nothing may add
   exposure;
2. every working order of the strategy is cancelled (``cancel_all_orders``) and every open position of
   the strategy closed at market (``close_all_positions``);
3. with ``mode="HALTED"``, once the strategy holds no open position the state goes to ``HALTED``: the risk
   engine then denies *every* new order (``OrderDenied``, reason ``TradingState.HALTED``).
   Why not HALTED at once: HALTED denies closing orders too, and a live ``LiveRiskEngine`` processes
   commands from a queue, so a flatten order sent just before a synchronous switch to HALTED would be
   denied. REDUCING first, HALTED when flat, works the same in backtest and live.
   With ``mode="REDUCING"`` the state stays REDUCING (Nautilus then still allows an order that opens a
   position from flat, so the strategy must also honour :attr:`KillSwitch.active` -- it is the switch's
   own entry gate either way).

How a Strategy reaches the risk engine (nautilus_trader 1.221.0): a ``Strategy`` holds no reference to
the ``RiskEngine``, and there is no trading command that changes the trading state. The risk engine
subscribes its bound method ``_handle_event`` to ``events.order.*`` on the message bus at construction
(in ``BacktestEngine`` and ``TradingNode`` kernels alike, ``LiveRiskEngine`` included). So
:func:`find_risk_engine` scans ``strategy.msgbus.subscriptions("events.order.*")`` for a handler bound to a
``RiskEngine`` and calls its public ``set_trading_state``, which also publishes ``TradingStateChanged``
on ``events.risk``. If no risk engine is found the switch still cancels, flattens and blocks entries
itself, and logs an error saying Nautilus was not halted.

Trading state is trader-wide in Nautilus: halting it halts every strategy of the node (that is what a
kill switch is for). Reset: :meth:`reset` (e.g. from an operator command published on
:data:`RESET_TOPIC`, see :meth:`attach`), or ``KillSwitchConfig(reset_on_start=True)`` when a strategy
restarts with a saved engaged state. State survives restarts via :meth:`to_state` / :meth:`from_state`
(``Strategy.on_save`` / ``on_load``).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import msgspec

log = logging.getLogger("sage.risk.killswitch")

STATE_KEY = "sage.kill_switch"
RESET_TOPIC = "sage.risk.kill_switch.reset"
"""Message-bus topic: publish any string (who/why) here to reset every attached kill switch."""


class KillSwitchConfig(msgspec.Struct, frozen=True, kw_only=True):
    """When the kill switch fires and what it does."""

    max_drawdown: float = 0.10
    """Drawdown from the equity peak that engages the switch (default 10 %)."""
    max_daily_loss: float = 0.05
    """Loss since the day's start, as a fraction of day-start equity, that engages it (default 5 %)."""
    max_consecutive_losses: int = 0
    """Losing trades in a row that engage it (default 0 = off)."""
    mode: Literal["HALTED", "REDUCING"] = "HALTED"
    """Trading state once flat (default HALTED: Nautilus denies every new order)."""
    reset_on_start: bool = False
    """Clear a saved engaged state when the strategy starts (default False: stay engaged across restarts)."""

    def __post_init__(self) -> None:
        if not (0.0 < self.max_drawdown < 1.0 and 0.0 < self.max_daily_loss < 1.0):
            raise ValueError("max_drawdown and max_daily_loss must be in (0, 1)")
        if self.mode not in ("HALTED", "REDUCING"):
            raise ValueError(f"mode must be HALTED or REDUCING, got {self.mode!r}")
        if self.max_consecutive_losses < 0:
            raise ValueError("max_consecutive_losses must be >= 0")


class KillSwitchState(msgspec.Struct, kw_only=True):
    """What survives a restart."""

    active: bool = False
    reason: str = ""
    engaged_ts: int = 0
    engagements: int = 0
    peak_equity: float | None = None
    day: int | None = None
    day_start_equity: float | None = None
    halt_pending: bool = False
    history: list[str] = msgspec.field(default_factory=list)


def find_risk_engine(msgbus: Any):
    """The ``RiskEngine`` behind a message bus (see the module docstring), or None."""
    from nautilus_trader.risk.engine import RiskEngine

    for sub in msgbus.subscriptions("events.order.*"):
        owner = getattr(sub.handler, "__self__", None)
        if isinstance(owner, RiskEngine):
            return owner
    return None


class KillSwitch:
    """Drawdown / daily-loss kill switch with a Nautilus adapter (see the module docstring)."""

    def __init__(self, config: KillSwitchConfig | None = None) -> None:
        self.config = config or KillSwitchConfig()
        self.state = KillSwitchState()
        self._attached: Any = None

    # -- pure part --------------------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.state.active

    @property
    def reason(self) -> str:
        return self.state.reason

    def allows_entry(self) -> bool:
        """False while engaged: the strategy must not open or add to positions."""
        return not self.state.active

    def check(
        self, *, equity: float, daily_pnl: float | None = None, day: int | None = None, consecutive_losses: int = 0
    ) -> str | None:
        """Update the equity peak / day start and return the breach reason, or None.

        ``daily_pnl`` given explicitly wins; otherwise it is ``equity`` minus the equity at the first
        check of ``day`` (any int that changes at the day boundary, e.g. ``ts_ns // 86_400e9``).
        No side effects beyond this object's own bookkeeping.
        """
        s, c = self.state, self.config
        if not math.isfinite(equity):
            return "equity is not finite"
        if s.peak_equity is None or equity > s.peak_equity:
            s.peak_equity = float(equity)
        if day is not None and day != s.day:
            s.day, s.day_start_equity = day, float(equity)
        elif s.day_start_equity is None:
            s.day_start_equity = float(equity)
        drawdown = 1.0 - equity / s.peak_equity if s.peak_equity > 0 else 0.0
        if drawdown >= c.max_drawdown:
            return f"drawdown {drawdown:.2%} >= max_drawdown {c.max_drawdown:.2%}"
        pnl = equity - s.day_start_equity if daily_pnl is None else float(daily_pnl)
        if s.day_start_equity and -pnl >= c.max_daily_loss * s.day_start_equity:
            return f"daily loss {-pnl:,.2f} >= max_daily_loss {c.max_daily_loss:.2%} of {s.day_start_equity:,.2f}"
        if c.max_consecutive_losses and consecutive_losses >= c.max_consecutive_losses:
            return f"{consecutive_losses} consecutive losses >= {c.max_consecutive_losses}"
        return None

    # -- Nautilus adapter -----------------------------------------------------------------------------

    @staticmethod
    def _set_state(strategy: Any, name: str) -> bool:
        from nautilus_trader.model.enums import TradingState

        engine = find_risk_engine(strategy.msgbus)
        if engine is None:
            strategy.log.error(f"kill switch: no RiskEngine found on the message bus; trading state NOT set to {name}")
            return False
        target = getattr(TradingState, name)
        if engine.trading_state != target:
            engine.set_trading_state(target)
        return True

    def engage(self, strategy: Any, reason: str) -> None:
        """Cancel working orders, flatten, set the trading state, block entries (idempotent)."""
        s = self.state
        if s.active:
            return
        s.active = True
        s.reason = reason
        s.engaged_ts = int(strategy.clock.timestamp_ns())
        s.engagements += 1
        s.history.append(f"{s.engaged_ts} engaged: {reason}")
        strategy.log.error(f"KILL SWITCH ENGAGED: {reason}; cancelling orders, flattening, mode {self.config.mode}")
        log.error("kill switch engaged for %s: %s", strategy.id, reason)
        self._set_state(strategy, "REDUCING")
        self._flatten(strategy)
        s.halt_pending = self.config.mode == "HALTED"
        self.on_event(strategy)

    def _flatten(self, strategy: Any) -> None:
        cache = strategy.cache
        instruments = {o.instrument_id for o in cache.orders_open(strategy_id=strategy.id)}
        instruments |= {o.instrument_id for o in cache.orders_emulated(strategy_id=strategy.id)}
        for instrument_id in sorted(instruments, key=str):
            strategy.cancel_all_orders(instrument_id)
        for instrument_id in sorted({p.instrument_id for p in cache.positions_open(strategy_id=strategy.id)}, key=str):
            strategy.close_all_positions(instrument_id, reduce_only=True)

    def on_event(self, strategy: Any, event: Any = None) -> None:
        """Call from the strategy's ``on_event``: escalates to HALTED once flat (mode HALTED)."""
        s = self.state
        if not (s.active and s.halt_pending):
            return
        if strategy.cache.positions_open(strategy_id=strategy.id):
            return
        if self._set_state(strategy, "HALTED"):
            s.halt_pending = False
            strategy.log.error(f"kill switch: flat; trading state HALTED ({s.reason})")

    def reset(self, strategy: Any, by: str = "operator") -> None:
        """Re-enable trading (state ACTIVE) and entries; logged with who reset it."""
        s = self.state
        if not s.active:
            return
        ts = int(strategy.clock.timestamp_ns())
        s.history.append(f"{ts} reset by {by} (was: {s.reason})")
        strategy.log.warning(f"kill switch reset by {by}; was engaged for: {s.reason}")
        log.warning("kill switch reset for %s by %s", strategy.id, by)
        s.active, s.reason, s.halt_pending = False, "", False
        s.peak_equity = None  # a fresh peak: the drawdown that fired must not fire again at once
        s.day_start_equity = None
        self._set_state(strategy, "ACTIVE")

    def attach(self, strategy: Any) -> None:
        """Subscribe to :data:`RESET_TOPIC` and re-apply a restored state (call from ``on_start``)."""
        self._attached = strategy
        strategy.msgbus.subscribe(RESET_TOPIC, self._on_reset_message)
        if self.state.active:
            if self.config.reset_on_start:
                self.reset(strategy, by="config reset_on_start")
            else:
                strategy.log.error(f"kill switch restored ENGAGED: {self.state.reason}; re-applying")
                reason = self.state.reason
                self.state.active = False
                self.engage(strategy, f"restored: {reason}")

    def detach(self, strategy: Any) -> None:
        if strategy.msgbus.is_subscribed(RESET_TOPIC, self._on_reset_message):
            strategy.msgbus.unsubscribe(RESET_TOPIC, self._on_reset_message)
        self._attached = None

    def _on_reset_message(self, msg: Any) -> None:
        if self._attached is not None:
            self.reset(self._attached, by=str(msg))

    # -- persistence ----------------------------------------------------------------------------------

    def to_state(self) -> dict[str, bytes]:
        """For ``Strategy.on_save``."""
        return {STATE_KEY: msgspec.json.encode(self.state)}

    def from_state(self, state: dict[str, bytes]) -> None:
        """For ``Strategy.on_load``; a missing key leaves the switch as it is."""
        raw = state.get(STATE_KEY)
        if raw is not None:
            self.state = msgspec.json.decode(raw, type=KillSwitchState)
