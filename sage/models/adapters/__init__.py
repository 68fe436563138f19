"""Optional foundation-model forecasters (TiRex, Chronos) behind sage's quantile-forecaster interface.

::

    from sage.models.adapters import load_forecaster

    fc = load_forecaster("tirex:/models/tirex")             # a directory with model.ckpt
    fc = load_forecaster("chronos:/models/chronos-bolt-small", context_length=512)
    q = fc.predict(closes)                                  # (9,) float64 quantiles of log(c[t+5] / c[t])
    Q = fc.predict_closes(closes)                           # (n, 9), row t from closes[:t+1] only
    s = fc.stream(); q = s.update(close)                    # one bar at a time, equal to the rows of Q

Only local checkpoints are loaded (never the hub); the packages are optional extras
(``pip install 'sage[foundation]'``) and imported only when an adapter is loaded. See
``docs/forecast_adapters.md``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import msgspec

from sage.models.adapters.base import (
    AdapterConfig,
    AdapterUnavailableError,
    ForecasterSpecError,
    ForecastStream,
    LocalForecastAdapter,
    QuantileForecastAdapter,
    context_windows,
    log_return_quantiles,
    standardise,
)


def _tirex(path: str, config: AdapterConfig) -> LocalForecastAdapter:
    from sage.models.adapters.tirex import TiRexAdapter

    return TiRexAdapter(path, config)


def _chronos(path: str, config: AdapterConfig) -> LocalForecastAdapter:
    from sage.models.adapters.chronos import ChronosAdapter

    return ChronosAdapter(path, config)


ADAPTERS: dict[str, Callable[[str, AdapterConfig], LocalForecastAdapter]] = {
    "tirex": _tirex,
    "chronos": _chronos,
}
"""Spec prefix -> loader. The prefix is the part of ``"tirex:/path"`` before the first colon."""


def parse_spec(spec: str) -> tuple[str, str]:
    """``"kind:path"`` -> ``(kind, path)``, or :class:`ForecasterSpecError` naming what is wrong."""
    kind, sep, path = str(spec).partition(":")
    kind = kind.strip().lower()
    if not sep or not path:
        raise ForecasterSpecError(
            f"forecaster spec {spec!r} must be '<kind>:<local checkpoint directory>', kind one of "
            f"{sorted(ADAPTERS)}"
        )
    if kind not in ADAPTERS:
        raise ForecasterSpecError(
            f"forecaster spec {spec!r}: unknown kind {kind!r}, expected one of {sorted(ADAPTERS)}"
        )
    return kind, path


def load_forecaster(
    spec: str, config: AdapterConfig | None = None, **overrides: object
) -> LocalForecastAdapter:
    """Load the adapter a spec names, e.g. ``"tirex:/models/tirex"`` or ``"chronos:./chronos-bolt-small"``.

    ``overrides`` replace fields of ``config`` (default :class:`AdapterConfig`), e.g. ``horizon=5,
    context_length=512``. Raises :class:`ForecasterSpecError` for a malformed spec,
    :class:`AdapterUnavailableError` when the optional package is missing, and
    :class:`~sage.models.registry.MissingCheckpointError` /
    :class:`~sage.models.registry.CorruptCheckpointError` (both ``ModelLoadError``) naming the path when
    the checkpoint is absent, not a directory or unreadable.
    """
    kind, path = parse_spec(spec)
    config = config or AdapterConfig()
    if overrides:  # rebuilt, not structs.replace, so __post_init__ validates the result
        config = AdapterConfig(**{**msgspec.structs.asdict(config), **overrides})
    return ADAPTERS[kind](os.path.expanduser(path), config)


__all__ = [
    "ADAPTERS",
    "AdapterConfig",
    "AdapterUnavailableError",
    "ForecastStream",
    "ForecasterSpecError",
    "LocalForecastAdapter",
    "QuantileForecastAdapter",
    "context_windows",
    "load_forecaster",
    "log_return_quantiles",
    "parse_spec",
    "standardise",
]
