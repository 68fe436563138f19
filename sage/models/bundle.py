"""The regime model bundle: encoder + classifier + forecaster behind one load / infer interface.

This is what ``sage.regime`` (the detector and its actor) uses::

    from sage.models.bundle import RegimeModelBundle
    from sage.features import MatrixStream

    bundle = RegimeModelBundle.load("default")          # sage/assets/models/regime-default, verified
    bundle.check_schema(my_feature_schema)              # ModelSchemaMismatchError unless identical

    # streaming: one bar at a time
    stream = MatrixStream("strategic", bundle.feature_schema)
    matrix = stream.update(bar)                         # (48, 13) strategic matrix
    if stream.ready:
        out = bundle.infer(bundle.select(matrix))       # RegimeInference(vector[8], probs[4], quantiles[9])
        out.label, out.probs, out.quantiles[4]          # Regime, probabilities, median (sigma units)

    # precompute: every bar of a history at once
    rows = strategic_rows(bars_df, bundle.feature_schema)          # (n, 13)
    batch = bundle.infer_rows(rows)                     # arrays aligned with the n bars, NaN in warm-up

**Streaming equals precompute, bitwise.** Inference does not run through torch: at load time the state
dict is packed into one flat float32 vector and a numba kernel (:func:`_forward`) evaluates the network
one window at a time. ``infer`` calls it once; ``infer_batch`` loops the *same* compiled function over
the windows, so every window sees exactly the same sequence of float32 operations whatever the batch
size or chunking -- equality is by construction, not by luck of a BLAS kernel choice. (With torch on
this CPU it is not exact: MKL rounds a 1-row product differently from a many-row one; measured up to
1.8e-7 apart, see ``docs/regime_models.md``.) The kernel uses no fast-math, so no reassociation or FMA
contraction; it agrees with the torch module to ~1e-6 (tested), which remains the training-time
reference. A side benefit: batch-1 latency is tens of microseconds instead of half a millisecond of
eager-torch dispatch overhead.

Inputs. The model reads the last ``window_length`` rows of the strategic matrix
(``sage.features.matrices``), columns :attr:`RegimeModelBundle.input_names` (the 11 strategic columns
without the two time-of-day columns: regimes are not a function of the clock, and the synthetic market the
classifier learns from runs 24/7). :class:`InputSpec` pins that choice; its hash (with the feature
schema's hash inside) is the model's ``input_hash``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any, Literal, NamedTuple

import msgspec
import numpy as np
import pandas as pd
import torch
from numba import njit
from torch import nn

from sage.data.regimes import N_REGIMES, Regime
from sage.features.matrices import STRATEGIC_COLUMNS
from sage.features.matrices import windows as _row_windows
from sage.features.schema import DEFAULT_SCHEMA, FeatureSchema, SchemaMismatchError
from sage.models.classifier import ClassifierConfig, RegimeClassifier
from sage.models.forecaster import ForecasterConfig, QuantileForecaster
from sage.models.rde import REFERENCE_RDE, RDEConfig, RegimeDynamicsEncoder, VAEOutput
from sage.models.registry import (
    CorruptCheckpointError,
    ModelManifest,
    ModelSchemaMismatchError,
    load_checkpoint,
    read_sidecar,
    save_checkpoint,
)
from sage.models.schema_checkpoint import schema_manifest, verified_feature_schema

KIND: str = "sage.regime-bundle"
"""Registry kind of a regime bundle checkpoint."""

DEFAULT_INPUT_COLUMNS: tuple[str, ...] = tuple(c for c in STRATEGIC_COLUMNS if not c.startswith("s_tod_"))
"""The 11 strategic columns the default model reads (time-of-day dropped)."""


class InputSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Which numbers the model reads: ``window`` rows of one feature matrix, these columns, in order."""

    matrix: Literal["strategic"] = "strategic"
    """Feature matrix the rows come from (default "strategic", the 13-column regime matrix)."""
    columns: tuple[str, ...] = DEFAULT_INPUT_COLUMNS
    """Matrix columns, in the order of the model's feature axis (default: the 11 non-clock columns)."""
    window: int = 48
    """Newest rows of the matrix the model reads (default 48, the whole strategic matrix; at most its
    window)."""

    def __post_init__(self) -> None:
        unknown = [c for c in self.columns if c not in STRATEGIC_COLUMNS]
        if unknown or not self.columns or len(set(self.columns)) != len(self.columns):
            raise ValueError(f"InputSpec.columns must be distinct strategic columns, got {self.columns}")
        if not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"InputSpec.window must be an int >= 1, got {self.window!r}")

    def hash(self, feature_schema: FeatureSchema) -> str:
        """sha256 of the canonical JSON of (feature schema hash, matrix, columns, window)."""
        payload = {
            "feature_schema_hash": feature_schema.hash,
            "matrix": self.matrix,
            "columns": list(self.columns),
            "window": self.window,
        }
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def column_index(self) -> np.ndarray:
        """Positions of :attr:`columns` in the strategic matrix."""
        return np.array([STRATEGIC_COLUMNS.index(c) for c in self.columns], dtype=np.intp)


class BundleConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Architecture of a whole bundle (stored as the manifest's ``architecture``)."""

    inputs: InputSpec = InputSpec()
    """Model input (default: 48 rows x 11 strategic columns)."""
    rde: RDEConfig = RDEConfig()
    """Encoder sizes (default: the compact RDE, d_model 16, 1 layer, 2 heads, latent 8, last-token pooling)."""
    classifier: ClassifierConfig = ClassifierConfig()
    """Classifier head (default hidden 32)."""
    forecaster: ForecasterConfig = ForecasterConfig()
    """Quantile head (default hidden 32, horizon 5 bars, 9 levels)."""

    def __post_init__(self) -> None:
        f = len(self.inputs.columns)
        widths = {
            "rde.n_features": self.rde.n_features,
            "classifier.n_features": self.classifier.n_features,
            "forecaster.n_features": self.forecaster.n_features,
        }
        bad = {k: v for k, v in widths.items() if v != f}
        if bad:
            raise ValueError(f"BundleConfig: {bad} must equal the {f} input columns")
        if self.rde.window != self.inputs.window:
            raise ValueError(
                f"BundleConfig: rde.window {self.rde.window} != inputs.window {self.inputs.window}"
            )
        z = self.rde.latent_dim
        if self.classifier.latent_dim != z or self.forecaster.latent_dim != z:
            raise ValueError(f"BundleConfig: head latent_dim must equal rde.latent_dim ({z})")
        if self.classifier.n_regimes != N_REGIMES:
            raise ValueError(f"BundleConfig: classifier.n_regimes must be {N_REGIMES}")


def bundle_config(rde: RDEConfig | None = None, *, hidden: int = 32, horizon: int = 5) -> BundleConfig:
    """A consistent :class:`BundleConfig` around an encoder config (default ``RDEConfig()``); input
    width, window and latent size follow the encoder."""
    rde = rde if rde is not None else RDEConfig()
    columns = DEFAULT_INPUT_COLUMNS
    if rde.n_features != len(columns):
        raise ValueError(f"rde.n_features must be {len(columns)} for the default input columns")
    return BundleConfig(
        inputs=InputSpec(columns=columns, window=rde.window),
        rde=rde,
        classifier=ClassifierConfig(latent_dim=rde.latent_dim, n_features=rde.n_features, hidden=hidden),
        forecaster=ForecasterConfig(
            latent_dim=rde.latent_dim, n_features=rde.n_features, hidden=hidden, horizon=horizon
        ),
    )


DEFAULT_BUNDLE = bundle_config()
"""The shipped default architecture."""

REFERENCE_BUNDLE = bundle_config(REFERENCE_RDE, hidden=64)
"""Reference-scale variant (d_model 256, 3 layers, 8 heads, latent 8, 24-bar window)."""


REFERENCE_FILE: str = "reference.json"
"""Checkpoint sidecar holding the :class:`InputReference` (sha256 in the manifest's ``sidecars``)."""


class InputReference(msgspec.Struct, frozen=True, kw_only=True):
    """The training distribution of the model's input rows and predicted labels, shipped with the weights.

    Why: the detector's drift monitors ask "do the inputs (and the model's answers) still look like what
    the model was trained on?". That needs the *training* distribution, not the first bars of the stream
    being monitored (which may already be unlike the training data). Written by ``sage train regime``
    into the sidecar :data:`REFERENCE_FILE`, checksummed through the manifest, loaded with the bundle.

    The rows are the newest row of every training window (exactly the per-bar row the detector
    monitors), weighted as training sampled them: each pool (labelled synthetic, unlabelled real) gets its
    share of a batch, spread evenly over its windows.
    """

    columns: tuple[str, ...]
    """Model-input columns, in the order of the model's feature axis."""
    grid: int
    """Quantile grid size ``G``: quantiles are stored at levels ``0, 1/G, ..., 1``."""
    quantiles: tuple[tuple[float, ...], ...]
    """Per column, ``G + 1`` weighted quantiles (the smallest value whose cumulative weight reaches the level)."""
    below: tuple[tuple[float, ...], ...]
    """Per column, the weighted share of reference values strictly below each quantile (exact under ties)."""
    label_shares: tuple[float, float, float, float]
    """Weighted share of each predicted regime (argmax of the model's probabilities) over the same rows."""
    rows: int
    """Number of reference rows (training windows)."""
    weighting: str = ""
    """How the rows were weighted, in words."""

    @classmethod
    def from_rows(
        cls,
        rows: np.ndarray,
        weights: np.ndarray,
        labels: np.ndarray,
        *,
        columns: tuple[str, ...],
        grid: int = 200,
        weighting: str = "",
    ) -> InputReference:
        """Summarise ``rows (n, F)`` with non-negative ``weights (n,)`` and predicted ``labels (n,)``
        (-1 = none). Non-finite values are left out per column."""
        rows = np.asarray(rows, dtype=np.float64)
        weights = np.asarray(weights, dtype=np.float64)
        labels = np.asarray(labels, dtype=np.int64)
        n = rows.shape[0] if rows.ndim == 2 else -1
        if rows.ndim != 2 or rows.shape[1] != len(columns) or weights.shape != (n,) or labels.shape != (n,):
            raise ValueError(
                f"rows {rows.shape}, weights {weights.shape}, labels {labels.shape} do not match "
                f"{len(columns)} columns"
            )
        if grid < 2 or not np.isfinite(weights).all() or (weights < 0).any():
            raise ValueError("need grid >= 2 and finite non-negative weights")
        levels = np.arange(grid + 1) / grid
        qs, lows = [], []
        for j in range(rows.shape[1]):
            ok = np.isfinite(rows[:, j]) & (weights > 0)
            if not ok.any():
                raise ValueError(f"reference column {columns[j]!r} has no finite values")
            order = np.argsort(rows[ok, j], kind="stable")
            values, w = rows[ok, j][order], weights[ok][order]
            cum = np.cumsum(w) / w.sum()
            idx = np.minimum(np.searchsorted(cum, levels, side="left"), values.size - 1)
            q = values[idx]
            cum0 = np.concatenate([[0.0], cum])
            below = cum0[np.searchsorted(values, q, side="left")]
            qs.append(tuple(float(x) for x in q))
            lows.append(tuple(float(x) for x in below))
        known = labels >= 0
        shares = np.bincount(labels[known], weights=weights[known], minlength=N_REGIMES)[:N_REGIMES]
        shares = shares / shares.sum() if shares.sum() > 0 else np.full(N_REGIMES, 1.0 / N_REGIMES)
        return cls(
            columns=tuple(columns),
            grid=int(grid),
            quantiles=tuple(qs),
            below=tuple(lows),
            label_shares=tuple(float(x) for x in shares),  # type: ignore[arg-type]
            rows=int(rows.shape[0]),
            weighting=weighting,
        )

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(quantiles, below)`` as ``(F, G + 1)`` float64 arrays (``DriftMonitor.from_quantiles`` input)."""
        return np.asarray(self.quantiles, dtype=np.float64), np.asarray(self.below, dtype=np.float64)


class TrainOutput(NamedTuple):
    """One training forward pass."""

    vae: VAEOutput  # mu/logvar/z (B, Z), recon (B, L, F)
    logits: torch.Tensor  # (B, 4)
    quantiles: torch.Tensor  # (B, Q)


class RegimeNet(nn.Module):
    """Encoder + classifier + forecaster as one module (one state dict: ``rde.*``, ``classifier.*``,
    ``forecaster.*``)."""

    def __init__(self, config: BundleConfig) -> None:
        super().__init__()
        self.config = config
        self.rde = RegimeDynamicsEncoder(config.rde)
        self.classifier = RegimeClassifier(config.classifier)
        self.forecaster = QuantileForecaster(config.forecaster)

    def forward(self, x: torch.Tensor) -> TrainOutput:
        """Training pass: ``x (B, L, F)`` -> VAE output, regime logits ``(B, 4)``, quantiles ``(B, Q)``."""
        vae = self.rde(x)
        last = x[:, -1]  # (B, F) newest bar
        return TrainOutput(vae, self.classifier(vae.mu, last), self.forecaster(vae.mu, last))

    def infer(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reference inference in torch: ``x (B, L, F)`` -> ``vector (B, Z)``, ``probs (B, 4)``,
        ``quantiles (B, Q)``. The bundle runs the numba engine instead; tests hold the two together."""
        pooled = self.rde.pooled(x)  # (B, D)
        vector = self.rde.mu(pooled)  # (B, Z)
        last = x[:, -1]  # (B, F)
        probs = torch.softmax(self.classifier(vector, last), dim=1)  # (B, 4)
        return vector, probs, self.forecaster(vector, last)


# -- numba inference engine ----------------------------------------------------------------------------
#
# The network is evaluated per window by `_forward` on a flat float32 parameter vector (see
# `pack_parameters` for the order) and an int64 `dims` vector. Every reduction runs in a fixed sequential
# order and no fast-math flag is set, so the result for a window depends on nothing but the window.

# dims layout
_D_F, _D_L, _D_D, _D_H, _D_NL, _D_FF, _D_Z, _D_HC, _D_HF, _D_Q, _D_POOL, _D_NR = range(12)
_N_DIMS = 12
_LN_EPS = np.float32(1e-5)  # torch.nn.LayerNorm's default eps
_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)


@njit(cache=True, inline="always")
def _take(params: np.ndarray, p: int, n: int) -> tuple[np.ndarray, int]:
    return params[p : p + n], p + n


@njit(cache=True)
def _linear(x, w, b, out, i0, i1):  # pragma: no cover - numba
    """``out[i] = x[i] @ w + b`` for rows ``i0 <= i < i1``; ``w`` is ``(K, N)`` (the transposed torch weight).

    Each output starts at the bias and adds ``x[i, k] * w[k, j]`` in increasing ``k``: vectorised across
    ``j`` (independent outputs), sequential in ``k`` (the reduction), so the order never varies.
    """
    k_dim = x.shape[1]
    n = w.shape[1]
    for i in range(i0, i1):
        for j in range(n):
            out[i, j] = b[j]
        for k in range(k_dim):
            xv = x[i, k]
            for j in range(n):
                out[i, j] += xv * w[k, j]


@njit(cache=True)
def _layer_norm(x, g, b, out, i0, i1):  # pragma: no cover - numba
    """Row-wise LayerNorm (biased variance, eps 1e-5, like torch) for rows ``i0 <= i < i1``."""
    d = x.shape[1]
    inv_d = _ONE / np.float32(d)
    for i in range(i0, i1):
        s = _ZERO
        for j in range(d):
            s += x[i, j]
        mean = s * inv_d
        v = _ZERO
        for j in range(d):
            c = x[i, j] - mean
            v += c * c
        rstd = _ONE / np.float32(math.sqrt(v * inv_d + _LN_EPS))
        for j in range(d):
            out[i, j] = (x[i, j] - mean) * rstd * g[j] + b[j]


@njit(cache=True)
def _relu(x, i0, i1):  # pragma: no cover - numba
    for i in range(i0, i1):
        for j in range(x.shape[1]):
            x[i, j] = max(x[i, j], _ZERO)


@njit(cache=True)
def _softmax_inplace(row, n):  # pragma: no cover - numba
    """``row[:n] = softmax(row[:n])`` (max-shifted, sequential sum)."""
    mx = row[0]
    for j in range(1, n):
        mx = max(mx, row[j])
    s = _ZERO
    for j in range(n):
        e = np.float32(math.exp(row[j] - mx))
        row[j] = e
        s += e
    for j in range(n):
        row[j] = row[j] / s


@njit(cache=True)
def _workspace(dims):  # pragma: no cover - numba
    """Scratch buffers for one window, allocated once per call of `_infer_one` / `_infer_many`."""
    length, d, ff = dims[_D_L], dims[_D_D], dims[_D_FF]
    d_head = d // dims[_D_H]
    h = np.empty((length, d), np.float32)  # residual stream
    t = np.empty((length, d), np.float32)  # normalised stream / attention output
    u = np.empty((length, d), np.float32)  # projections back to d_model
    qkv = np.empty((length, 3 * d), np.float32)
    kt = np.empty((d_head, length), np.float32)  # one head's keys, transposed
    scores = np.empty(length, np.float32)
    hidden = np.empty((length, ff), np.float32)
    head_in = np.empty((1, dims[_D_Z] + dims[_D_F]), np.float32)
    head_hidden = np.empty((1, max(dims[_D_HC], dims[_D_HF])), np.float32)
    pooled = np.empty((1, d), np.float32)
    return h, t, u, qkv, kt, scores, hidden, head_in, head_hidden, pooled


@njit(cache=True)
def _forward(params, dims, x, ws, vec, probs, quant):  # pragma: no cover - numba
    """One window ``x (L, F)`` (any float dtype) -> ``vec (1, Z)``, ``probs (1, 4)``, ``quant (1, Q)``.

    Mirrors `RegimeNet.infer`: projection + positions, pre-norm blocks, final LayerNorm, pooling, mu,
    classifier softmax, sorted forecaster quantiles. With "last" pooling the final block is evaluated
    for the newest token only (the only one the output reads); keys and values still cover the window.
    """
    h, t, u, qkv, kt, scores, hidden, head_in, head_hidden, pooled = ws
    n_f, length, d, n_heads = dims[_D_F], dims[_D_L], dims[_D_D], dims[_D_H]
    n_layers, ff, z, hc, hf, nq, nr = (
        dims[_D_NL],
        dims[_D_FF],
        dims[_D_Z],
        dims[_D_HC],
        dims[_D_HF],
        dims[_D_Q],
        dims[_D_NR],
    )
    pool_last = dims[_D_POOL] == 1
    d_head = d // n_heads
    scale = np.float32(1.0 / math.sqrt(d_head))

    p = 0
    w, p = _take(params, p, n_f * d)
    b, p = _take(params, p, d)
    pos, p = _take(params, p, length * d)
    w2 = w.reshape((n_f, d))
    pos2 = pos.reshape((length, d))
    for i in range(length):  # input projection (float32 cast of the window) + positional table
        for j in range(d):
            h[i, j] = b[j]
        for k in range(n_f):
            xv = np.float32(x[i, k])
            for j in range(d):
                h[i, j] += xv * w2[k, j]
        for j in range(d):
            h[i, j] += pos2[i, j]

    i0 = 0
    for layer in range(n_layers):
        if pool_last and layer == n_layers - 1:
            i0 = length - 1  # queries / outputs of the last block: newest token only
        g1, p = _take(params, p, d)
        b1, p = _take(params, p, d)
        wq, p = _take(params, p, d * 3 * d)
        bq, p = _take(params, p, 3 * d)
        wo, p = _take(params, p, d * d)
        bo, p = _take(params, p, d)
        g2, p = _take(params, p, d)
        b2, p = _take(params, p, d)
        wf1, p = _take(params, p, d * ff)
        bf1, p = _take(params, p, ff)
        wf2, p = _take(params, p, ff * d)
        bf2, p = _take(params, p, d)

        _layer_norm(h, g1, b1, t, 0, length)
        _linear(t, wq.reshape((d, 3 * d)), bq, qkv, 0, length)
        for hd in range(n_heads):
            q0, k0, v0 = hd * d_head, d + hd * d_head, 2 * d + hd * d_head
            for e in range(d_head):
                for j in range(length):
                    kt[e, j] = qkv[j, k0 + e]
            for i in range(i0, length):
                for j in range(length):
                    scores[j] = _ZERO
                for e in range(d_head):
                    qv = qkv[i, q0 + e] * scale
                    for j in range(length):
                        scores[j] += qv * kt[e, j]
                _softmax_inplace(scores, length)
                for e in range(d_head):
                    t[i, q0 + e] = _ZERO
                for j in range(length):
                    pj = scores[j]
                    for e in range(d_head):
                        t[i, q0 + e] += pj * qkv[j, v0 + e]
        _linear(t, wo.reshape((d, d)), bo, u, i0, length)
        for i in range(i0, length):
            for j in range(d):
                h[i, j] += u[i, j]
        _layer_norm(h, g2, b2, t, i0, length)
        _linear(t, wf1.reshape((d, ff)), bf1, hidden, i0, length)
        _relu(hidden, i0, length)
        _linear(hidden, wf2.reshape((ff, d)), bf2, u, i0, length)
        for i in range(i0, length):
            for j in range(d):
                h[i, j] += u[i, j]

    gf, p = _take(params, p, d)
    bfn, p = _take(params, p, d)
    if pool_last:
        _layer_norm(h, gf, bfn, t, length - 1, length)
        for j in range(d):
            pooled[0, j] = t[length - 1, j]
    else:
        _layer_norm(h, gf, bfn, t, 0, length)
        for j in range(d):
            pooled[0, j] = _ZERO
        for i in range(length):
            for j in range(d):
                pooled[0, j] += t[i, j]
        inv_len = _ONE / np.float32(length)
        for j in range(d):
            pooled[0, j] = pooled[0, j] * inv_len

    wm, p = _take(params, p, d * z)
    bm, p = _take(params, p, z)
    _linear(pooled, wm.reshape((d, z)), bm, vec, 0, 1)
    for j in range(z):
        head_in[0, j] = vec[0, j]
    for j in range(n_f):
        head_in[0, z + j] = np.float32(x[length - 1, j])

    w1, p = _take(params, p, (z + n_f) * hc)
    b1, p = _take(params, p, hc)
    w2c, p = _take(params, p, hc * nr)
    b2c, p = _take(params, p, nr)
    hid = head_hidden[:, :hc]
    _linear(head_in, w1.reshape((z + n_f, hc)), b1, hid, 0, 1)
    _relu(hid, 0, 1)
    _linear(hid, w2c.reshape((hc, nr)), b2c, probs, 0, 1)
    _softmax_inplace(probs[0], nr)

    w1f, p = _take(params, p, (z + n_f) * hf)
    b1f, p = _take(params, p, hf)
    w2f, p = _take(params, p, hf * nq)
    b2f, p = _take(params, p, nq)
    hid = head_hidden[:, :hf]
    _linear(head_in, w1f.reshape((z + n_f, hf)), b1f, hid, 0, 1)
    _relu(hid, 0, 1)
    _linear(hid, w2f.reshape((hf, nq)), b2f, quant, 0, 1)
    q = quant[0]
    for i in range(1, nq):  # insertion sort, ascending (sorting is exact, same as torch.sort)
        v = q[i]
        j = i - 1
        while j >= 0 and q[j] > v:
            q[j + 1] = q[j]
            j -= 1
        q[j + 1] = v


@njit(cache=True)
def _finite(x):  # pragma: no cover - numba
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            if not math.isfinite(x[i, j]):
                return False
    return True


@njit(cache=True)
def _infer_many(params, dims, xs, vecs, probs, quants):  # pragma: no cover - numba
    """Windows ``xs (N, L, F)`` -> rows of ``vecs (N, Z)``, ``probs (N, 4)``, ``quants (N, Q)``; NaN rows
    for windows with a non-finite value. `_infer_one` is this with N = 1: the same per-window code."""
    ws = _workspace(dims)
    for n in range(xs.shape[0]):
        if _finite(xs[n]):
            _forward(params, dims, xs[n], ws, vecs[n : n + 1], probs[n : n + 1], quants[n : n + 1])
        else:
            vecs[n, :] = np.nan
            probs[n, :] = np.nan
            quants[n, :] = np.nan


@njit(cache=True)
def _infer_one(params, dims, x, ws, vec, probs, quant):  # pragma: no cover - numba
    """One window ``x (L, F)`` into ``vec (1, Z)``, ``probs (1, 4)``, ``quant (1, Q)`` with caller-owned
    scratch ``ws``; the same `_forward` as `_infer_many`."""
    if _finite(x):
        _forward(params, dims, x, ws, vec, probs, quant)
    else:
        vec[0, :] = np.nan
        probs[0, :] = np.nan
        quant[0, :] = np.nan


def pack_parameters(net: RegimeNet) -> tuple[np.ndarray, np.ndarray]:
    """``(params, dims)`` for the numba engine: every weight in `_forward`'s reading order, flattened
    into one contiguous float32 vector (linear weights transposed to ``(in, out)``)."""
    sd = {k: v.detach().to(torch.float32) for k, v in net.state_dict().items()}
    c = net.config
    r = c.rde

    def lin(prefix: str) -> list[torch.Tensor]:
        return [sd[prefix + ".weight"].t().contiguous(), sd[prefix + ".bias"]]

    parts = [*lin("rde.input_proj"), sd["rde.pos"]]
    for i in range(r.n_layers):
        blk = f"rde.blocks.{i}"
        parts += [
            sd[f"{blk}.norm_attn.weight"],
            sd[f"{blk}.norm_attn.bias"],
            *lin(f"{blk}.qkv"),
            *lin(f"{blk}.attn_out"),
            sd[f"{blk}.norm_ff.weight"],
            sd[f"{blk}.norm_ff.bias"],
            *lin(f"{blk}.ff_in"),
            *lin(f"{blk}.ff_out"),
        ]
    parts += [sd["rde.norm_out.weight"], sd["rde.norm_out.bias"], *lin("rde.mu")]
    parts += [*lin("classifier.net.0"), *lin("classifier.net.2")]
    parts += [*lin("forecaster.net.0"), *lin("forecaster.net.2")]
    params = np.ascontiguousarray(np.concatenate([t.numpy().ravel() for t in parts]), dtype=np.float32)
    dims = np.zeros(_N_DIMS, dtype=np.int64)
    dims[_D_F], dims[_D_L], dims[_D_D], dims[_D_H] = r.n_features, r.window, r.d_model, r.n_heads
    dims[_D_NL], dims[_D_FF], dims[_D_Z] = r.n_layers, r.d_ff, r.latent_dim
    dims[_D_HC], dims[_D_HF], dims[_D_Q] = c.classifier.hidden, c.forecaster.hidden, len(c.forecaster.levels)
    dims[_D_POOL] = 1 if r.pooling == "last" else 0
    dims[_D_NR] = c.classifier.n_regimes
    return params, dims


class RegimeInference(NamedTuple):
    """Output for one window (float32 arrays)."""

    vector: np.ndarray
    """(Z,) regime vector: the encoder's posterior mean."""
    probs: np.ndarray
    """(4,) regime probabilities in :class:`~sage.data.regimes.Regime` order."""
    quantiles: np.ndarray
    """(Q,) ascending quantiles of the standardised next-h log return (see ``sage.models.forecaster``)."""

    @property
    def label(self) -> Regime:
        """Most probable regime."""
        return Regime(int(np.argmax(self.probs)))

    @property
    def median(self) -> float:
        """Middle quantile (the median for the default levels): the forecast direction, in sigma units."""
        return float(self.quantiles[len(self.quantiles) // 2])

    @property
    def spread(self) -> float:
        """Highest minus lowest quantile (0.9 - 0.1 by default): the forecast uncertainty, in sigma units."""
        return float(self.quantiles[-1] - self.quantiles[0])


class RegimeBatch(NamedTuple):
    """Outputs for ``N`` windows; rows of NaN where a window had NaN inputs (warm-up, bad bars)."""

    vectors: np.ndarray  # (N, Z) float32
    probs: np.ndarray  # (N, 4) float32
    quantiles: np.ndarray  # (N, Q) float32

    @property
    def labels(self) -> np.ndarray:
        """(N,) int8 regime codes; -1 where the window was invalid."""
        ok = np.isfinite(self.probs).all(axis=1)
        out = np.full(self.probs.shape[0], -1, dtype=np.int8)
        out[ok] = np.argmax(self.probs[ok], axis=1)
        return out


class RegimeModelBundle:
    """A loaded, verified regime model with fast single-window and batch inference."""

    def __init__(
        self,
        net: RegimeNet,
        feature_schema: FeatureSchema = DEFAULT_SCHEMA,
        manifest: ModelManifest | None = None,
        reference: InputReference | None = None,
    ) -> None:
        self.net = net.eval()
        self.reference = reference
        """Training distribution of inputs and predictions (None: a checkpoint without one)."""
        self.config: BundleConfig = net.config
        self.feature_schema = feature_schema
        self.manifest = manifest
        self._index = self.config.inputs.column_index()
        if self.window_length > feature_schema.strategic.window:
            raise ValueError(
                f"the model reads {self.window_length} rows but the schema's strategic matrix has only "
                f"{feature_schema.strategic.window}"
            )
        self._params, self._dims = pack_parameters(self.net)
        # Batch-1 scratch and outputs, allocated once (the streaming path allocates nothing per call
        # except the returned copies).
        self._ws = _workspace(self._dims)
        z, q = self.config.rde.latent_dim, len(self.config.forecaster.levels)
        self._vec1 = np.empty((1, z), np.float32)
        self._probs1 = np.empty((1, N_REGIMES), np.float32)
        self._quant1 = np.empty((1, q), np.float32)

    def refresh(self) -> None:
        """Repack the engine parameters from ``self.net`` (call after changing its weights in place)."""
        self.net.eval()
        self._params, self._dims = pack_parameters(self.net)

    # -- construction ---------------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls,
        config: BundleConfig = DEFAULT_BUNDLE,
        *,
        seed: int = 0,
        feature_schema: FeatureSchema = DEFAULT_SCHEMA,
    ) -> RegimeModelBundle:
        """An untrained bundle with seeded initial weights (for tests and benchmarks); the global torch RNG
        is left as it was."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = RegimeNet(config)
        return cls(net, feature_schema)

    @classmethod
    def load(
        cls, name_or_path: str | os.PathLike[str] = "default", *, schema: FeatureSchema | str | None = None
    ) -> RegimeModelBundle:
        """Load a verified bundle from the registry (a shipped name like ``"default"`` or a directory).

        Raises a :class:`~sage.models.registry.ModelLoadError` subclass on any problem: missing files,
        sha256 mismatch, unsafe pickle, foreign file, architecture mismatch, inconsistent manifest, or --
        when ``schema`` is given -- a feature schema other than the one the model was trained on.
        """
        built: dict[str, RegimeNet] = {}

        def expected_for(manifest: ModelManifest) -> dict[str, torch.Tensor]:
            config = msgspec.convert(manifest.architecture, BundleConfig)
            built["net"] = RegimeNet(config)
            return built["net"].state_dict()

        manifest, state_dict = load_checkpoint(name_or_path, kind=KIND, expected_for=expected_for)
        net = built["net"]
        inputs = net.config.inputs
        feature_schema = verified_feature_schema(
            name_or_path, manifest, input_hash_of=inputs.hash, input_names=inputs.columns
        )
        net.load_state_dict(state_dict, strict=True)
        reference = None
        if REFERENCE_FILE in manifest.sidecars:
            data = read_sidecar(name_or_path, manifest, REFERENCE_FILE)
            try:
                reference = msgspec.json.decode(data, type=InputReference)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise CorruptCheckpointError(f"{name_or_path}: {REFERENCE_FILE} is invalid: {exc}") from exc
            width = reference.grid + 1
            if (
                reference.columns != inputs.columns
                or len(reference.quantiles) != len(inputs.columns)
                or len(reference.below) != len(inputs.columns)
                or any(len(r) != width for r in (*reference.quantiles, *reference.below))
            ):
                raise CorruptCheckpointError(
                    f"{name_or_path}: {REFERENCE_FILE} does not describe the model's {len(inputs.columns)} inputs"
                )
        bundle = cls(net, feature_schema, manifest, reference)
        if schema is not None:
            bundle.check_schema(schema)
        return bundle

    def save(
        self,
        directory: str | os.PathLike[str],
        *,
        name: str,
        version: str = "1.0.0",
        training: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        created: str | None = None,
        reference: InputReference | None = None,
    ) -> ModelManifest:
        """Write this bundle as a registry checkpoint; returns (and keeps) the written manifest.

        ``reference`` (default: the bundle's own, if any) is written as the checksummed sidecar
        :data:`REFERENCE_FILE` and kept on the bundle."""
        if reference is not None:
            self.reference = reference
        sidecars = {}
        if self.reference is not None:
            sidecars[REFERENCE_FILE] = msgspec.json.encode(self.reference)
        manifest = schema_manifest(
            name=name,
            kind=KIND,
            version=version,
            config=self.config,
            feature_schema=self.feature_schema,
            input_hash=self.schema_hash,
            input_names=self.input_names,
            training=training,
            metrics=metrics,
            created=created,
        )
        self.manifest = save_checkpoint(directory, self.net.state_dict(), manifest, sidecars)
        return self.manifest

    # -- description ----------------------------------------------------------------------------------

    @property
    def window_length(self) -> int:
        """Rows ``L`` per input window."""
        return self.config.inputs.window

    @property
    def input_names(self) -> tuple[str, ...]:
        """Feature names along the window's last axis (``F`` of them)."""
        return self.config.inputs.columns

    @property
    def schema_hash(self) -> str:
        """The model-input hash: feature-schema hash + matrix + columns + window (:meth:`InputSpec.hash`)."""
        return self.config.inputs.hash(self.feature_schema)

    @property
    def feature_schema_hash(self) -> str:
        """``FeatureSchema.hash`` of the features the inputs come from."""
        return self.feature_schema.hash

    @property
    def horizon(self) -> int:
        """Bars ahead of the forecast return."""
        return self.config.forecaster.horizon

    @property
    def quantile_levels(self) -> tuple[float, ...]:
        """Levels of :attr:`RegimeInference.quantiles`."""
        return self.config.forecaster.levels

    def check_schema(self, schema: FeatureSchema | str) -> None:
        """Raise :class:`~sage.models.registry.ModelSchemaMismatchError` unless ``schema`` (a
        ``FeatureSchema``, its hash, or this model's input hash) is what the model was trained on."""
        if isinstance(schema, FeatureSchema):
            try:
                self.feature_schema.check(schema)
            except SchemaMismatchError as exc:
                raise ModelSchemaMismatchError(f"regime model {self._name}: {exc}") from exc
            return
        if str(schema) not in (self.schema_hash, self.feature_schema_hash):
            raise ModelSchemaMismatchError(
                f"regime model {self._name}: schema hash {str(schema)[:16]}... matches neither the model's "
                f"input hash {self.schema_hash[:16]}... nor its feature-schema hash {self.feature_schema_hash[:16]}..."
            )

    @property
    def _name(self) -> str:
        return self.manifest.name if self.manifest is not None else "(unsaved)"

    # -- inputs ---------------------------------------------------------------------------------------

    def select(self, matrix: np.ndarray) -> np.ndarray:
        """The model window ``(L, F)`` from a strategic matrix ``(W, 13)`` (``MatrixStream`` output, W >= L)."""
        m = np.asarray(matrix)
        if m.ndim != 2 or m.shape[1] != len(STRATEGIC_COLUMNS) or m.shape[0] < self.window_length:
            raise ValueError(
                f"expected a strategic matrix (>= {self.window_length}, {len(STRATEGIC_COLUMNS)}), got {m.shape}"
            )
        return m[-self.window_length :, self._index]

    def select_rows(self, rows: np.ndarray | pd.DataFrame) -> np.ndarray:
        """Per-bar input rows ``(n, F)`` from strategic rows ``(n, 13)`` (``strategic_rows`` output)."""
        r = rows.to_numpy() if isinstance(rows, pd.DataFrame) else np.asarray(rows)
        if r.ndim != 2 or r.shape[1] != len(STRATEGIC_COLUMNS):
            raise ValueError(f"expected strategic rows (n, {len(STRATEGIC_COLUMNS)}), got {r.shape}")
        return np.ascontiguousarray(r[:, self._index])

    # -- inference ------------------------------------------------------------------------------------

    def infer(self, window: np.ndarray) -> RegimeInference:
        """One window ``(L, F)`` (oldest row first, any float dtype) -> :class:`RegimeInference`.

        The streaming path: one numba call on preallocated scratch, no torch, no autograd. A window
        with any NaN/inf gives all-NaN outputs. Bitwise equal to the corresponding row of
        :meth:`infer_batch`. The scratch is per bundle: use one bundle per thread (an actor owns one).
        """
        w = np.asarray(window)
        if w.shape != (self.window_length, len(self.input_names)):
            raise ValueError(
                f"window must have shape ({self.window_length}, {len(self.input_names)}), got {w.shape}"
            )
        _infer_one(self._params, self._dims, w, self._ws, self._vec1, self._probs1, self._quant1)
        return RegimeInference(self._vec1[0].copy(), self._probs1[0].copy(), self._quant1[0].copy())

    def infer_batch(self, windows: np.ndarray) -> RegimeBatch:
        """``N`` windows ``(N, L, F)`` (e.g. the zero-copy view of :func:`windows_from_rows`) ->
        :class:`RegimeBatch`; the precompute path. Windows with NaN/inf get NaN rows."""
        w = np.asarray(windows)
        length, width = self.window_length, len(self.input_names)
        if w.ndim != 3 or w.shape[1:] != (length, width):
            raise ValueError(f"windows must have shape (N, {length}, {width}), got {w.shape}")
        n = w.shape[0]
        out = RegimeBatch(
            np.empty((n, self.config.rde.latent_dim), np.float32),
            np.empty((n, N_REGIMES), np.float32),
            np.empty((n, len(self.quantile_levels)), np.float32),
        )
        if n:
            _infer_many(self._params, self._dims, w, out.vectors, out.probs, out.quantiles)
        return out

    def infer_rows(self, rows: np.ndarray | pd.DataFrame) -> RegimeBatch:
        """Outputs for every bar of a history from its strategic rows ``(n, 13)``; row ``t`` is the window
        ending at bar ``t`` (NaN for ``t < L - 1`` and for windows touching warm-up or bad bars)."""
        selected = self.select_rows(rows)  # (n, F)
        n, length = selected.shape[0], self.window_length
        z, q = self.config.rde.latent_dim, len(self.quantile_levels)
        out = RegimeBatch(
            np.full((n, z), np.nan, dtype=np.float32),
            np.full((n, N_REGIMES), np.nan, dtype=np.float32),
            np.full((n, q), np.nan, dtype=np.float32),
        )
        if n < length:
            return out
        finite = np.flatnonzero(np.isfinite(selected).all(axis=1))
        if finite.size == 0:
            return out
        # Windows ending before the first finite row + L - 1 contain warm-up rows: skip them (NaN).
        first_end = max(length - 1, int(finite[0]) + length - 1)
        if first_end >= n:
            return out
        views = _row_windows(selected, length)  # (n - L + 1, L, F), zero copy
        batch = self.infer_batch(views[first_end - length + 1 :])
        out.vectors[first_end:] = batch.vectors
        out.probs[first_end:] = batch.probs
        out.quantiles[first_end:] = batch.quantiles
        return out

    def __repr__(self) -> str:
        c = self.config.rde
        return (
            f"RegimeModelBundle({self._name}: L={self.window_length}, F={len(self.input_names)}, "
            f"d_model={c.d_model}, layers={c.n_layers}, heads={c.n_heads}, latent={c.latent_dim}, "
            f"h={self.horizon})"
        )


def n_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters())


def windows_from_rows(rows: np.ndarray, length: int) -> np.ndarray:
    """Read-only ``(n - L + 1, L, F)`` view of ``(n, F)`` rows (zero copy); see ``sage.features.windows``."""
    return _row_windows(np.ascontiguousarray(rows), length)
