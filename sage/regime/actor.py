"""``RegimeActor``: a Nautilus Actor that turns bars into published ``RegimeData``.

It is a thin shell around :class:`~sage.regime.detector.DetectorStream` (the pure core): subscribe to
one bar type, feed each bar to the stream, publish the row as ``RegimeData``. ``sage regime
precompute`` runs the same detector in batch over a catalog and writes the same records, so a
``BacktestNode`` can replay them instead of running the actor (``tests/regime/test_actor_parity.py``).

Bar type: any Nautilus bar type, including internally aggregated ones such as
``ESU3.XCME-30-MINUTE-LAST-INTERNAL@1-MINUTE-EXTERNAL`` (30-minute regimes from the catalog's 1-minute
bars; Nautilus does the aggregation).

Failure policy: the actor never stops publishing. A model that cannot be loaded (missing, corrupt,
foreign, trained on other features) is logged as an error and the actor runs the rules-only detector,
whose records say so (``fallback_level`` >= 3, ``model_version="rules"``). Per-bar failures are the
fallback chain's job.
"""

from __future__ import annotations

import math

import msgspec
import numpy as np
from nautilus_trader.common.actor import Actor
from nautilus_trader.common.component import LiveClock
from nautilus_trader.config import ActorConfig
from nautilus_trader.core.data import Data
from nautilus_trader.model.data import Bar, BarType, DataType

from sage.data.regimes import Regime
from sage.data.types import RegimeData
from sage.models.registry import ModelLoadError
from sage.regime.detector import RULES_ONLY, DetectorConfig, DetectorStream, RegimeDetector, load_detector


class RegimeActorConfig(ActorConfig, frozen=True):
    """Configuration for :class:`RegimeActor`.

    Parameters
    ----------
    bar_type : str
        The bars regimes are computed on (e.g. ``ESU3.XCME-1-MINUTE-LAST-EXTERNAL``, or an INTERNAL
        aggregation of them). One ``RegimeData`` is published per bar.
    model : str, default "default"
        Model bundle name or checkpoint directory; ``"rules"`` runs without a learned model.
    detector : DetectorConfig, default DetectorConfig()
        Calibration, latency budget, drift and fallback settings (its ``model`` field is ignored).
    metadata : dict[str, str], optional
        ``DataType`` metadata of the published records. Subscribers with metadata must use exactly the
        same dict (key order included); subscribers without metadata receive every publisher's records.
    warmup_inference : bool, default True
        Run one inference at start so the first bar does not pay numba's load time (which would count
        as a latency-budget breach).
    latency_guard : {"live", "always", "never"}, default "live"
        When a model call over ``detector.latency_budget_us`` sends the chain down a level: ``"live"``
        only under a live clock (a ``TradingNode``), ``"always"``, or ``"never"``. A backtest measures
        wall time of a simulated bar, so enforcing the budget there would make a run's regimes, and every
        decision taken on them, depend on how busy the machine was; with ``"live"`` backtests are
        reproducible and still publish the measured ``latency_us``.
    """

    bar_type: str
    model: str = "default"
    detector: DetectorConfig = DetectorConfig()
    metadata: dict[str, str] | None = None
    warmup_inference: bool = True
    latency_guard: str = "live"


class RegimeActor(Actor):
    """Publishes a ``RegimeData`` for every bar of ``config.bar_type``."""

    def __init__(self, config: RegimeActorConfig) -> None:
        super().__init__(config)
        self.bar_type = BarType.from_str(config.bar_type)
        self.data_type = DataType(RegimeData, metadata=config.metadata or {})
        self.detector: RegimeDetector | None = None
        self.stream: DetectorStream | None = None
        self.published = 0

    def on_start(self) -> None:
        config = self.config.detector
        if not self._enforce_latency_budget():
            config = msgspec.structs.replace(config, latency_budget_us=math.inf)
        try:
            self.detector = load_detector(self.config.model, config)
        except ModelLoadError as exc:
            self.log.error(f"regime model {self.config.model!r} unavailable, running rules only: {exc}")
            self.detector = load_detector(RULES_ONLY, config)
        if self.config.warmup_inference and self.detector.bundle is not None:
            bundle = self.detector.bundle
            bundle.infer(np.zeros((bundle.window_length, len(bundle.input_names)), dtype=np.float32))
        self.stream = self.detector.stream()
        self.log.info(f"regime detector {self.detector.model_version} on {self.bar_type}")
        self.subscribe_bars(self.bar_type)

    def _enforce_latency_budget(self) -> bool:
        guard = self.config.latency_guard
        if guard not in ("live", "always", "never"):
            raise ValueError(f"RegimeActorConfig.latency_guard must be live|always|never, got {guard!r}")
        if guard == "live":
            return isinstance(self.clock, LiveClock)
        return guard == "always"

    def on_bar(self, bar: Bar) -> None:
        assert self.stream is not None and self.detector is not None
        row = self.stream.update(bar)
        self.publish_data(self.data_type, to_regime_data(row, bar, self.detector.model_version))
        self.published += 1

    def on_stop(self) -> None:
        self.unsubscribe_bars(self.bar_type)

    def on_reset(self) -> None:
        if self.detector is not None:
            self.stream = self.detector.stream()
        self.published = 0


_VECTOR_KEYS = tuple(f"v{i}" for i in range(8))


def to_regime_data(row: dict, bar: Bar, model_version: str) -> Data:
    """One detector row as ``RegimeData`` stamped with the bar's times (so replays line up with bars)."""
    return RegimeData(
        bar.bar_type.instrument_id,
        label=Regime[row["label"]].value,
        probabilities=(row["p_bull"], row["p_bear"], row["p_sideways"], row["p_volatile"]),
        vector=tuple(row[key] for key in _VECTOR_KEYS),
        confidence=row["confidence"],
        uncertainty=row["uncertainty"],
        fallback_level=row["level"],
        model_version=model_version,
        latency_us=row["latency_us"],
        drift=row["drift"],
        health_flags=row["health_flags"],
        ts_event=bar.ts_event,
        ts_init=bar.ts_init,
    )

