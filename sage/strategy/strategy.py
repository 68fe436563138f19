"""``SageStrategy``: regime-aware MARL signals, M-RMS sizing and algorithmic execution in one Strategy.

The strategy is a thin Nautilus shell around pure parts that are tested on their own:

* ``sage.features.MatrixStream``: the 60x7 tactical and 48x13 strategic matrices, bar by bar;
* ``sage.agents.AgentEnsemble``: the trained tactical (fvg, momentum, entry) and strategic (trend,
  mean_reversion) agents;
* ``sage.strategy.combiner.SageCombiner``: regime-adaptive, uncertainty-aware weights and consensus;
* ``sage.risk``: M-RMS (or its rule fallback) for size/stop/target, portfolio limits, the kill switch;
* ``sage.execution``: the algorithm selector and the TWAP/VWAP/Iceberg/Stealth/Immediate algorithms;
* ``sage.strategy.decision``: the ``DecisionRecord`` (with its explanation) of every decision.

Timing (no look-ahead): the strategy subscribes to the 1-minute bars and to the tactical (default 5 min)
and strategic (default 30 min) bars Nautilus aggregates from them. It decides when a tactical bar closes,
from data up to and including that bar and the latest ``RegimeData`` stamped *strictly before* that bar.
The strict rule makes runs independent of delivery order: a RegimeActor publishes a minute's regime
while the minute's bar is processed (before the aggregated bar), a catalog replay delivers it after the
bars of the same timestamp (it must: a custom-data point before the bars would let orders sent on the
previous bar reach the simulated venue before it has seen the new bar, i.e. fill at the old close). So
live regimes (config (a)) and precomputed ones (config (b)) give the same decisions and fills
(``tests/strategy/test_sage_end_to_end.py``). Orders go through the venue's latency model, so an entry
decided on a bar fills at a later bar (the same test checks every fill). Stops and targets are placed as
reduce-only orders once the entry has filled, sized to the position, so they work with every execution
algorithm (a sliced entry is protected as it fills).
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import numpy as np
from nautilus_trader.config import StrategyConfig
from nautilus_trader.core.data import Data
from nautilus_trader.indicators import AverageTrueRange
from nautilus_trader.model.data import Bar, BarType, DataType
from nautilus_trader.model.enums import OrderSide, TimeInForce, TriggerType
from nautilus_trader.model.events import OrderFilled, PositionChanged, PositionClosed, PositionOpened
from nautilus_trader.model.identifiers import ExecAlgorithmId, InstrumentId
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.model.orders import Order
from nautilus_trader.trading.strategy import Strategy

from sage.agents.observation import AGENTS, TACTICAL_AGENTS, account_features
from sage.data.bar_types import aggregated_bar_type, bar_minutes, standard_name
from sage.data.types import AgentSignal, DecisionRecord, RegimeData, RiskProposal
from sage.execution import ALGORITHM_IDS, IMMEDIATE_ID, flatten_position
from sage.execution.impact import TrailingMarketStats
from sage.execution.selector import AlgorithmSelector, SelectorConfig
from sage.features import FeatureStream, MatrixStream
from sage.models.registry import ModelLoadError
from sage.risk import (
    MRMS,
    AccountContext,
    KillSwitch,
    KillSwitchConfig,
    PortfolioRisk,
    PortfolioRiskConfig,
    RiskScaleConfig,
    RuleRiskModel,
    TradeContext,
    risk_scale,
)
from sage.strategy.combiner import CombinerConfig, SageCombiner, agent_arrays
from sage.strategy.decision import BarInfo, RegimeInfo, build_decision

_ENTRY_TAG = "SAGE_ENTRY"
_STOP_TAG = "SAGE_STOP"
_TARGET_TAG = "SAGE_TARGET"
_NS_PER_DAY = 86_400_000_000_000


class SageStrategyConfig(StrategyConfig, frozen=True, kw_only=True):
    """Configuration for :class:`SageStrategy`. Every field has a working default except the instrument
    and its 1-minute bars.

    Parameters
    ----------
    instrument_id : str
        The instrument traded, e.g. ``ESU3.XCME``.
    bar_type : str
        The 1-minute (or finest) bars the run is fed, e.g. ``ESU3.XCME-1-MINUTE-LAST-EXTERNAL``.
    tactical_bar_type : str, optional
        Bars the tactical agents run on and decisions are made on. Default: 5-minute bars aggregated
        internally from ``bar_type`` (``...-5-MINUTE-LAST-INTERNAL@1-MINUTE-EXTERNAL``).
    strategic_bar_type : str, optional
        Bars the strategic agents run on. Default: 30-minute bars aggregated from ``bar_type``. The
        empty string disables the strategic agents (their weight is then zero and records say so).
    agents : str, default "default"
        Agent ensemble name or checkpoint directory (``sage train agents``).
    risk_model : str, default "default"
        M-RMS checkpoint name or directory, or ``"rules"`` for the deterministic rule-based sizer.
    contract_size : str, default "1"
        Instrument units per M-RMS sizing unit (the sizer proposes 0-5 units).
    regime_metadata : dict[str, str], optional
        ``DataType`` metadata of the ``RegimeData`` to follow; none follows every publisher (records
        for other instruments are ignored).
    combiner : CombinerConfig, default CombinerConfig()
        The SAGE combiner's weights, multipliers and consensus threshold.
    portfolio : PortfolioRiskConfig, default PortfolioRiskConfig()
        Portfolio limits (per-trade risk, exposure, VaR, correlation shock).
    kill_switch : KillSwitchConfig, default KillSwitchConfig()
        Drawdown / daily-loss breach handling.
    risk_scale : RiskScaleConfig, default RiskScaleConfig()
        How much the regime fallback level and uncertainty shrink the M-RMS size.
    execution : str, default "auto"
        ``"auto"`` lets the algorithm selector choose among ``selector.algorithms``; otherwise the id of
        one registered exec algorithm (e.g. ``"TWAP"``) used for every entry.
    selector : SelectorConfig, default SelectorConfig()
        Cost model and candidates of the selector. Every candidate must be registered with the node.
    urgency : float, default 0.5
        Selector urgency in [0, 1] (1 = execute now).
    exit_on_reversal : bool, default True
        Close an open position when the combined signal passes consensus against it.
    attributions : str, default "actions"
        ``"all"`` decisions, ``"actions"`` (BUY/SELL/CLOSE only) or ``"none"``: when to compute the agents'
        gradient x input attributions (~0.1 ms per tactical agent, numba).
    top_attributions : int, default 3
        Attributions kept per agent.
    publish_signals : bool, default True
        Publish every ``AgentSignal`` and ``RiskProposal`` besides the ``DecisionRecord``.
    decision_metadata : dict[str, str], optional
        ``DataType`` metadata of the published sage records.
    """

    instrument_id: str
    bar_type: str
    tactical_bar_type: str | None = None
    strategic_bar_type: str | None = None
    agents: str = "default"
    risk_model: str = "default"
    contract_size: str = "1"
    regime_metadata: dict[str, str] | None = None
    combiner: CombinerConfig = CombinerConfig()
    portfolio: PortfolioRiskConfig = PortfolioRiskConfig()
    kill_switch: KillSwitchConfig = KillSwitchConfig()
    risk_scale: RiskScaleConfig = RiskScaleConfig()
    execution: str = "auto"
    selector: SelectorConfig = SelectorConfig()
    urgency: float = 0.5
    exit_on_reversal: bool = True
    attributions: str = "actions"
    top_attributions: int = 3
    publish_signals: bool = True
    decision_metadata: dict[str, str] | None = None


class SageStrategy(Strategy):
    """Decides on every tactical bar; see the module docstring for the flow."""

    def __init__(self, config: SageStrategyConfig) -> None:
        super().__init__(config)
        self.instrument_id = InstrumentId.from_str(config.instrument_id)
        self.base_bar_type = BarType.from_str(config.bar_type)
        self.tactical_bar_type = (
            BarType.from_str(config.tactical_bar_type)
            if config.tactical_bar_type
            else aggregated_bar_type(self.base_bar_type, 5)
        )
        if config.strategic_bar_type == "":
            self.strategic_bar_type: BarType | None = None
        elif config.strategic_bar_type:
            self.strategic_bar_type = BarType.from_str(config.strategic_bar_type)
        else:
            self.strategic_bar_type = aggregated_bar_type(self.base_bar_type, 30)
        if config.attributions not in ("all", "actions", "none"):
            raise ValueError(f"SageStrategyConfig.attributions must be all|actions|none, got {config.attributions!r}")
        if config.execution != "auto" and config.execution not in ALGORITHM_IDS:
            raise ValueError(f"SageStrategyConfig.execution must be 'auto' or one of {ALGORITHM_IDS}, got {config.execution!r}")
        self.contract_size = float(Decimal(config.contract_size))
        self.regime_data_type = DataType(RegimeData, metadata=config.regime_metadata or {})
        self.record_types = {
            cls: DataType(cls, metadata=config.decision_metadata or {}) for cls in (AgentSignal, RiskProposal, DecisionRecord)
        }
        self.combiner = SageCombiner(config.combiner)
        self.kill_switch = KillSwitch(config.kill_switch)
        self.portfolio_risk = PortfolioRisk(config.portfolio)
        self.selector = AlgorithmSelector(config.selector)
        self.atr = AverageTrueRange(14)
        self.instrument: Instrument | None = None
        self.ensemble: Any = None
        self.risk_model: Any = None
        self.decisions = 0
        self._tactical = MatrixStream("tactical")
        self._strategic = MatrixStream("strategic")
        self._features = FeatureStream()
        self._feature_index = {name: i for i, name in enumerate(self._features.schema.names)}
        self._market_stats: TrailingMarketStats | None = None
        self._strategic_outputs: list[Any] = []
        # Routes by bar name; one bar type may serve several roles (e.g. hourly bars as both the finest
        # and the tactical bars), handled in this order: market state, strategic agents, decision.
        roles = [(self.base_bar_type, "base"), (self.strategic_bar_type, "strategic"), (self.tactical_bar_type, "tactical")]
        self._routes: dict[str, tuple[str, ...]] = {}
        for bar_type, role in roles:
            if bar_type is not None:
                name = standard_name(bar_type)
                self._routes[name] = (*self._routes.get(name, ()), role)
        self.on_reset()

    # -- lifecycle ---------------------------------------------------------------------------------

    def on_start(self) -> None:
        import torch

        from sage.agents import AgentEnsemble

        # Batch-1 inference is latency-bound: torch's intra-op thread pool only contends with numba and
        # Nautilus for the cores (the agents' training graph is torch; inference and attributions are numba).
        torch.set_num_threads(1)

        self.instrument = self.cache.instrument(self.instrument_id)
        if self.instrument is None:
            self.log.error(f"instrument {self.instrument_id} not in the cache; stopping")
            self.stop()
            return
        self._open_position_ids = {
            p.id for p in self.cache.positions_open(instrument_id=self.instrument_id, strategy_id=self.id)
        }  # positions restored from a previous run (live restarts)
        self.ensemble = AgentEnsemble.load(self.config.agents)
        self.ensemble.check_schema(self._features.schema)
        if self.config.risk_model == "rules":
            self.risk_model = RuleRiskModel()
        else:
            try:
                self.risk_model = MRMS.load(self.config.risk_model)
            except ModelLoadError as exc:  # fail safe, visibly: the rule sizer has the same interface
                self.log.error(f"M-RMS {self.config.risk_model!r} unavailable, sizing with the rule fallback: {exc}")
                self.risk_model = RuleRiskModel()
        self._market_stats = TrailingMarketStats(
            bar_minutes=bar_minutes(self.base_bar_type), tick_size=float(self.instrument.price_increment)
        )
        self.register_indicator_for_bars(self.tactical_bar_type, self.atr)
        self.kill_switch.attach(self)
        self.subscribe_data(self.regime_data_type)
        # At equal timestamps Nautilus delivers aggregated bars in bar-type name order ("...-30-MINUTE" before
        # "...-5-MINUTE"), so with the defaults the 30-minute bar closing at 10:30 reaches the strategic agents
        # before the 5-minute bar of 10:30 is decided on. (An hourly strategic bar would arrive after it and
        # be used from the next decision on.)
        for bar_type in dict.fromkeys(b for b in (self.base_bar_type, self.strategic_bar_type, self.tactical_bar_type) if b):
            self.subscribe_bars(bar_type)
        self.log.info(
            f"SAGE on {self.instrument_id}: agents {self.ensemble.model_version}, risk "
            f"{self.risk_model.source}:{getattr(self.risk_model, 'model_version', 'rules')}, "
            f"tactical {self.tactical_bar_type}, strategic {self.strategic_bar_type}"
        )

    def on_stop(self) -> None:
        self.kill_switch.detach(self)
        self.cancel_all_orders(self.instrument_id)
        self.close_all_positions(self.instrument_id)

    def on_reset(self) -> None:
        self._tactical.reset()
        self._strategic.reset()
        self._features = FeatureStream(self._features.schema)
        self.atr.reset()
        self._strategic_outputs = []
        self._regime: RegimeData | None = None  # the latest received
        self._regime_before: RegimeData | None = None  # the one before it (an earlier timestamp)
        self._last_close: float | None = None
        self._bars_held = 0
        self._bracket: tuple[float, float] | None = None  # (stop, target) of the open position
        self._entry_pending = False
        self._entry_ids: set[Any] = set()  # entry primaries whose spawn group may still be working
        self._account: Any = None  # the venue account, once it exists
        self._open_position_ids: set[Any] = set()  # this strategy's open positions on the instrument
        self._flattening = False
        self._entry_risk = 0.0
        self._bars_since_exit = 1000

    def on_save(self) -> dict[str, bytes]:
        """Combiner weights, kill-switch and portfolio state survive a restart (Nautilus persists this)."""
        state = {"sage.combiner": self.combiner.to_state()}
        state.update(self.kill_switch.to_state())
        state.update(self.portfolio_risk.to_state())
        return state

    def on_load(self, state: dict[str, bytes]) -> None:
        if "sage.combiner" in state:
            self.combiner = SageCombiner.from_state(state["sage.combiner"], config=self.config.combiner)
        self.kill_switch.from_state(state)
        self.portfolio_risk.load_state(state)

    # -- data --------------------------------------------------------------------------------------

    def on_data(self, data: Data) -> None:
        if isinstance(data, RegimeData) and data.instrument_id == self.instrument_id:
            if self._regime is not None and data.ts_event > self._regime.ts_event:
                self._regime_before = self._regime
            self._regime = data

    def on_bar(self, bar: Bar) -> None:
        for role in self._routes.get(str(bar.bar_type), ()):
            if role == "base":
                self._on_base_bar(bar)
            elif role == "strategic":
                self._on_strategic_bar(bar)
            else:
                self._on_tactical_bar(bar)

    def on_event(self, event: Any) -> None:
        self.kill_switch.on_event(self, event)

    def _on_base_bar(self, bar: Bar) -> None:
        """Market stats for the selector, equity for the kill switch (every finest bar)."""
        assert self._market_stats is not None
        close = bar.close.as_double()
        self._market_stats.push(bar.ts_event, close, bar.volume.as_double())
        equity = self._equity(close)
        if equity is None or equity <= 0:
            return
        day = bar.ts_event // _NS_PER_DAY
        self.portfolio_risk.update_equity(equity, day=day)
        self.portfolio_risk.set_position(
            str(self.instrument_id), self._net_position(), close, float(self.instrument.multiplier)
        )
        if not self.kill_switch.active:
            reason = self.kill_switch.check(equity=equity, day=day)
            if reason is not None:
                self.kill_switch.engage(self, reason)

    def _on_strategic_bar(self, bar: Bar) -> None:
        matrix = self._strategic.update(bar)
        if self._strategic.ready and self.ensemble is not None:
            account = self._account_vector(bar.close.as_double())
            self._strategic_outputs = list(self.ensemble.act_strategic(matrix, account))
        else:
            self._strategic_outputs = []

    def _on_tactical_bar(self, bar: Bar) -> None:
        close = bar.close.as_double()
        matrix = self._tactical.update(bar)
        row = self._features.update(bar)
        if self._last_close is not None and self._last_close > 0:
            self.portfolio_risk.update_returns(str(self.instrument_id), math.log(close / self._last_close), ts=bar.ts_event)
        self._last_close = close
        if not self.portfolio.is_flat(self.instrument_id):
            self._bars_held += 1
        self._decide(bar, matrix, row)

    # -- the decision ------------------------------------------------------------------------------

    def _decide(self, bar: Bar, matrix: np.ndarray, row: np.ndarray) -> None:
        assert self.instrument is not None and self.ensemble is not None
        close = bar.close.as_double()
        atr = float(self.atr.value) if self.atr.initialized else math.nan
        ready = self._tactical.ready and self.atr.initialized and atr > 0
        regime = self._regime_info(bar)
        account = self._account_vector(close)
        outputs: list[Any] = []
        combined = None
        if ready:
            outputs = list(self.ensemble.act_tactical(matrix, account)) + self._strategic_outputs
            agents, directions, strengths, probabilities = agent_arrays(outputs)
            combined = self.combiner.step(
                close=close,
                risk_unit=atr / close,
                agents=agents,
                directions=directions,
                strengths=strengths,
                probabilities=probabilities,
                regime_label=regime.label,
                regime_probabilities=regime.probabilities,
                regime_level=regime.level,
                regime_uncertainty=regime.uncertainty,
            )
        else:
            self.combiner.skip(close)
        position = self._net_position()
        pending = self._entry_pending or self._flattening
        risk = check = execution = None
        if combined is not None and combined.passed and position == 0 and not pending and self.kill_switch.allows_entry():
            risk, check = self._size(1 if combined.signal > 0 else -1, close, atr, row, outputs, combined, regime)
            if check is not None and check.allowed and check.quantity > 0:
                execution = self._select_execution(risk.side, check.quantity)
        kwargs = {
            "instrument_id": str(self.instrument_id),
            "bar": BarInfo(str(bar.bar_type), bar.ts_event, close, atr),
            "regime": regime,
            "agents": outputs,
            "combined": combined,
            "position": position,
            "risk": risk,
            "portfolio": check,
            "kill_switch": {"active": self.kill_switch.active, "reason": self.kill_switch.reason or None},
            "execution": execution,
            "max_uncertainty": self.combiner.config.max_uncertainty,
            "ready": ready,
            "order_pending": pending,
            "exit_on_reversal": self.config.exit_on_reversal,
        }
        decision = build_decision(**kwargs)
        wants = self.config.attributions
        if outputs and (wants == "all" or (wants == "actions" and decision.action in ("BUY", "SELL", "CLOSE"))):
            decision = build_decision(**kwargs, attributions=self._attributions(outputs, matrix, account))
        if decision.action in ("BUY", "SELL"):
            self._enter(decision, risk, execution)
        elif decision.action == "CLOSE" and not self._flattening and not self.kill_switch.active:
            self._close_position()
        self._publish(bar, outputs, risk, decision)

    def _size(self, side: int, close: float, atr: float, row: np.ndarray, outputs: list[Any], combined: Any, regime: RegimeInfo):
        """M-RMS proposal, scaled for the regime estimate's quality, then limited by the portfolio."""
        assert self.instrument is not None
        f = self._feature(row)
        by_agent = {o.agent: o for o in outputs}
        vol = f("ewma_vol")
        momentum = f("mom_fast") / (vol * math.sqrt(5.0)) if vol > 0 else 0.0
        point_value = float(self.instrument.multiplier)
        uncertainty = regime.uncertainty if math.isfinite(regime.uncertainty) else 1.0
        trade = TradeContext(
            side=side,
            entry_price=close,
            atr=atr,
            tick_size=float(self.instrument.price_increment),
            point_value=point_value,
            contract_size=self.contract_size,
            agent_directions=tuple(int(by_agent[a].direction) if a in by_agent else 0 for a in AGENTS),
            agent_strengths=tuple(float(by_agent[a].strength) if a in by_agent else 0.0 for a in AGENTS),
            combined_signal=float(combined.signal),
            combined_uncertainty=min(1.0, float(combined.uncertainty)),
            regime_probabilities=tuple(float(p) for p in regime.probabilities),
            regime_level=regime.level,
            regime_uncertainty=min(1.0, max(0.0, uncertainty)),
            volatility=_finite(vol),
            fvg_state=(
                _finite(f("fvg_bullish_active")),
                _finite(f("fvg_bearish_active")),
                _finite(f("fvg_nearest_level")),
                _finite(f("fvg_mitigation_signal")),
            ),
            rsi=_finite(f("rsi"), 50.0),
            bb_pctb=_finite(f("bb_pctb"), 0.5),
            momentum=_finite(momentum),
            volume_ratio=_finite(f("vol_ratio"), 1.0),
        )
        equity = self._equity(close) or 0.0
        account = AccountContext(
            equity=max(equity, 1e-9),
            drawdown=self.portfolio_risk.drawdown,
            daily_pnl=self.portfolio_risk.daily_pnl,
            gross_exposure=self.portfolio_risk.gross_exposure / max(equity, 1e-9),
            bars_since_last_trade=min(self._bars_since_exit, 1000),
        )
        decision = self.risk_model.propose(trade, account)
        decision = decision.scaled(
            risk_scale(regime.level, uncertainty, self.config.risk_scale), point_value=point_value
        )
        if decision.units == 0:
            return decision, None
        check = self.portfolio_risk.check_entry(
            str(self.instrument_id),
            decision.quantity,
            decision.risk_amount,
            decision.quantity * close * point_value,
            equity,
            side=side,
            lot=float(self.instrument.size_increment),
        )
        return decision, check

    # -- orders ------------------------------------------------------------------------------------

    def _select_execution(self, side: int, quantity: float) -> dict[str, Any]:
        assert self.instrument is not None and self._market_stats is not None
        stats = self._market_stats.current
        if self.config.execution != "auto" or stats is None:
            algo = IMMEDIATE_ID if self.config.execution == "auto" else self.config.execution
            horizon = 0.0 if algo == IMMEDIATE_ID else self.selector.config.horizons_secs[0]
            params = self.selector.params_for(algo, horizon, quantity, stats) if stats is not None else {}
            return {"algorithm": algo, "params": params, "order_type": "MARKET", "limit_price": None}
        selection = self.selector.select(
            OrderSide.BUY if side > 0 else OrderSide.SELL,
            quantity,
            stats,
            urgency=self.config.urgency,
            tick_size=float(self.instrument.price_increment),
            size_increment=float(self.instrument.size_increment),
        )
        return {
            "algorithm": selection.algorithm_id,
            "params": selection.params,
            "order_type": selection.order_type,
            "limit_price": selection.limit_price,
            "expected_cost_bps": selection.expected_cost_bps,
        }

    def _enter(self, decision: Any, risk: Any, execution: dict[str, Any]) -> None:
        assert self.instrument is not None
        side = OrderSide.BUY if decision.side > 0 else OrderSide.SELL
        qty = self.instrument.make_qty(decision.quantity)
        algo = ExecAlgorithmId(execution["algorithm"])
        params = {k: str(v) for k, v in execution["params"].items()} or None
        if execution["order_type"] == "LIMIT" and execution["limit_price"] is not None:
            order: Order = self.order_factory.limit(
                instrument_id=self.instrument_id,
                order_side=side,
                quantity=qty,
                price=self.instrument.make_price(execution["limit_price"]),
                time_in_force=TimeInForce.GTC,
                exec_algorithm_id=algo,
                exec_algorithm_params=params,
                tags=[_ENTRY_TAG],
            )
        else:
            order = self.order_factory.market(
                instrument_id=self.instrument_id,
                order_side=side,
                quantity=qty,
                exec_algorithm_id=algo,
                exec_algorithm_params=params,
                tags=[_ENTRY_TAG],
            )
        self._bracket = (float(risk.stop_price), float(risk.target_price))
        self._entry_risk = float(risk.risk_amount)
        self._entry_pending = True
        self._entry_ids.add(order.client_order_id)
        self.submit_order(order)

    def _close_position(self) -> None:
        self._flattening = True

        def done(_flattener: Any) -> None:
            self._flattening = False

        flatten_position(self, self.instrument_id, on_done=done)

    def _sync_protection(self) -> None:
        """Keep one reduce-only stop and one reduce-only target sized to the open position."""
        assert self.instrument is not None
        position = self._net_position()
        working = [
            o
            for o in self.cache.orders_open(strategy_id=self.id, instrument_id=self.instrument_id)
            if o.tags and (_STOP_TAG in o.tags or _TARGET_TAG in o.tags)
        ]
        qty = abs(position)
        if qty == 0 or self._bracket is None or self.kill_switch.active or self._flattening:
            for order in working:
                self.cancel_order(order)
            return
        if len(working) == 2 and all(float(o.quantity) == qty for o in working):
            return
        for order in working:
            self.cancel_order(order)
        stop_px, target_px = self._bracket
        exit_side = OrderSide.SELL if position > 0 else OrderSide.BUY
        quantity = self.instrument.make_qty(qty)
        self.submit_order(
            self.order_factory.stop_market(
                instrument_id=self.instrument_id,
                order_side=exit_side,
                quantity=quantity,
                trigger_price=self.instrument.make_price(stop_px),
                trigger_type=TriggerType.DEFAULT,
                time_in_force=TimeInForce.GTC,
                reduce_only=True,
                tags=[_STOP_TAG],
            )
        )
        self.submit_order(
            self.order_factory.limit(
                instrument_id=self.instrument_id,
                order_side=exit_side,
                quantity=quantity,
                price=self.instrument.make_price(target_px),
                time_in_force=TimeInForce.GTC,
                reduce_only=True,
                tags=[_TARGET_TAG],
            )
        )

    def on_order_filled(self, event: OrderFilled) -> None:
        self._clear_pending_if_idle()

    def on_order_rejected(self, event: Any) -> None:
        order = self.cache.order(event.client_order_id)
        if order is not None and order.tags and _STOP_TAG in order.tags and self._net_position() != 0:
            # The stop was already through the market when it reached the venue (price moved past it while
            # the entry filled): the position must not stay unprotected, so close it now.
            self.log.warning(f"protective stop rejected ({event.reason}); closing the position")
            if not self._flattening:
                self._close_position()
        self._clear_pending_if_idle()

    def on_order_denied(self, event: Any) -> None:
        self.log.warning(f"order denied: {event.reason}")
        self._clear_pending_if_idle()

    def on_order_canceled(self, event: Any) -> None:
        self._clear_pending_if_idle()

    def on_order_expired(self, event: Any) -> None:
        self._clear_pending_if_idle()

    def on_position_opened(self, event: PositionOpened) -> None:
        if event.instrument_id == self.instrument_id:
            self._open_position_ids.add(event.position_id)
            self._bars_held = 0
            self._sync_protection()

    def on_position_changed(self, event: PositionChanged) -> None:
        if event.instrument_id == self.instrument_id:
            self._sync_protection()

    def on_position_closed(self, event: PositionClosed) -> None:
        if event.instrument_id != self.instrument_id:
            return
        self._open_position_ids.discard(event.position_id)
        if self._entry_risk > 0:
            self.portfolio_risk.record_trade(event.realized_pnl.as_double() / self._entry_risk)
        self._bars_held = 0
        self._bars_since_exit = 0
        self._bracket = None
        self._entry_risk = 0.0
        if not self._flattening and not self.kill_switch.active:
            self.cancel_all_orders(self.instrument_id)  # the other leg of the bracket, any entry remainder
        self._clear_pending_if_idle()

    def _clear_pending_if_idle(self) -> None:
        if self._entry_pending and not self._entry_working():
            self._entry_pending = False

    def _entry_working(self) -> bool:
        """Whether an entry primary or any slice its exec algorithm spawned is still open.

        Looks only at the entries this strategy sent (and their spawn groups, via the cache's index), not
        at every order of the run: a scan of all orders on each order event made long backtests quadratic.
        """
        for primary_id in tuple(self._entry_ids):
            primary = self.cache.order(primary_id)
            if primary is not None and not primary.is_closed:
                return True
            if any(not o.is_closed for o in self.cache.orders_for_exec_spawn(primary_id)):
                return True
            self._entry_ids.discard(primary_id)  # the whole group is closed: nothing can spawn from it again
        return False

    # -- state helpers -----------------------------------------------------------------------------

    def _feature(self, row: np.ndarray):
        index = self._feature_index

        def get(name: str) -> float:
            return float(row[index[name]])

        return get

    def _net_position(self) -> float:
        return float(self.portfolio.net_position(self.instrument_id))

    def _equity(self, price: float) -> float | None:
        """Account balance plus this strategy's open PnL marked at ``price`` (None before the account)."""
        assert self.instrument is not None
        account = self._account
        if account is None:  # looked up once: the venue's account object lives for the whole run
            account = self._account = self.portfolio.account(self.instrument_id.venue)
            if account is None:
                return None
        balance = account.balance_total(account.base_currency or self.instrument.quote_currency)
        equity = balance.as_double() if balance is not None else 0.0
        if self._open_position_ids:  # tracked from position events: a cache query per bar was the cost here
            mark = self.instrument.make_price(price)
            for position_id in self._open_position_ids:
                position = self.cache.position(position_id)
                if position is not None and position.is_open:
                    equity += position.unrealized_pnl(mark).as_double()
        return equity

    def _account_vector(self, close: float) -> np.ndarray:
        position = self._net_position()
        entry = close
        for p in self.cache.positions_open(instrument_id=self.instrument_id, strategy_id=self.id):
            entry = float(p.avg_px_open)
        atr = float(self.atr.value) if self.atr.initialized else 0.0
        max_qty = self.contract_size * 5
        return account_features(
            position=max(-1.0, min(1.0, position / max_qty)),
            entry_price=entry,
            close=close,
            atr=atr,
            drawdown=self.portfolio_risk.drawdown,
            bars_held=self._bars_held,
        )

    def _regime_info(self, bar: Bar) -> RegimeInfo:
        """The latest regime stamped strictly before ``bar`` (see the module docstring for why)."""
        regime = self._regime
        if regime is not None and regime.ts_event >= bar.ts_event:
            regime = self._regime_before
        if regime is None:
            # Nothing known yet: the fallback chain's own last resort, a uniform prior at level 5.
            return RegimeInfo(2, 5, (0.25, 0.25, 0.25, 0.25), math.nan, 0.0, bar.ts_event)
        return RegimeInfo.from_regime_data(regime)

    def _attributions(self, outputs: list[Any], tactical: np.ndarray, account: np.ndarray) -> list[dict[str, Any]]:
        assert self.ensemble is not None
        out: list[dict[str, Any]] = []
        for o in outputs:
            if o.agent not in TACTICAL_AGENTS:
                continue  # the strategic matrix of the last 30-minute bar is not kept; its agents were
            for a in self.ensemble.attributions(o.agent, tactical, account, top_k=self.config.top_attributions):
                out.append({"agent": o.agent, "feature": a.feature, "lag": int(a.lag), "score": float(a.score)})
        return out

    def _publish(self, bar: Bar, outputs: list[Any], risk: Any, decision: Any) -> None:
        ts = bar.ts_event
        if self.config.publish_signals:
            version = self.ensemble.model_version
            for o in outputs:
                self.publish_data(
                    self.record_types[AgentSignal],
                    o.to_signal(self.instrument_id, ts_event=ts, ts_init=ts, model_version=version),
                )
            if risk is not None:
                self.publish_data(self.record_types[RiskProposal], risk.to_proposal(self.instrument_id, ts_event=ts, ts_init=ts))
        self.decisions += 1
        self.publish_data(
            self.record_types[DecisionRecord],
            decision.to_record(
                self.instrument_id,
                decision_id=f"{self.id}-{self.decisions}",
                ts_event=ts,
                ts_init=ts,
                algorithm=(decision.details.get("execution") or {}).get("algorithm") or "",
            ),
        )
        if self._bars_since_exit < 1_000_000:
            self._bars_since_exit += 1


def _finite(x: float, default: float = 0.0) -> float:
    return x if math.isfinite(x) else default
