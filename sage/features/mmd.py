"""Streaming maximum-mean-discrepancy (MMD) features: "do the last bars look like the ones before?".

MMD with a Gaussian kernel compares two *samples* of per-bar descriptors without assuming a
parametric form, so it reacts to shifts in volatility, skew, range behaviour or return/vol
co-movement alike. That makes it a cheap, model-free regime-change signal.

Why random Fourier features (RFF): the exact quadratic-time MMD between a 20-bar window and a 500-bar
window costs ~10^5 kernel evaluations per bar. With a fixed feature map ``z`` (``E[z(x).z(y)] = k(x, y)``)
the MMD becomes the distance between *mean feature vectors*, and those means are maintained as running
sums over ring buffers: each bar costs one feature evaluation ``O(D * d)`` plus ``O(D)`` sum updates,
independent of the window lengths.

Descriptors (``d = 4`` per bar ``t``, ``pc`` = previous valid close)
-------------------------------------------------------------------
``c/pc - 1`` (return), ``log(c/pc)`` (log return), ``(h - l)/pc`` (range), and the population standard
deviation of the last ``vol_window`` log returns (rolling vol). The first descriptor is produced at the
``vol_window``-th bar after the first one.

Windows (descriptor index ``i``, newest last)
---------------------------------------------
recent = the last ``recent_window`` descriptors; reference ``r`` (for each ``r`` in ``ref_windows``) =
the ``r`` descriptors immediately *before* the recent window. A ring keeps the last
``L = recent_window + max(ref_windows)`` descriptors.

Causal calibration (identical in batch and streaming because it is keyed on the descriptor count)
-------------------------------------------------------------------------------------------------
When the ring first fills, and every ``refresh_every`` descriptors after that, the kernel recalibrates
from the ``L`` descriptors currently in the ring (all in the past):

* standardisation: per-descriptor mean and population std over the ring (a zero or non-finite std is
  replaced by 1 so a constant descriptor simply contributes nothing);
* bandwidth (median heuristic): ``sigma`` = median Euclidean distance over all pairs of
  ``bandwidth_sample`` standardised descriptors taken at evenly spaced ring positions (1.0 if that
  median is 0); the kernel is ``k(x, y) = exp(-|x - y|^2 / (2 sigma^2))`` on standardised descriptors;
* then every stored feature vector and every window sum is recomputed from the raw ring, so all
  vectors inside a window always share one mapping (this also resets floating-point drift of the running
  sums). Values therefore move in a small step at a recalibration bar; that is the price of adapting.

Feature map: ``D = 2 * n_frequencies`` features
``z(x) = [cos(w_k . x), sin(w_k . x)]_k / sqrt(n_frequencies)`` with ``w_k = W0[:, k] / sigma`` and
``W0`` drawn once from ``seed`` as *orthogonal random features* (blocks of ``d`` orthogonal directions
with chi(d)-distributed norms; same marginal law as i.i.d. Gaussian frequencies, lower variance).
``z(x).z(x) = 1`` exactly, like ``k(x, x)``. Centring by the ring mean only rotates each cos/sin pair,
which leaves the distances unchanged; it is done to keep angles small. Sine and cosine use an in-house
range-reduced polynomial (abs. error < 1e-13) instead of libm: it compiles to SIMD code (~6x faster
than libm calls here) and its bits do not depend on the platform's math library.

Output (``columns(params)``): for each reference window ``r`` a column ``mmd2_ref{r}``
    ``|mean z(recent) - mean z(ref_r)|^2``: the RFF estimate of the *biased* (V-statistic) MMD^2
    ``mean K_xx + mean K_yy - 2 mean K_xy`` (diagonals included) on the same windows with the same
    standardisation and bandwidth. Over the random draw of ``W0`` its expectation is exactly that
    biased MMD^2. It is >= 0 and <= 4. With the defaults (32 frequencies) the measured error against
    the exact value is ~11 % of its mean (mean abs. error ~0.010 on ``mmd2_ref100``, ~0.023 on
    ``mmd2_ref500``), correlation ~0.99; the tests assert relative MAE < 0.15, correlation > 0.97
    (details in ``docs/fvg_mmd.md``).

Warm-up and invalid bars
------------------------
Outputs are NaN for the first ``warmup_bars(params) = vol_window + L - 1`` valid bars (until the first
calibration). A bar is *invalid* if any of ``o, h, l, c, v`` is non-finite, ``c <= 0``, or a descriptor
would be non-finite; it yields NaN outputs and leaves the state untouched (the next valid bar's return
is taken against the last valid close). Volume is unused but checked so that every sage kernel agrees
on which bars exist.

State layout (float64; offsets from :func:`_layout`)
----------------------------------------------------
header ``[0]`` valid bars, ``[1]`` previous close, ``[2]`` descriptors produced, ``[3]`` sigma
(0 = not calibrated); ``mu[d]``, ``scale[d]``; ring of ``vol_window`` log returns; ``W0[d, nf]``
(seeded, fixed); effective projection ``A[d, nf] = W0 / (sigma * scale)``; descriptor ring ``[L, d]``;
feature ring ``[L, D]``; window sums ``[1 + n_refs, D]`` (recent first); scratch ``[D]``.
"""

from __future__ import annotations

import math

import msgspec
import numpy as np
from numba import njit

__all__ = [
    "N_DESCRIPTORS",
    "MmdParams",
    "MmdStream",
    "batch",
    "calibration",
    "columns",
    "exact_mmd2",
    "init_state",
    "ring_descriptors",
    "state_size",
    "step",
    "warmup_bars",
]

#: Descriptors per bar: return, log return, range / previous close, rolling vol.
N_DESCRIPTORS: int = 4

# Parameter vector indices (``MmdParams.as_array``); reference window lengths follow at _P_REFS.
_P_RECENT = 0
_P_VOL_WINDOW = 1
_P_NFREQ = 2
_P_BW_SAMPLE = 3
_P_REFRESH = 4
_P_NREFS = 5
_P_REFS = 6

# State header.
_S_NBARS = 0
_S_PREV_CLOSE = 1
_S_NDESC = 2
_S_SIGMA = 3
_HEADER = 4

# Cody-Waite split of pi/2 (fdlibm's pio2_1 / pio2_1t) for the range reduction.
_TWO_OVER_PI = 0.63661977236758134308
_PIO2_HI = 1.57079632673412561417e00
_PIO2_LO = 6.07710050650619224932e-11
_ANGLE_LIMIT = 1.0e15
# Taylor coefficients of sin (r^3 .. r^13) and cos (r^2 .. r^14); truncation < 3e-14 on [-pi/4, pi/4].
_S1 = -1.0 / 6.0
_S2 = 1.0 / 120.0
_S3 = -1.0 / 5040.0
_S4 = 1.0 / 362880.0
_S5 = -1.0 / 39916800.0
_S6 = 1.0 / 6227020800.0
_C1 = -0.5
_C2 = 1.0 / 24.0
_C3 = -1.0 / 720.0
_C4 = 1.0 / 40320.0
_C5 = -1.0 / 3628800.0
_C6 = 1.0 / 479001600.0
_C7 = -1.0 / 87178291200.0


class MmdParams(msgspec.Struct, frozen=True, kw_only=True):
    """Windows, feature-map size and calibration schedule of the MMD kernel.

    Frozen so the batch and the live path provably share one configuration.
    """

    recent_window: int = 20
    """Bars in the recent window compared against each reference window (default 20)."""
    ref_windows: tuple[int, ...] = (100, 500)
    """Reference window lengths, each covering the bars just before the recent window (default (100, 500):
    the last ~2 hours and ~8 hours of 1-minute bars)."""
    vol_window: int = 20
    """Log returns in the rolling-vol descriptor (default 20)."""
    n_frequencies: int = 32
    """Random frequencies; features are ``2 * n_frequencies`` (cos and sin). Default 32: ~10 % relative
    error for ~0.35 us/bar; 64 halves the error for ~1.5x the cost (see docs/fvg_mmd.md)."""
    bandwidth_sample: int = 64
    """Ring descriptors used for the median-heuristic bandwidth, ``m (m-1) / 2`` pairwise distances
    (default 64)."""
    refresh_every: int = 1000
    """Descriptors between recalibrations of standardisation and bandwidth (default 1000). Each costs
    ~70 us, so this trades adaptivity against amortised cost and the latency of 0.1 % of bars."""
    seed: int = 20240611
    """Seed of the fixed random projection (default 20240611); part of the feature definition, so
    models trained on one seed must be served with the same one."""

    def __post_init__(self) -> None:
        """Reject configurations whose windows or ring would be empty or inconsistent."""
        if not isinstance(self.ref_windows, tuple):
            raise TypeError("MmdParams.ref_windows must be a tuple (the struct is frozen and hashable)")
        for name in (
            "recent_window",
            "vol_window",
            "n_frequencies",
            "bandwidth_sample",
            "refresh_every",
            "seed",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"MmdParams.{name} must be an int, got {value!r}")
        for r in self.ref_windows:
            if isinstance(r, bool) or not isinstance(r, int):
                raise TypeError(f"MmdParams.ref_windows must hold ints, got {r!r}")
        if self.recent_window < 2:
            raise ValueError("MmdParams.recent_window must be >= 2")
        if len(self.ref_windows) == 0 or min(self.ref_windows) < 2:
            raise ValueError("MmdParams.ref_windows must be non-empty, each >= 2")
        if len(set(self.ref_windows)) != len(self.ref_windows):
            raise ValueError("MmdParams.ref_windows must be distinct (they name the columns)")
        if self.vol_window < 2:
            raise ValueError("MmdParams.vol_window must be >= 2")
        if self.n_frequencies < 1:
            raise ValueError("MmdParams.n_frequencies must be >= 1")
        if not 2 <= self.bandwidth_sample <= self.ring_length:
            raise ValueError("MmdParams.bandwidth_sample must be in [2, recent_window + max(ref_windows)]")
        if self.refresh_every < 1:
            raise ValueError("MmdParams.refresh_every must be >= 1")

    @property
    def ring_length(self) -> int:
        """Descriptors kept: the recent window plus the longest reference window."""
        return self.recent_window + max(self.ref_windows)

    def as_array(self) -> np.ndarray:
        """Pack the fields :func:`step` reads into a float64 vector (``_P_*`` indices)."""
        p = np.empty(_P_REFS + len(self.ref_windows), dtype=np.float64)
        p[_P_RECENT] = self.recent_window
        p[_P_VOL_WINDOW] = self.vol_window
        p[_P_NFREQ] = self.n_frequencies
        p[_P_BW_SAMPLE] = self.bandwidth_sample
        p[_P_REFRESH] = self.refresh_every
        p[_P_NREFS] = len(self.ref_windows)
        p[_P_REFS:] = self.ref_windows
        return p


def columns(params: MmdParams | None = None) -> tuple[str, ...]:
    """One column per reference window, ``mmd2_ref{length}``, in ``ref_windows`` order."""
    params = params if params is not None else MmdParams()
    return tuple(f"mmd2_ref{r}" for r in params.ref_windows)


def warmup_bars(params: MmdParams) -> int:
    """Leading valid bars with NaN output: vol history, then a full ring before the first calibration."""
    return params.vol_window + params.ring_length - 1


@njit(cache=True)
def _layout(p: np.ndarray) -> tuple[int, int, int, int, int, int, int, int, int, int, int]:
    """State offsets derived from the parameter vector; see the module docstring."""
    d = 4
    vol_window = int(p[_P_VOL_WINDOW])
    nf = int(p[_P_NFREQ])
    n_refs = int(p[_P_NREFS])
    max_ref = 0
    for j in range(n_refs):
        r = int(p[_P_REFS + j])
        max_ref = max(max_ref, r)
    ring = int(p[_P_RECENT]) + max_ref
    mu_off = _HEADER
    scale_off = mu_off + d
    lr_off = scale_off + d
    w0_off = lr_off + vol_window
    a_off = w0_off + d * nf
    x_off = a_off + d * nf
    z_off = x_off + ring * d
    sums_off = z_off + ring * 2 * nf
    scratch_off = sums_off + (1 + n_refs) * 2 * nf
    size = scratch_off + 2 * nf
    return mu_off, scale_off, lr_off, w0_off, a_off, x_off, z_off, sums_off, scratch_off, ring, size


def _orthogonal_frequencies(d: int, nf: int, seed: int) -> np.ndarray:
    """``W0`` of shape ``(d, nf)``: orthogonal blocks scaled by chi(d) norms (Yu et al., 2016).

    Each column is marginally N(0, I_d), so the kernel expectation is unchanged, while orthogonality
    within a block removes part of the Monte-Carlo variance of the kernel estimate.
    """
    rng = np.random.default_rng(seed)
    blocks = []
    for _ in range((nf + d - 1) // d):
        q, r = np.linalg.qr(rng.standard_normal((d, d)))
        q = q * np.sign(np.diag(r))[None, :]  # Haar-distributed orthogonal matrix
        norms = np.sqrt(rng.chisquare(d, size=d))
        blocks.append(q * norms[None, :])
    return np.ascontiguousarray(np.concatenate(blocks, axis=1)[:, :nf])


def state_size(params: MmdParams) -> int:
    """Length of the state vector for ``params`` (layout in the module docstring)."""
    return int(_layout(params.as_array())[-1])


def init_state(params: MmdParams) -> np.ndarray:
    """Fresh state with the seeded projection in place and nothing calibrated yet."""
    p = params.as_array()
    _, _, _, w0_off, _, _, _, _, _, _, size = _layout(p)
    state = np.zeros(size, dtype=np.float64)
    nf = params.n_frequencies
    state[w0_off : w0_off + N_DESCRIPTORS * nf] = _orthogonal_frequencies(
        N_DESCRIPTORS, nf, params.seed
    ).ravel()
    return state


@njit(cache=True)
def _sincos(a: float) -> tuple[float, float]:
    """(sin a, cos a) via Cody-Waite reduction to [-pi/4, pi/4] and Taylor polynomials.

    Branch-free so loops over frequencies vectorise; deterministic bits independent of libm.
    Angles with ``|a| >= 1e15`` (or NaN) are mapped to 0: no meaningful phase survives there.
    """
    if not abs(a) < _ANGLE_LIMIT:
        a = 0.0
    q = math.floor(a * _TWO_OVER_PI + 0.5)
    r = (a - q * _PIO2_HI) - q * _PIO2_LO
    r2 = r * r
    s = r + r * r2 * (_S1 + r2 * (_S2 + r2 * (_S3 + r2 * (_S4 + r2 * (_S5 + r2 * _S6)))))
    co = 1.0 + r2 * (_C1 + r2 * (_C2 + r2 * (_C3 + r2 * (_C4 + r2 * (_C5 + r2 * (_C6 + r2 * _C7))))))
    qi = np.int64(q) & 3
    if qi & 1:
        sv = co
        cv = s
    else:
        sv = s
        cv = co
    if qi & 2:
        sv = -sv
    if (qi + 1) & 2:
        cv = -cv
    return sv, cv


# Why unsigned offsets in the helpers below: numba wraps negative *signed* indices, which makes the
# addresses non-affine and stops LLVM from vectorising loops that read and write the one state vector.
# With ``uint64`` indices the loops compile to SIMD code with a runtime overlap check, and avoiding
# array views saves their construction and reference counting. Never mix uint64 with int64 operands
# here (numba would promote to float64): every offset is converted once at the top of each helper.
_U = np.uint64


@njit(cache=True)
def _features(state: np.ndarray, a_off: int, mu_off: int, x_off: int, z_off: int, nf: int) -> None:
    """Write ``z(x)`` (``2 nf`` values at ``z_off``) for the raw descriptor stored at ``x_off``."""
    x0 = state[x_off] - state[mu_off]
    x1 = state[x_off + 1] - state[mu_off + 1]
    x2 = state[x_off + 2] - state[mu_off + 2]
    x3 = state[x_off + 3] - state[mu_off + 3]
    norm = 1.0 / math.sqrt(nf)
    n = _U(nf)
    a0 = _U(a_off)
    a1 = a0 + n
    a2 = a1 + n
    a3 = a2 + n
    zc = _U(z_off)
    zs = zc + n
    for k in range(n):
        ang = state[a0 + k] * x0 + state[a1 + k] * x1 + state[a2 + k] * x2 + state[a3 + k] * x3
        sv, cv = _sincos(ang)
        state[zc + k] = cv * norm
        state[zs + k] = sv * norm


@njit(cache=True)
def _fill(state: np.ndarray, dst: int, n: int, value: float) -> None:
    """``state[dst : dst + n] = value``."""
    d = _U(dst)
    for k in range(_U(n)):
        state[d + k] = value


@njit(cache=True)
def _copy(state: np.ndarray, dst: int, src: int, n: int) -> None:
    """``state[dst : dst + n] = state[src : src + n]`` (ranges must not overlap)."""
    d = _U(dst)
    s = _U(src)
    for k in range(_U(n)):
        state[d + k] = state[s + k]


@njit(cache=True)
def _add_into(state: np.ndarray, acc: int, row: int, n: int) -> None:
    """``state[acc : acc + n] += state[row : row + n]``."""
    a = _U(acc)
    r = _U(row)
    for k in range(_U(n)):
        state[a + k] += state[r + k]


@njit(cache=True)
def _slide(state: np.ndarray, acc: int, incoming: int, outgoing: int, n: int) -> None:
    """``acc += incoming - outgoing`` over ``n`` values: a window sum advancing by one descriptor."""
    a = _U(acc)
    i = _U(incoming)
    o = _U(outgoing)
    for k in range(_U(n)):
        state[a + k] += state[i + k] - state[o + k]


@njit(cache=True)
def _sq_dist_means(state: np.ndarray, sa: int, na: float, sb: int, nb: float, n: int) -> float:
    """``|S_a / na - S_b / nb|^2`` for two window sums of length ``n`` (distance of mean embeddings).

    Four interleaved accumulators in a fixed order: shorter dependency chains than one running sum,
    and still one exactly defined IEEE result (no reassociation is left to the compiler).
    """
    inv_a = 1.0 / na
    inv_b = 1.0 / nb
    a = _U(sa)
    b = _U(sb)
    nu = _U(n)
    m = nu - nu % _U(4)
    acc0 = 0.0
    acc1 = 0.0
    acc2 = 0.0
    acc3 = 0.0
    for k in range(_U(0), m, _U(4)):
        e0 = state[a + k] * inv_a - state[b + k] * inv_b
        e1 = state[a + k + _U(1)] * inv_a - state[b + k + _U(1)] * inv_b
        e2 = state[a + k + _U(2)] * inv_a - state[b + k + _U(2)] * inv_b
        e3 = state[a + k + _U(3)] * inv_a - state[b + k + _U(3)] * inv_b
        acc0 += e0 * e0
        acc1 += e1 * e1
        acc2 += e2 * e2
        acc3 += e3 * e3
    for k in range(m, nu):
        e = state[a + k] * inv_a - state[b + k] * inv_b
        acc0 += e * e
    return (acc0 + acc1) + (acc2 + acc3)


@njit(cache=True)
def _mean_std(state: np.ndarray, off: int, n: int, stride: int) -> tuple[float, float]:
    """Population mean and std of ``state[off + i * stride]``, ``i < n`` (two passes, no drift)."""
    s = 0.0
    for i in range(n):
        s += state[off + i * stride]
    mean = s / n
    ss = 0.0
    for i in range(n):
        dev = state[off + i * stride] - mean
        ss += dev * dev
    return mean, math.sqrt(ss / n)


@njit(cache=True)
def _recalibrate(state: np.ndarray, p: np.ndarray) -> None:
    """Re-derive standardisation, bandwidth, all ring features and all window sums from the raw ring."""
    d = 4
    mu_off, scale_off, _, w0_off, a_off, x_off, z_off, sums_off, _, ring, _ = _layout(p)
    nf = int(p[_P_NFREQ])
    dz = 2 * nf
    recent = int(p[_P_RECENT])
    n_refs = int(p[_P_NREFS])
    m = int(p[_P_BW_SAMPLE])
    n_desc = int(state[_S_NDESC])
    first = n_desc - ring  # descriptor index of the oldest ring entry

    for j in range(d):
        mean, sd = _mean_std(state, x_off + j, ring, d)
        if not (sd > 0.0 and math.isfinite(sd)):
            sd = 1.0
        state[mu_off + j] = mean
        state[scale_off + j] = sd

    # Median heuristic on evenly spaced (chronological) ring entries.
    sample = np.empty((m, d), dtype=np.float64)
    for a in range(m):
        idx = first + (a * (ring - 1)) // (m - 1)
        row = x_off + (idx % ring) * d
        for j in range(d):
            sample[a, j] = (state[row + j] - state[mu_off + j]) / state[scale_off + j]
    dists = np.empty(m * (m - 1) // 2, dtype=np.float64)
    q = 0
    for a in range(m):
        for b in range(a + 1, m):
            acc = 0.0
            for j in range(d):
                diff = sample[a, j] - sample[b, j]
                acc += diff * diff
            dists[q] = math.sqrt(acc)
            q += 1
    sigma = np.median(dists)
    if not (sigma > 0.0 and math.isfinite(sigma)):
        sigma = 1.0
    state[_S_SIGMA] = sigma

    for j in range(d):
        inv = 1.0 / (sigma * state[scale_off + j])
        for k in range(nf):
            state[a_off + j * nf + k] = state[w0_off + j * nf + k] * inv

    for slot in range(ring):
        _features(state, a_off, mu_off, x_off + slot * d, z_off + slot * dz, nf)

    # Window sums from scratch, oldest to newest.
    _fill(state, sums_off, dz, 0.0)
    for i in range(n_desc - recent, n_desc):
        _add_into(state, sums_off, z_off + (i % ring) * dz, dz)
    for jr in range(n_refs):
        ref = int(p[_P_REFS + jr])
        base = sums_off + (1 + jr) * dz
        _fill(state, base, dz, 0.0)
        for i in range(n_desc - recent - ref, n_desc - recent):
            _add_into(state, base, z_off + (i % ring) * dz, dz)


@njit(cache=True)
def step(
    state: np.ndarray,
    p: np.ndarray,
    ts: int,
    o: float,
    h: float,
    l: float,
    c: float,
    v: float,
    out: np.ndarray,
) -> None:
    """Consume one bar, update ``state`` in place, write one MMD^2 per reference window into ``out``.

    ``ts`` is unused (windows are in bars) but kept for the shared kernel signature.
    """
    d = 4
    n_refs = int(p[_P_NREFS])
    valid = (
        math.isfinite(o) and math.isfinite(h) and math.isfinite(l) and math.isfinite(c) and math.isfinite(v)
    ) and c > 0.0
    if not valid:
        for j in range(n_refs):
            out[j] = math.nan
        return
    n_bars = int(state[_S_NBARS])
    if n_bars == 0:
        state[_S_PREV_CLOSE] = c
        state[_S_NBARS] = 1.0
        for j in range(n_refs):
            out[j] = math.nan
        return

    pc = state[_S_PREV_CLOSE]
    ratio = c / pc
    ret = ratio - 1.0
    lr = math.log(ratio)
    rng = (h - l) / pc
    if not (math.isfinite(ret) and math.isfinite(lr) and math.isfinite(rng)):
        for j in range(n_refs):
            out[j] = math.nan
        return

    mu_off, _, lr_off, _, a_off, x_off, z_off, sums_off, scratch_off, ring, _ = _layout(p)
    vol_window = int(p[_P_VOL_WINDOW])
    nf = int(p[_P_NFREQ])
    dz = 2 * nf
    recent = int(p[_P_RECENT])

    n_lr = n_bars  # log returns stored so far, this one included after the write below
    state[lr_off + (n_lr - 1) % vol_window] = lr
    state[_S_PREV_CLOSE] = c
    state[_S_NBARS] = float(n_bars + 1)

    if n_lr < vol_window:
        for j in range(n_refs):
            out[j] = math.nan
        return

    vol = _mean_std(state, lr_off, vol_window, 1)[1]

    i_new = int(state[_S_NDESC])
    slot = i_new % ring
    row = x_off + slot * d
    state[row] = ret
    state[row + 1] = lr
    state[row + 2] = rng
    state[row + 3] = vol
    n_desc = i_new + 1
    state[_S_NDESC] = float(n_desc)

    if n_desc < ring:
        for j in range(n_refs):
            out[j] = math.nan
        return

    if (n_desc - ring) % int(p[_P_REFRESH]) == 0:
        _recalibrate(state, p)
    else:
        _features(state, a_off, mu_off, row, scratch_off, nf)
        leaving = z_off + ((i_new - recent) % ring) * dz  # leaves recent, enters every reference window
        _slide(state, sums_off, scratch_off, leaving, dz)
        for jr in range(n_refs):
            ref = int(p[_P_REFS + jr])
            # For the longest window this row is ``slot`` itself, still holding descriptor i_new - ring.
            drop = z_off + ((i_new - recent - ref) % ring) * dz
            _slide(state, sums_off + (1 + jr) * dz, leaving, drop, dz)
        _copy(state, z_off + slot * dz, scratch_off, dz)

    for jr in range(n_refs):
        out[jr] = _sq_dist_means(
            state, sums_off, float(recent), sums_off + (1 + jr) * dz, p[_P_REFS + jr], dz
        )


@njit(cache=True)
def _batch_loop(
    state: np.ndarray,
    p: np.ndarray,
    ts: np.ndarray,
    o: np.ndarray,
    h: np.ndarray,
    l: np.ndarray,
    c: np.ndarray,
    v: np.ndarray,
    out: np.ndarray,
) -> None:
    """Run :func:`step` over every row; the only batch code path, so batch == streaming."""
    for i in range(ts.shape[0]):
        step(state, p, ts[i], o[i], h[i], l[i], c[i], v[i], out[i])


def batch(
    ts: np.ndarray,
    o: np.ndarray,
    h: np.ndarray,
    l: np.ndarray,
    c: np.ndarray,
    v: np.ndarray,
    params: MmdParams | None = None,
) -> np.ndarray:
    """Features for a whole history, shape ``(n, len(ref_windows))``, from a fresh state."""
    params = params if params is not None else MmdParams()
    ts_a = np.ascontiguousarray(ts, dtype=np.int64)
    n = ts_a.shape[0]
    arrays = [np.ascontiguousarray(x, dtype=np.float64) for x in (o, h, l, c, v)]
    for a in arrays:
        if a.shape != (n,):
            raise ValueError("ts, o, h, l, c, v must be 1-D and of equal length")
    out = np.empty((n, len(params.ref_windows)), dtype=np.float64)
    _batch_loop(init_state(params), params.as_array(), ts_a, *arrays, out)
    return out


class MmdStream:
    """Bar-by-bar wrapper around :func:`step` for live use and tests (own state per instance)."""

    def __init__(self, params: MmdParams | None = None) -> None:
        self.params = params if params is not None else MmdParams()
        self._p = self.params.as_array()
        self.state = init_state(self.params)
        self._k = len(self.params.ref_windows)

    @property
    def columns(self) -> tuple[str, ...]:
        """Names of the values returned by :meth:`update`."""
        return columns(self.params)

    def update(self, ts: int, o: float, h: float, l: float, c: float, v: float) -> np.ndarray:
        """Consume one closed bar and return one MMD^2 per reference window."""
        out = np.empty(self._k, dtype=np.float64)
        step(self.state, self._p, int(ts), float(o), float(h), float(l), float(c), float(v), out)
        return out


def calibration(state: np.ndarray, params: MmdParams) -> tuple[np.ndarray, np.ndarray, float]:
    """Current ``(mean, std, sigma)`` used to standardise descriptors; sigma is 0 before calibration.

    Exposed so that diagnostics and tests can evaluate the exact MMD with the very same bandwidth.
    """
    p = params.as_array()
    mu_off, scale_off = _layout(p)[:2]
    return (
        state[mu_off : mu_off + N_DESCRIPTORS].copy(),
        state[scale_off : scale_off + N_DESCRIPTORS].copy(),
        float(state[_S_SIGMA]),
    )


def ring_descriptors(state: np.ndarray, params: MmdParams) -> np.ndarray:
    """The raw descriptors in the ring, oldest first, shape ``(min(n_desc, L), 4)``.

    Rows ``[-recent_window:]`` are the recent window and ``[-recent_window - r : -recent_window]`` the
    reference window ``r``.
    """
    p = params.as_array()
    layout = _layout(p)
    x_off, ring = layout[5], layout[9]
    n_desc = int(state[_S_NDESC])
    x = state[x_off : x_off + ring * N_DESCRIPTORS].reshape(ring, N_DESCRIPTORS)
    idx = np.arange(max(0, n_desc - ring), n_desc) % ring
    return x[idx].copy()


def exact_mmd2(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """Exact biased (V-statistic) MMD^2 with kernel ``exp(-|a-b|^2 / (2 sigma^2))``; O(n^2) reference.

    ``x`` and ``y`` are already standardised samples of shape ``(n, d)`` and ``(m, d)``.
    """

    def gram_mean(a: np.ndarray, b: np.ndarray) -> float:
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=-1)
        return float(np.exp(-d2 / (2.0 * sigma * sigma)).mean())

    return gram_mean(x, x) + gram_mean(y, y) - 2.0 * gram_mean(x, y)
