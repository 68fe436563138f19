"""The interface every foundation-model forecast adapter implements, and the causal plumbing they share.

What an adapter is for. The regime detector calibrates a 0.1-0.9 quantile band of the next-``h``-bar log
return (``sage.regime.conformal``); sage's own forecaster produces it from the regime vector. An adapter
produces the same 9 quantiles from a pretrained univariate foundation model (TiRex, Chronos) instead, so
the two can be swapped or compared without touching the calibration.

Input: close prices, oldest first -- the raw univariate series these models were trained on (their
own scalers normalise the level). The context for bar ``t`` is the ``context_length`` closes ending at
``t``, left-padded with NaN while the history is shorter; closes that are NaN, infinite or not positive
are passed as NaN (both model families mask missing values). Nothing after ``t`` is ever in it.

Output: float64 quantiles, ascending, of ``log(close_{t+h} / close_t)`` at levels 0.1, ..., 0.9: the
model's step-``h`` price quantiles ``q`` mapped through ``log(q / close_t)``. A per-step marginal quantile
of the price *is* the quantile of the ``h``-bar log return (log is monotone), so no quantiles are summed
across steps (which would be wrong). The model's quantiles are sorted ("rearrangement", as in
``sage.models.forecaster``) because neither model family enforces monotonicity. ``standardise`` turns
them into the sigma units of :class:`~sage.models.forecaster.QuantileForecaster`.

NaN rows (all 9 NaN), never an exception, for: fewer than ``min_context`` valid closes in the context
(warm-up), an invalid newest close, or a non-positive price quantile (no log return exists).

Streaming equals batch, bitwise, by construction: :meth:`LocalForecastAdapter.stream` and
:meth:`LocalForecastAdapter.predict_closes` build each bar's context with the same function and, with
the default ``batch_size=1``, evaluate the model on exactly the same ``(1, L)`` float32 tensor, so the
same torch kernels run on the same numbers. A larger ``batch_size`` is faster for precomputing long
histories but lets the BLAS pick other kernels for other batch shapes, so rows may then differ from the
stream in the last float32 bits (documented in ``docs/forecast_adapters.md``).
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections import deque
from pathlib import Path
from typing import Protocol, runtime_checkable

import msgspec
import numpy as np

from sage.models.forecaster import QUANTILE_LEVELS
from sage.models.registry import MissingCheckpointError, ModelLoadError


class AdapterUnavailableError(ModelLoadError):
    """The optional package an adapter needs (``tirex-ts``, ``chronos-forecasting``) is not installed."""


class ForecasterSpecError(ValueError):
    """A forecaster spec string (``"tirex:/path"``) is malformed or names an unknown adapter."""


class AdapterConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How an adapter turns closes into model contexts and model output into log-return quantiles."""

    horizon: int = 5
    """Bars ahead ``h`` of the forecast return (default 5: the shipped regime bundle's horizon; the
    detector must calibrate at the horizon the quantiles are for)."""
    context_length: int | None = None
    """Closes per context (default None: the model's own maximum, 2048 for TiRex and Chronos-Bolt).
    Shorter contexts are cheaper; the models accept any length and pad internally."""
    min_context: int = 32
    """Fewer valid closes than this in a context gives a NaN row (default 32: below that a
    foundation model's scaler has too little to work with)."""
    batch_size: int = 1
    """Contexts per model call in :meth:`LocalForecastAdapter.predict_closes` (default 1: bitwise equal
    to the stream; larger is faster but only equal to float32 rounding)."""
    device: str = "cpu"
    """torch device the model runs on (default "cpu")."""
    seed: int = 0
    """Seed of the sampling models (original Chronos, which draws sample paths): reset before every
    model call so a context always gets the same forecast (default 0). Unused by quantile models."""

    def __post_init__(self) -> None:
        for name in ("horizon", "min_context", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"AdapterConfig.{name} must be an int >= 1, got {value!r}")
        cl = self.context_length
        if cl is not None and (not isinstance(cl, int) or isinstance(cl, bool) or cl < 2):
            raise ValueError(f"AdapterConfig.context_length must be None or an int >= 2, got {cl!r}")


@runtime_checkable
class QuantileForecastAdapter(Protocol):
    """What the regime engine needs from a forecaster: 9 ascending log-return quantiles per bar."""

    name: str
    horizon: int
    quantile_levels: tuple[float, ...]
    context_length: int

    def predict(self, closes: np.ndarray) -> np.ndarray:
        """Closes up to and including bar ``t`` (oldest first) -> ``(Q,)`` float64 quantiles of
        ``log(c_{t+h} / c_t)``."""
        ...

    def predict_closes(self, closes: np.ndarray) -> np.ndarray:
        """Every bar of a history: ``(n,)`` closes -> ``(n, Q)``; row ``t`` uses closes ``<= t`` only."""
        ...

    def stream(self) -> ForecastStream:
        """A fresh one-bar-at-a-time form whose outputs equal :meth:`predict_closes` rows."""
        ...


def checkpoint_dir(path: str | os.PathLike[str], kind: str) -> Path:
    """``path`` as a local directory, or :class:`MissingCheckpointError` naming it.

    Why insist on an existing directory: given anything else, both packages fall back to downloading
    from the Hugging Face hub; sage never reaches for the network at run time.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise MissingCheckpointError(f"{kind} checkpoint directory {str(p)!r} does not exist")
    if not p.is_dir():
        raise MissingCheckpointError(f"{kind} checkpoint path {str(p)!r} is not a directory")
    return p


def context_windows(closes: np.ndarray, length: int) -> np.ndarray:
    """Read-only ``(n, length)`` float32 view: row ``t`` is closes ``t - length + 1 .. t``, NaN before the
    first bar and wherever a close is non-finite or not positive."""
    c = np.asarray(closes, dtype=np.float64)
    if c.ndim != 1:
        raise ValueError(f"closes must be 1-D, got shape {c.shape}")
    padded = np.full(c.size + length - 1, np.nan, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(c) & (c > 0.0)
    padded[length - 1 :] = np.where(ok, c, np.nan)
    return np.lib.stride_tricks.sliding_window_view(padded, length)


def log_return_quantiles(price_q: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Step-``h`` price quantiles ``(B, Q)`` and each context's newest close ``(B,)`` -> sorted float64
    log-return quantiles; rows with a non-positive or non-finite quantile become NaN."""
    q = np.sort(np.asarray(price_q, dtype=np.float64), axis=1)
    last = np.asarray(last, dtype=np.float64)[:, None]
    ok = np.isfinite(q).all(axis=1) & (q[:, 0] > 0.0) & np.isfinite(last[:, 0]) & (last[:, 0] > 0.0)
    out = np.full(q.shape, np.nan)
    out[ok] = np.log(q[ok] / last[ok])
    return out


def standardise(log_q: np.ndarray, sigma: np.ndarray | float, horizon: int) -> np.ndarray:
    """Log-return quantiles ``(..., Q)`` -> the sigma units of ``sage.models.forecaster`` (divide by
    ``sigma * sqrt(h)``, ``sigma`` being the bar's ``ewma_vol``); NaN where ``sigma`` is not positive.
    The inverse of :func:`sage.models.forecaster.to_log_return_quantiles`."""
    scale = np.asarray(sigma, dtype=np.float64) * math.sqrt(horizon)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(scale > 0.0, scale, np.nan)
        return np.asarray(log_q, dtype=np.float64) / scale[..., None]


class LocalForecastAdapter(ABC):
    """Shared causal plumbing; a subclass loads its model and implements :meth:`_price_quantiles`."""

    name: str = "adapter"
    """Adapter kind, the spec prefix (``"tirex"``, ``"chronos"``)."""

    def __init__(self, path: Path, config: AdapterConfig, model_context_length: int) -> None:
        self.path = path
        self.config = config
        self.model_context_length = int(model_context_length)
        self.context_length = int(config.context_length or model_context_length)
        self.horizon = config.horizon
        self.quantile_levels: tuple[float, ...] = QUANTILE_LEVELS
        if config.min_context > self.context_length:
            raise ValueError(f"min_context {config.min_context} exceeds context_length {self.context_length}")

    @abstractmethod
    def _price_quantiles(self, contexts: np.ndarray) -> np.ndarray:
        """Model call: ``(B, L)`` float32 closes (NaN = missing) -> ``(B, Q)`` price quantiles at step
        ``h`` at :attr:`quantile_levels`, in the model's float precision."""

    # -- forms ----------------------------------------------------------------------------------------

    def predict(self, closes: np.ndarray) -> np.ndarray:
        """Closes up to bar ``t`` (oldest first, any length) -> ``(Q,)`` float64 log-return quantiles."""
        c = np.asarray(closes, dtype=np.float64)
        if c.ndim != 1 or c.size == 0:
            raise ValueError(f"closes must be a non-empty 1-D array, got shape {c.shape}")
        return self._predict_contexts(context_windows(c[-self.context_length :], self.context_length)[-1:])[0]

    def predict_closes(self, closes: np.ndarray) -> np.ndarray:
        """``(n,)`` closes -> ``(n, Q)`` float64 log-return quantiles; row ``t`` from closes ``<= t``."""
        windows = context_windows(closes, self.context_length)
        n = windows.shape[0]
        out = np.full((n, len(self.quantile_levels)), np.nan)
        valid = self._valid_rows(windows)
        rows = np.flatnonzero(valid)
        step = self.config.batch_size
        for start in range(0, rows.size, step):
            idx = rows[start : start + step]
            out[idx] = self._run(windows[idx])
        return out

    def stream(self) -> ForecastStream:
        """A fresh streaming form (its own close buffer)."""
        return ForecastStream(self)

    # -- shared core ----------------------------------------------------------------------------------

    def _valid_rows(self, windows: np.ndarray) -> np.ndarray:
        newest_ok = np.isfinite(windows[:, -1])
        enough = np.isfinite(windows).sum(axis=1) >= self.config.min_context
        return newest_ok & enough

    def _predict_contexts(self, windows: np.ndarray) -> np.ndarray:
        out = np.full((windows.shape[0], len(self.quantile_levels)), np.nan)
        valid = self._valid_rows(windows)
        if valid.any():
            out[valid] = self._run(windows[valid])
        return out

    def _run(self, windows: np.ndarray) -> np.ndarray:
        contexts = np.ascontiguousarray(windows, dtype=np.float32)
        price_q = self._price_quantiles(contexts)
        return log_return_quantiles(price_q, contexts[:, -1])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.path)!r}, h={self.horizon}, context={self.context_length}, "
            f"model_context={self.model_context_length})"
        )


class ForecastStream:
    """One close at a time; ``update(close)`` returns the same row :meth:`predict_closes` gives that bar."""

    def __init__(self, adapter: LocalForecastAdapter) -> None:
        self.adapter = adapter
        length = adapter.context_length
        self._closes: deque[float] = deque([math.nan] * length, maxlen=length)

    def prime(self, closes: np.ndarray) -> None:
        """Append closes without forecasting (history before the first bar that needs a forecast).

        The stream's only state is its close buffer, so after ``prime(c[:k])`` the next ``update(c[k])``
        equals ``predict_closes(c)[k]`` -- without ``k`` model calls (seconds each for a real model).
        """
        self._closes.extend(float(c) for c in np.asarray(closes, dtype=np.float64).ravel())

    def update(self, close: float) -> np.ndarray:
        """Append bar ``t``'s close; return ``(Q,)`` float64 quantiles of ``log(c_{t+h} / c_t)``."""
        self._closes.append(float(close))
        window = context_windows(np.fromiter(self._closes, np.float64, len(self._closes)), len(self._closes))
        return self.adapter._predict_contexts(window[-1:])[0]
