"""Numba inference engine for the agents' policies: the torch weights, evaluated without torch.

Why not torch at inference: an eager torch forward of one 60-step bidirectional LSTM costs hundreds of
microseconds of dispatch overhead, and the three tactical agents run on every 5-minute bar. At load
time each actor's state dict is packed into one flat float32 vector (:func:`pack_actor`, layout below)
and :func:`act_group` evaluates a group of agents that read the same matrix (the three tactical, or the
two strategic) in **one** numba call: encoders, heads, and the centralised critic's values.

Determinism: every reduction runs in a fixed sequential order, no fast-math, float32 throughout, so the
output for an observation depends on nothing else (not on batch size, thread count or call history).
It agrees with the torch modules to ~1e-6 (tested); the torch modules remain the training graph.

Flat actor layout (``F`` input width, ``D`` projection, ``H`` LSTM hidden, ``A`` account, ``Hh`` head
hidden, ``K`` actions), every matrix stored transposed (input-major) so the inner loop runs over
contiguous outputs::

    proj_w (F, D) | proj_b (D) | fwd: w_ih (D, 4H) | w_hh (H, 4H) | b_ih + b_hh (4H) | bwd: same three
    | head1_w (2H + F + A, Hh) | head1_b (Hh) | head2_w (Hh, K) | head2_b (K)

Flat critic layout (``N`` agents, ``E = 2H``, ``Hc`` hidden)::

    w1 (N E + A, Hc) | b1 (Hc) | w2 (Hc, Hc) | b2 (Hc) | w3 (Hc, N) | b3 (N)
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit
from torch import nn

from sage.models.policy import Actor, MultiAgentPolicy

# dims layout of an actor group
_F, _D, _H, _A, _HH, _K = range(6)
# dims layout of the critic
_CN, _CE, _CA, _CH = range(4)

_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)


def _t(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().astype(np.float32)


def pack_actor(actor: Actor) -> tuple[np.ndarray, np.ndarray]:
    """``(params float32[P], dims int64[6])`` of one actor, in the layout of the module docstring."""
    enc, lstm = actor.encoder, actor.encoder.lstm
    c = enc.config
    head1, head2 = actor.head[0], actor.head[2]
    parts = [_t(enc.proj.weight).T, _t(enc.proj.bias)]
    for suffix in ("", "_reverse"):
        parts += [
            _t(getattr(lstm, f"weight_ih_l0{suffix}")).T,
            _t(getattr(lstm, f"weight_hh_l0{suffix}")).T,
            _t(getattr(lstm, f"bias_ih_l0{suffix}")) + _t(getattr(lstm, f"bias_hh_l0{suffix}")),
        ]
    parts += [_t(head1.weight).T, _t(head1.bias), _t(head2.weight).T, _t(head2.bias)]
    params = np.concatenate([np.ascontiguousarray(p).ravel() for p in parts]).astype(np.float32)
    account_dim = head1.in_features - c.out_dim - c.n_features
    dims = np.array([c.n_features, c.d_model, c.hidden, account_dim, head1.out_features, head2.out_features])
    return params, dims.astype(np.int64)


def pack_critic(critic: nn.Sequential, n_agents: int, embed_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``(params float32[P], dims int64[4])`` of the centralised critic."""
    l1, l2, l3 = critic[0], critic[2], critic[4]
    parts = [_t(l1.weight).T, _t(l1.bias), _t(l2.weight).T, _t(l2.bias), _t(l3.weight).T, _t(l3.bias)]
    params = np.concatenate([np.ascontiguousarray(p).ravel() for p in parts]).astype(np.float32)
    dims = np.array([n_agents, embed_dim, l1.in_features - n_agents * embed_dim, l1.out_features], np.int64)
    return params, dims


def pack_group(policy: MultiAgentPolicy, agents: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Stacked ``(params float32[G, P], dims int64[6])`` of agents that share input shapes."""
    packed = [pack_actor(policy.actors[a]) for a in agents]
    dims = packed[0][1]
    if any(not np.array_equal(d, dims) for _, d in packed):
        raise ValueError(f"agents {agents} do not share one architecture; they cannot be grouped")
    return np.stack([p for p, _ in packed]), dims


# Rational tanh approximation of Eigen's ``generic_fast_tanh_float`` -- the one PyTorch's vectorised CPU
# tanh uses. Pure arithmetic (no libm call), so LLVM vectorises the gate loop; it agrees with
# ``math.tanh`` to ~3e-7 absolute (tested). ``math.exp``/``math.tanh`` libm calls cost ~10-20 ns each and
# dominated the LSTM (3 agents x 120 steps x 40 activations per bar).
_TANH_CLAMP = np.float32(7.90531110763549805)
_A1 = np.float32(4.89352455891786e-03)
_A3 = np.float32(6.37261928875436e-04)
_A5 = np.float32(1.48572235717979e-05)
_A7 = np.float32(5.12229709037114e-08)
_A9 = np.float32(-8.60467152213735e-11)
_A11 = np.float32(2.00018790482477e-13)
_A13 = np.float32(-2.76076847742355e-16)
_B0 = np.float32(4.89352518554385e-03)
_B2 = np.float32(2.26843463243900e-03)
_B4 = np.float32(1.18534705686654e-04)
_B6 = np.float32(1.19825839466702e-06)
_HALF = np.float32(0.5)


@njit(cache=True, inline="always", error_model="numpy")
def _tanh(x):  # pragma: no cover - numba
    x = min(max(x, -_TANH_CLAMP), _TANH_CLAMP)
    x2 = x * x
    p = x2 * _A13 + _A11
    p = p * x2 + _A9
    p = p * x2 + _A7
    p = p * x2 + _A5
    p = p * x2 + _A3
    p = p * x2 + _A1
    p = p * x
    q = x2 * _B6 + _B4
    q = q * x2 + _B2
    q = q * x2 + _B0
    return p / q


@njit(cache=True, error_model="numpy")
def tanh_array(x):  # pragma: no cover - numba
    """The engine's tanh on a float32 array (exposed for the accuracy test)."""
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = _tanh(x[i])
    return out


@njit(cache=True, error_model="numpy")
def _lstm_direction(w_ih, w_hh, bias, tok, reverse, xg, gates, h, c):  # pragma: no cover - numba
    """Run one LSTM direction over ``tok (L, D)`` from a zero state; the final state is left in ``h``.

    ``w_ih (D, 4H)``, ``w_hh (H, 4H)``, ``bias (4H)`` (``b_ih + b_hh``); ``gates (5H)``, ``xg (L, 4H)`` scratch for the
    input contributions, computed for every step first (off the recurrent critical path). Gate order
    as torch: input, forget, cell, output; ``sigmoid(x) = 0.5 * tanh(x / 2) + 0.5``.
    """
    length, d = tok.shape
    hdim = w_hh.shape[0]
    g4 = 4 * hdim
    h2 = 2 * hdim
    h3 = 3 * hdim
    for t in range(length):
        for j in range(g4):
            xg[t, j] = bias[j]
        for k in range(d):
            xv = tok[t, k]
            for j in range(g4):
                xg[t, j] += xv * w_ih[k, j]
    for j in range(hdim):
        h[j] = _ZERO
        c[j] = _ZERO
    for s in range(length):
        t = length - 1 - s if reverse else s
        for j in range(g4):
            gates[j] = xg[t, j]
        for k in range(hdim):
            hv = h[k]
            for j in range(g4):
                gates[j] += hv * w_hh[k, j]
        for j in range(hdim):  # cell gate: tanh, kept in gates[4H:5H]
            gates[g4 + j] = _tanh(gates[h2 + j])
        for j in range(g4):  # sigmoid for all (the cell gate's sigmoid is unused); no branch: vectorises
            gates[j] = _HALF * _tanh(_HALF * gates[j]) + _HALF
        for j in range(hdim):
            c[j] = gates[hdim + j] * c[j] + gates[j] * gates[g4 + j]
            h[j] = gates[h3 + j] * _tanh(c[j])


@njit(cache=True, error_model="numpy")
def _encode(p, dims, x, tok, xg, gates, h, c, emb):  # pragma: no cover - numba
    """Encoder summary ``emb (2H)`` of one window ``x (L, F)``; returns the parameter offset after it."""
    f, d, hdim = dims[_F], dims[_D], dims[_H]
    length = x.shape[0]
    g4 = 4 * hdim
    w = p[0 : f * d].reshape((f, d))
    b = p[f * d : f * d + d]
    for t in range(length):  # projection
        for j in range(d):
            tok[t, j] = b[j]
        for k in range(f):
            xv = np.float32(x[t, k])
            for j in range(d):
                tok[t, j] += xv * w[k, j]
    o = f * d + d
    for direction in range(2):
        w_ih = p[o : o + d * g4].reshape((d, g4))
        o += d * g4
        w_hh = p[o : o + hdim * g4].reshape((hdim, g4))
        o += hdim * g4
        bias = p[o : o + g4]
        o += g4
        _lstm_direction(w_ih, w_hh, bias, tok, direction == 1, xg, gates, h, c)
        for j in range(hdim):
            emb[direction * hdim + j] = h[j]
    return o


@njit(cache=True, error_model="numpy")
def _dense(p, o, x, n_in, n_out, out, use_tanh):  # pragma: no cover - numba
    """``out = [tanh](x @ W + b)`` with ``W (n_in, n_out)`` at offset ``o``; returns the offset after it."""
    w = p[o : o + n_in * n_out].reshape((n_in, n_out))
    o_b = o + n_in * n_out
    for j in range(n_out):
        out[j] = p[o_b + j]
    for k in range(n_in):
        xv = x[k]
        for j in range(n_out):
            out[j] += xv * w[k, j]
    if use_tanh:
        for j in range(n_out):
            out[j] = _tanh(out[j])
    return o_b + n_out


@njit(cache=True, error_model="numpy")
def act_group(
    params, dims, x, account, positions, emb_all, cparams, cdims, logits, values, probs
):  # pragma: no cover - numba
    """Evaluate a group of agents on one observation; returns False (outputs untouched) if any input is
    non-finite.

    ``params (G, P)``, ``dims (6,)``: the group's packed actors; ``x (L, F)``: the matrix they read;
    ``account (A,)``; ``positions (G,)``: each agent's index in the joint agent order; ``emb_all (N, 2H)``:
    every agent's latest summary -- this group's rows are overwritten, the others (the other timeframe's
    cached summaries) are read by the critic; ``cparams``/``cdims``: the packed critic (``cdims[0] == 0``:
    no critic, values untouched); outputs ``logits (G, K)``, ``probs (G, K)``, ``values (N,)``.
    """
    for t in range(x.shape[0]):
        for k in range(x.shape[1]):
            if not math.isfinite(x[t, k]):
                return False
    for k in range(account.shape[0]):
        if not math.isfinite(account[k]):
            return False
    d, hdim, a_dim, hh, n_act = dims[_D], dims[_H], dims[_A], dims[_HH], dims[_K]
    e = 2 * hdim
    tok = np.empty((x.shape[0], d), np.float32)
    xg = np.empty((x.shape[0], 4 * hdim), np.float32)
    gates = np.empty(5 * hdim, np.float32)
    h = np.empty(hdim, np.float32)
    c = np.empty(hdim, np.float32)
    f = dims[_F]
    last = x.shape[0] - 1
    head_in = np.empty(e + f + a_dim, np.float32)
    hid = np.empty(hh, np.float32)
    row = np.empty(n_act, np.float32)
    for g in range(params.shape[0]):
        p = params[g]
        emb = emb_all[positions[g]]
        o = _encode(p, dims, x, tok, xg, gates, h, c, emb)
        for j in range(e):
            head_in[j] = emb[j]
        for j in range(f):  # the newest matrix row skips the encoder
            head_in[e + j] = np.float32(x[last, j])
        for j in range(a_dim):
            head_in[e + f + j] = np.float32(account[j])
        o = _dense(p, o, head_in, e + f + a_dim, hh, hid, True)
        _dense(p, o, hid, hh, n_act, row, False)
        mx = row[0]
        for j in range(n_act):
            logits[g, j] = row[j]
            mx = max(mx, row[j])
        s = _ZERO
        for j in range(n_act):
            ev = np.float32(math.exp(row[j] - mx))
            probs[g, j] = ev
            s += ev
        for j in range(n_act):
            probs[g, j] = probs[g, j] / s
    n_agents = cdims[_CN]
    if n_agents > 0:
        ce, ca, ch = cdims[_CE], cdims[_CA], cdims[_CH]
        cin = np.empty(n_agents * ce + ca, np.float32)
        for i in range(n_agents):
            for j in range(ce):
                cin[i * ce + j] = emb_all[i, j]
        for j in range(ca):
            cin[n_agents * ce + j] = np.float32(account[j])
        h1 = np.empty(ch, np.float32)
        h2 = np.empty(ch, np.float32)
        o = _dense(cparams, 0, cin, n_agents * ce + ca, ch, h1, True)
        o = _dense(cparams, o, h1, ch, ch, h2, True)
        _dense(cparams, o, h2, ch, n_agents, values, False)
    return True
