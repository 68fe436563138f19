"""M-RMS networks: three small sub-agents (sizing, stop, target) and their numba inference engine.

Each sub-agent is an MLP ``40 -> hidden -> hidden -> bins`` (tanh) reading the documented 40-dim risk
input (``sage.risk.context.INPUT_NAMES``) and emitting logits over a discrete grid:

* **sizing**: 6 bins = 0..5 units;
* **stop**: :attr:`MRMSConfig.stop_grid` ATR multiples (default 0.5, 1.0, ..., 3.0);
* **target**: :attr:`MRMSConfig.rr_grid` reward:risk ratios (default 1, 2, 3, 4, 5).

The ensemble (:func:`ensemble_torch` / the numba :func:`_infer_one`) turns the three distributions into
one proposal: ``units = argmax`` of the sizing distribution (ties to the smaller size), stop multiple and
reward:risk = the probability-weighted means of their grids (continuous, inside the grid's range), and
``confidence = mean over agents of (1 - normalised entropy)`` -- 1 when all three are certain, 0 when all
three are uniform.

Why a numba engine: a batch-1 eager torch forward of three MLPs costs ~100 us of dispatch overhead;
the same arithmetic in one compiled float32 loop is a few microseconds. Same weights, same operation
order per row; agreement with torch is tested to 1e-5 (float32 tanh/exp implementations differ in the
last bits). Torch stays the training-time reference.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any, NamedTuple

import msgspec
import numpy as np
import torch
from numba import njit
from torch import nn

from sage.models.registry import ModelManifest, load_checkpoint, save_checkpoint, utc_now_iso

KIND: str = "sage.mrms"
"""Registry kind of an M-RMS checkpoint."""

AGENT_NAMES: tuple[str, str, str] = ("sizing", "stop", "target")


class MRMSConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Sizes of the three sub-agents (the manifest's ``architecture``)."""

    input_dim: int = 40
    """Input features (default 40 = 30 trade + 10 account, ``sage.risk.context.INPUT_NAMES``)."""
    hidden: int = 32
    """Hidden width of every sub-agent (default 32)."""
    n_sizes: int = 6
    """Sizing bins, 0..n_sizes-1 units (default 6 = 0..5)."""
    stop_grid: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
    """Stop distances in ATRs the stop agent chooses among (default 0.5..3.0 step 0.5)."""
    rr_grid: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 5.0)
    """Reward:risk ratios the target agent chooses among (default 1..5)."""

    def __post_init__(self) -> None:
        if self.input_dim < 1 or self.hidden < 1 or self.n_sizes < 2:
            raise ValueError("input_dim and hidden must be >= 1 and n_sizes >= 2")
        if len(self.stop_grid) < 2 or len(self.rr_grid) < 2:
            raise ValueError("stop_grid and rr_grid need at least two values")
        if list(self.stop_grid) != sorted(self.stop_grid) or list(self.rr_grid) != sorted(self.rr_grid):
            raise ValueError("stop_grid and rr_grid must be increasing")

    @property
    def out_dims(self) -> tuple[int, int, int]:
        return self.n_sizes, len(self.stop_grid), len(self.rr_grid)


DEFAULT_MRMS = MRMSConfig()


class SubAgent(nn.Module):
    """One M-RMS sub-agent: a two-hidden-layer tanh MLP from the risk input to logits over its bins."""

    def __init__(self, input_dim: int, hidden: int, n_out: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(input_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, input_dim) -> (B, n_out)
        return self.head(torch.tanh(self.fc2(torch.tanh(self.fc1(x)))))


class MRMSLogits(NamedTuple):
    size: torch.Tensor  # (B, n_sizes)
    stop: torch.Tensor  # (B, len(stop_grid))
    target: torch.Tensor  # (B, len(rr_grid))


class MRMSNet(nn.Module):
    """The three sub-agents side by side."""

    def __init__(self, config: MRMSConfig = DEFAULT_MRMS) -> None:
        super().__init__()
        self.config = config
        n_size, n_stop, n_rr = config.out_dims
        self.sizing = SubAgent(config.input_dim, config.hidden, n_size)
        self.stop = SubAgent(config.input_dim, config.hidden, n_stop)
        self.target = SubAgent(config.input_dim, config.hidden, n_rr)

    def forward(self, x: torch.Tensor) -> MRMSLogits:
        return MRMSLogits(self.sizing(x), self.stop(x), self.target(x))


class EnsembleOutput(NamedTuple):
    """The ensemble's reading of the three distributions (arrays over a batch)."""

    size_probabilities: np.ndarray  # (B, n_sizes)
    units: np.ndarray  # (B,) int
    stop_atr_multiple: np.ndarray  # (B,)
    reward_risk: np.ndarray  # (B,)
    confidence: np.ndarray  # (B,)


def _norm_entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log(p.clamp_min(1e-12))).sum(-1) / math.log(p.shape[-1])


@torch.no_grad()
def ensemble_torch(net: MRMSNet, x: torch.Tensor) -> EnsembleOutput:
    """The reference ensemble in torch (the numba engine must agree with it)."""
    logits = net(x)
    ps, pst, pr = (torch.softmax(t, dim=-1) for t in logits)
    cfg = net.config
    stop = (pst * torch.tensor(cfg.stop_grid, dtype=pst.dtype)).sum(-1)
    rr = (pr * torch.tensor(cfg.rr_grid, dtype=pr.dtype)).sum(-1)
    conf = 1.0 - (_norm_entropy(ps) + _norm_entropy(pst) + _norm_entropy(pr)) / 3.0
    return EnsembleOutput(
        ps.numpy(), ps.argmax(-1).numpy().astype(np.int64), stop.numpy(), rr.numpy(), conf.numpy()
    )


# -- numba engine ------------------------------------------------------------------------------------


def pack_parameters(net: MRMSNet) -> tuple[np.ndarray, np.ndarray]:
    """``(params float32, dims int64)``: every weight in the engine's reading order, and the sizes.

    dims = [input_dim, hidden, n_sizes, n_stops, n_rr, <stop grid offset>, <rr grid offset>]; the grids
    are appended to ``params`` after the three agents' weights.
    """
    chunks: list[np.ndarray] = []
    for agent in (net.sizing, net.stop, net.target):
        for layer in (agent.fc1, agent.fc2, agent.head):
            chunks.append(layer.weight.detach().cpu().numpy().astype(np.float32).ravel())
            chunks.append(layer.bias.detach().cpu().numpy().astype(np.float32).ravel())
    cfg = net.config
    offset_stop = sum(c.size for c in chunks)
    chunks.append(np.asarray(cfg.stop_grid, dtype=np.float32))
    chunks.append(np.asarray(cfg.rr_grid, dtype=np.float32))
    params = np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)
    n_size, n_stop, n_rr = cfg.out_dims
    dims = np.array(
        [cfg.input_dim, cfg.hidden, n_size, n_stop, n_rr, offset_stop, offset_stop + n_stop], dtype=np.int64
    )
    return params, dims


@njit(cache=True)
def _dense(params, p, x, n_in, n_out, out, act):  # pragma: no cover - numba
    """out = W x + b (W row-major (n_out, n_in) at params[p:]), optional tanh; returns the next offset."""
    b0 = p + n_out * n_in
    for o in range(n_out):
        acc = np.float32(0.0)
        row = p + o * n_in
        for i in range(n_in):
            acc += params[row + i] * x[i]
        acc += params[b0 + o]
        out[o] = np.tanh(acc) if act else acc
    return b0 + n_out


@njit(cache=True)
def _softmax(z, n, out):  # pragma: no cover - numba
    m = z[0]
    for i in range(1, n):
        m = max(m, z[i])
    s = np.float32(0.0)
    for i in range(n):
        out[i] = np.exp(z[i] - m)
        s += out[i]
    for i in range(n):
        out[i] /= s


@njit(cache=True)
def _norm_entropy_nb(p, n):  # pragma: no cover - numba
    h = 0.0
    for i in range(n):
        if p[i] > 1e-12:
            h -= p[i] * math.log(p[i])
    return h / math.log(n)


@njit(cache=True)
def _infer_one(params, dims, x, h1, h2, logits, probs_size, probs_stop, probs_rr, scalars):  # pragma: no cover
    """One input row -> size probabilities, stop/rr probabilities, and scalars = [units, stop, rr, conf]."""
    n_in, hid, n_size, n_stop, n_rr, off_stop, off_rr = (
        dims[0], dims[1], dims[2], dims[3], dims[4], dims[5], dims[6],
    )  # fmt: skip
    p = 0
    outs = (n_size, n_stop, n_rr)
    for a in range(3):
        p = _dense(params, p, x, n_in, hid, h1, True)
        p = _dense(params, p, h1, hid, hid, h2, True)
        p = _dense(params, p, h2, hid, outs[a], logits, False)
        if a == 0:
            _softmax(logits, n_size, probs_size)
        elif a == 1:
            _softmax(logits, n_stop, probs_stop)
        else:
            _softmax(logits, n_rr, probs_rr)
    best = 0
    for i in range(1, n_size):
        if probs_size[i] > probs_size[best]:
            best = i
    stop = np.float32(0.0)
    for i in range(n_stop):
        stop += probs_stop[i] * params[off_stop + i]
    rr = np.float32(0.0)
    for i in range(n_rr):
        rr += probs_rr[i] * params[off_rr + i]
    conf = 1.0 - (
        _norm_entropy_nb(probs_size, n_size) + _norm_entropy_nb(probs_stop, n_stop) + _norm_entropy_nb(probs_rr, n_rr)
    ) / 3.0
    scalars[0] = best
    scalars[1] = stop
    scalars[2] = rr
    scalars[3] = conf


@njit(cache=True)
def _infer_many(params, dims, xs, probs, scalars):  # pragma: no cover - numba
    hid = dims[1]
    h1 = np.empty(hid, np.float32)
    h2 = np.empty(hid, np.float32)
    logits = np.empty(max(dims[2], max(dims[3], dims[4])), np.float32)
    ps = np.empty(dims[3], np.float32)
    pr = np.empty(dims[4], np.float32)
    for b in range(xs.shape[0]):
        _infer_one(params, dims, xs[b], h1, h2, logits, probs[b], ps, pr, scalars[b])


class MRMSEngine:
    """Compiled inference for a loaded :class:`MRMSNet`: one row (:meth:`infer`) or a batch."""

    def __init__(self, net: MRMSNet) -> None:
        self.net = net.eval()
        self.config = net.config
        self.params, self.dims = pack_parameters(net)
        hid = self.config.hidden
        n_size, n_stop, n_rr = self.config.out_dims
        self._h1 = np.empty(hid, np.float32)
        self._h2 = np.empty(hid, np.float32)
        self._logits = np.empty(max(n_size, n_stop, n_rr), np.float32)
        self._ps = np.empty(n_size, np.float32)
        self._pst = np.empty(n_stop, np.float32)
        self._pr = np.empty(n_rr, np.float32)
        self._scalars = np.empty(4, np.float64)
        self.infer(np.zeros(self.config.input_dim, np.float32))  # compile / load cache now, not on the first trade

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, int, float, float, float]:
        """``(size_probabilities (copy), units, stop_atr_multiple, reward_risk, confidence)`` for one row."""
        _infer_one(
            self.params, self.dims, x, self._h1, self._h2, self._logits, self._ps, self._pst, self._pr,
            self._scalars,
        )  # fmt: skip
        s = self._scalars
        return self._ps.copy(), int(s[0]), float(s[1]), float(s[2]), float(s[3])

    def infer_batch(self, xs: np.ndarray) -> EnsembleOutput:
        xs = np.ascontiguousarray(xs, dtype=np.float32)
        probs = np.empty((xs.shape[0], self.config.n_sizes), np.float32)
        scalars = np.empty((xs.shape[0], 4), np.float64)
        _infer_many(self.params, self.dims, xs, probs, scalars)
        return EnsembleOutput(probs, scalars[:, 0].astype(np.int64), scalars[:, 1], scalars[:, 2], scalars[:, 3])


# -- checkpoints -------------------------------------------------------------------------------------


def input_hash(input_names: tuple[str, ...]) -> str:
    """Hash of the exact model input (the ordered feature names and their version)."""
    payload = json.dumps({"kind": KIND, "inputs": list(input_names), "input_version": 1}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def save_mrms(
    directory: str | os.PathLike[str],
    net: MRMSNet,
    *,
    input_names: tuple[str, ...],
    name: str,
    version: str,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    created: str | None = None,
) -> ModelManifest:
    """Write ``net`` as a registry checkpoint (state dict + manifest)."""
    h = input_hash(input_names)
    manifest = ModelManifest(
        name=name,
        kind=KIND,
        version=version,
        created=created or utc_now_iso(),
        architecture=msgspec.to_builtins(net.config),
        feature_schema_hash=h,
        input_hash=h,
        input_names=list(input_names),
        training=training or {},
        metrics=metrics or {},
    )
    return save_checkpoint(directory, net.state_dict(), manifest)


def load_mrms(name_or_path: str | os.PathLike[str], *, input_names: tuple[str, ...]) -> tuple[MRMSNet, ModelManifest]:
    """Load and verify an M-RMS checkpoint; refuses one trained on other inputs."""
    from sage.models.registry import ModelSchemaMismatchError

    built: dict[str, MRMSNet] = {}

    def expected_for(manifest: ModelManifest) -> dict[str, torch.Tensor]:
        built["net"] = MRMSNet(msgspec.convert(manifest.architecture, MRMSConfig))
        return built["net"].state_dict()

    manifest, state = load_checkpoint(name_or_path, kind=KIND, expected_for=expected_for)
    if list(manifest.input_names) != list(input_names) or manifest.input_hash != input_hash(input_names):
        raise ModelSchemaMismatchError(
            f"{name_or_path}: M-RMS checkpoint was trained on other inputs (input hash {manifest.input_hash}, "
            f"this sage computes {input_hash(input_names)})"
        )
    net = built["net"]
    net.load_state_dict(state, strict=True)
    return net.eval(), manifest
