"""Gradient x input of an agent's signal strength, computed analytically (numba, float64) without torch.

Why: ``AgentEnsemble.attributions`` used to run an eager torch forward plus ``torch.autograd.grad`` per
agent (~1.7 ms each, three agents per trading decision), one of the largest costs of a full backtest.
The actor is small and fixed (``sage.models.policy.Actor``), so its gradient is written out by hand
here and evaluated in one numba call on the *same* weights as the inference engine, in its packed layout
(``sage.agents.engine.pack_actor``) but in float64, so the result is the float64 gradient of the float32
network.

The network (``L`` rows, ``F`` features, ``D`` projection, ``H`` LSTM hidden, ``A`` account, ``Hh`` head
hidden, ``K = 5`` actions with directions ``d = -2..2``)::

    tok_t   = W_p x_t + b_p                                    (projection, per row)
    h^f_t   = LSTM_fwd(tok_0 .. tok_t),  h^b_t = LSTM_bwd(tok_t .. tok_{L-1})   (zero initial state)
    e       = [h^f_{L-1}, h^b_0]                               (window summary, 2H)
    z       = [e, x_{L-1}, account]                            (the newest row skips the encoder)
    u       = tanh(W_1 z + b_1);  logits = W_2 u + b_2;  p = softmax(logits)
    s       = sum_a p_a d_a / 2                                (the strength)

and its reverse pass::

    ds/dlogits_a = p_a (d_a / 2 - s)
    ds/du = W_2^T ds/dlogits;  ds/dz = W_1^T (ds/du * (1 - u^2))
    ds/dx_{L-1} += ds/dz[2H : 2H+F];  ds/dh^f_{L-1}, ds/dh^b_0 = ds/dz[:H], ds/dz[H:2H]
    LSTM, per direction, back through time (gates i, f, g, o; c_t = f c_{t-1} + i g, h_t = o tanh c_t):
        dc += dh o (1 - tanh^2 c_t);  d_o = dh tanh c_t;  d_i = dc g;  d_g = dc i;  d_f = dc c_{t-1}
        pre-activation: d_i i(1-i), d_f f(1-f), d_g (1-g^2), d_o o(1-o)  -> dpre (4H)
        ds/dtok_t += W_ih^T dpre;  dh <- W_hh^T dpre;  dc <- dc f
    ds/dx_t += W_p^T ds/dtok_t

``score = ds/dx * x``. Agreement with torch autograd on a float64 copy of the actor: ~1e-12 relative
(tested to 1e-9); with the float32 actor: ~1e-6 (float32 rounding of torch).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from sage.agents.engine import pack_actor

# dims layout (as ``sage.agents.engine``)
_F, _D, _H, _A, _HH, _K = range(6)


def pack_actor64(actor: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(params float64[P], dims int64[6])`` of one ``Actor`` in the engine's layout (``pack_actor``).

    Packed here rather than widened from the engine's float32 vector: the engine stores the LSTM bias
    ``b_ih + b_hh`` summed in float32, a rounding (~1e-8) that a float64 gradient should not inherit.
    """
    enc, lstm = actor.encoder, actor.encoder.lstm
    head1, head2 = actor.head[0], actor.head[2]

    def t64(tensor: Any) -> np.ndarray:
        return tensor.detach().cpu().double().numpy()

    parts = [t64(enc.proj.weight).T, t64(enc.proj.bias)]
    for suffix in ("", "_reverse"):
        parts += [
            t64(getattr(lstm, f"weight_ih_l0{suffix}")).T,
            t64(getattr(lstm, f"weight_hh_l0{suffix}")).T,
            t64(getattr(lstm, f"bias_ih_l0{suffix}")) + t64(getattr(lstm, f"bias_hh_l0{suffix}")),
        ]
    parts += [t64(head1.weight).T, t64(head1.bias), t64(head2.weight).T, t64(head2.bias)]
    params = np.concatenate([np.ascontiguousarray(p).ravel() for p in parts])
    _, dims = pack_actor(actor)
    if params.size != pack_actor(actor)[0].size:  # pragma: no cover - guards the shared layout
        raise AssertionError("pack_actor64 layout diverged from sage.agents.engine.pack_actor")
    return params, dims


@njit(cache=True, inline="always")
def _sigmoid(x):  # pragma: no cover - numba
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@njit(cache=True)
def strength_gradient(p, dims, x, account, directions, grad):  # pragma: no cover - numba
    """Strength ``s`` of one observation; writes ``ds/dx`` into ``grad (L, F)`` (float64). Returns ``s``.

    ``p``/``dims``: :func:`pack_actor64`; ``x (L, F)`` and ``account (A)`` float64 (finite: the caller
    checks); ``directions (K)`` the action directions. One forward pass caches every LSTM step's gates
    and cell state; the reverse pass is the one in the module docstring.
    """
    f_in, d, hdim, adim, hh, k_act = dims[_F], dims[_D], dims[_H], dims[_A], dims[_HH], dims[_K]
    length = x.shape[0]
    g4 = 4 * hdim
    wp = p[0 : f_in * d].reshape((f_in, d))
    bp = p[f_in * d : f_in * d + d]
    o = f_in * d + d
    # -- forward: projection
    tok = np.empty((length, d))
    for t in range(length):
        for j in range(d):
            tok[t, j] = bp[j]
        for i in range(f_in):
            xv = x[t, i]
            for j in range(d):
                tok[t, j] += xv * wp[i, j]
    # -- forward: both LSTM directions, caching activated gates, cell states and tanh(cell)
    offs = np.empty(2, np.int64)
    acts = np.empty((2, length, g4))
    cells = np.empty((2, length, hdim))
    tanhc = np.empty((2, length, hdim))
    emb = np.empty(2 * hdim)
    pre = np.empty(g4)
    h = np.empty(hdim)
    c = np.empty(hdim)
    for r in range(2):
        offs[r] = o
        w_ih = p[o : o + d * g4].reshape((d, g4))
        w_hh = p[o + d * g4 : o + d * g4 + hdim * g4].reshape((hdim, g4))
        bias = p[o + d * g4 + hdim * g4 : o + d * g4 + hdim * g4 + g4]
        o += d * g4 + hdim * g4 + g4
        h[:] = 0.0
        c[:] = 0.0
        for s in range(length):
            t = length - 1 - s if r == 1 else s
            for j in range(g4):
                pre[j] = bias[j]
            for i in range(d):
                tv = tok[t, i]
                for j in range(g4):
                    pre[j] += tv * w_ih[i, j]
            for i in range(hdim):
                hv = h[i]
                for j in range(g4):
                    pre[j] += hv * w_hh[i, j]
            for j in range(hdim):
                gi = _sigmoid(pre[j])
                gf = _sigmoid(pre[hdim + j])
                gg = math.tanh(pre[2 * hdim + j])
                go = _sigmoid(pre[3 * hdim + j])
                acts[r, t, j] = gi
                acts[r, t, hdim + j] = gf
                acts[r, t, 2 * hdim + j] = gg
                acts[r, t, 3 * hdim + j] = go
                c[j] = gf * c[j] + gi * gg
                tc = math.tanh(c[j])
                cells[r, t, j] = c[j]
                tanhc[r, t, j] = tc
                h[j] = go * tc
        for j in range(hdim):
            emb[r * hdim + j] = h[j]
    # -- forward: head
    zdim = 2 * hdim + f_in + adim
    z = np.empty(zdim)
    for j in range(2 * hdim):
        z[j] = emb[j]
    for j in range(f_in):
        z[2 * hdim + j] = x[length - 1, j]
    for j in range(adim):
        z[2 * hdim + f_in + j] = account[j]
    w1 = p[o : o + zdim * hh].reshape((zdim, hh))
    o += zdim * hh
    b1 = p[o : o + hh]
    o += hh
    w2 = p[o : o + hh * k_act].reshape((hh, k_act))
    o += hh * k_act
    b2 = p[o : o + k_act]
    u = np.empty(hh)
    for j in range(hh):
        u[j] = b1[j]
    for i in range(zdim):
        zv = z[i]
        for j in range(hh):
            u[j] += zv * w1[i, j]
    for j in range(hh):
        u[j] = math.tanh(u[j])
    logits = np.empty(k_act)
    for j in range(k_act):
        logits[j] = b2[j]
    for i in range(hh):
        for j in range(k_act):
            logits[j] += u[i] * w2[i, j]
    mx = logits.max()
    probs = np.empty(k_act)
    total = 0.0
    for j in range(k_act):
        probs[j] = math.exp(logits[j] - mx)
        total += probs[j]
    strength = 0.0
    for j in range(k_act):
        probs[j] /= total
        strength += probs[j] * directions[j]
    strength *= 0.5
    # -- backward: softmax + head
    dlog = np.empty(k_act)
    for j in range(k_act):
        dlog[j] = probs[j] * (0.5 * directions[j] - strength)
    du = np.empty(hh)
    for i in range(hh):
        acc = 0.0
        for j in range(k_act):
            acc += w2[i, j] * dlog[j]
        du[i] = acc * (1.0 - u[i] * u[i])
    dz = np.empty(zdim)
    for i in range(zdim):
        acc = 0.0
        for j in range(hh):
            acc += w1[i, j] * du[j]
        dz[i] = acc
    for t in range(length):
        for j in range(f_in):
            grad[t, j] = 0.0
    for j in range(f_in):  # the residual path: the newest row feeds the head directly
        grad[length - 1, j] = dz[2 * hdim + j]
    # -- backward: both LSTM directions through time. Weights are used transposed so every inner loop is
    # an axpy over contiguous memory (vectorises; a dot-product reduction would not, without fast-math).
    dtok = np.zeros((length, d))
    dh = np.empty(hdim)
    dc = np.empty(hdim)
    dpre = np.empty((length, g4))
    for r in range(2):
        base = offs[r]
        w_iht = np.ascontiguousarray(p[base : base + d * g4].reshape((d, g4)).T)  # (4H, D)
        w_hht = np.ascontiguousarray(p[base + d * g4 : base + d * g4 + hdim * g4].reshape((hdim, g4)).T)
        for j in range(hdim):
            dh[j] = dz[r * hdim + j]
            dc[j] = 0.0
        for s in range(length - 1, -1, -1):
            t = length - 1 - s if r == 1 else s
            tp = t + 1 if r == 1 else t - 1  # the step processed before t (state c_{t-1} of this direction)
            for j in range(hdim):
                gi = acts[r, t, j]
                gf = acts[r, t, hdim + j]
                gg = acts[r, t, 2 * hdim + j]
                go = acts[r, t, 3 * hdim + j]
                tc = tanhc[r, t, j]
                c_prev = cells[r, tp, j] if s > 0 else 0.0
                dcj = dc[j] + dh[j] * go * (1.0 - tc * tc)
                dpre[t, j] = dcj * gg * gi * (1.0 - gi)
                dpre[t, hdim + j] = dcj * c_prev * gf * (1.0 - gf)
                dpre[t, 2 * hdim + j] = dcj * gi * (1.0 - gg * gg)
                dpre[t, 3 * hdim + j] = dh[j] * tc * go * (1.0 - go)
                dc[j] = dcj * gf
            for i in range(hdim):
                dh[i] = 0.0
            for j in range(g4):  # dh <- W_hh^T dpre
                dv = dpre[t, j]
                for i in range(hdim):
                    dh[i] += dv * w_hht[j, i]
        for t in range(length):  # dtok += W_ih^T dpre, off the recurrent path
            for j in range(g4):
                dv = dpre[t, j]
                for i in range(d):
                    dtok[t, i] += dv * w_iht[j, i]
    # -- backward: projection, grad += W_p^T dtok
    wpt = np.ascontiguousarray(wp.T)  # (D, F)
    for t in range(length):
        for j in range(d):
            dv = dtok[t, j]
            for i in range(f_in):
                grad[t, i] += dv * wpt[j, i]
    return strength


def gradient_x_input(
    params: np.ndarray, dims: np.ndarray, matrix: np.ndarray, account: np.ndarray, directions: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """``(grad (L, F), score = grad * matrix (L, F), strength)`` in float64 for one finite observation.

    The inputs are used as the network reads them: rounded to float32 first (the actor's dtype), then
    widened, so the gradient is evaluated at exactly the point the engine evaluates the policy.
    """
    x = np.asarray(matrix, dtype=np.float32).astype(np.float64)
    a = np.asarray(account, dtype=np.float32).astype(np.float64)
    grad = np.empty_like(x)
    strength = strength_gradient(params, dims, x, a, np.asarray(directions, dtype=np.float64), grad)
    return grad, grad * x, float(strength)


_SCAN_TOP_K = 16
"""Up to this ``top_k``, :func:`top_cells` scans (O(k n), ~1 us); beyond it, one stable argsort."""


@njit(cache=True)
def _top_cells_scan(score, k):  # pragma: no cover - numba
    """``k`` repeated scans for the largest remaining ``|score|``; strict ``>`` keeps the first of ties."""
    flat = score.ravel()
    n = flat.size
    taken = np.zeros(n, np.bool_)
    out = np.empty(k, np.int64)
    for r in range(k):
        best = -1
        best_v = -1.0
        for i in range(n):
            v = abs(flat[i])
            if not taken[i] and v > best_v:
                best, best_v = i, v
        taken[best] = True
        out[r] = best
    return out


def top_cells(score: np.ndarray, top_k: int) -> np.ndarray:
    """Flat indices of the ``top_k`` cells by decreasing ``|score|`` (ties: row-major order, stable).

    ``score`` must be finite (``AgentEnsemble.attributions`` checks its inputs).
    """
    k = min(max(int(top_k), 0), score.size)
    if k <= _SCAN_TOP_K:
        return _top_cells_scan(np.ascontiguousarray(score, dtype=np.float64), k)
    return np.argsort(-np.abs(score), axis=None, kind="stable")[:k]


def torch_strength_gradient(
    actor: Any, matrix: np.ndarray, account: np.ndarray, directions: np.ndarray, *, dtype: Any = None
) -> tuple[np.ndarray, float]:
    """Reference ``(ds/dx (L, F), strength)`` by torch autograd on ``actor`` (tests and the benchmark only).

    ``dtype`` (default float32, the actor's own) evaluates a converted copy of the actor, e.g.
    ``torch.float64`` for the tight comparison; the inputs are float32-rounded as in
    :func:`gradient_x_input`.
    """
    import copy

    import torch

    dtype = torch.float32 if dtype is None else dtype
    net = actor if dtype == torch.float32 else copy.deepcopy(actor).to(dtype)
    x32 = np.asarray(matrix, dtype=np.float32)
    a32 = np.asarray(account, dtype=np.float32)
    x = torch.tensor(x32, dtype=dtype).unsqueeze(0).requires_grad_(True)
    acc = torch.tensor(a32, dtype=dtype).unsqueeze(0)
    with torch.enable_grad():
        probs = torch.softmax(net(x, acc), dim=1)[0]
        strength = (probs * torch.tensor(np.asarray(directions), dtype=dtype)).sum() / 2.0
        (grad,) = torch.autograd.grad(strength, x)
    return grad[0].detach().numpy().astype(np.float64), float(strength.detach())
