"""Vectorised multi-agent market environment for MAPPO (``VecMarketEnv``).

``n_envs`` independent episodes over one :class:`~sage.training.env_data.EnvData` are stepped at once by
one numba kernel (:mod:`sage.training.env_kernels`). Each step is one 5-minute bar:

1. every agent (``sage.agents.observation.AGENTS``, fixed column order) picks one of 5 action levels;
2. the joint action becomes a target position: the ``agent_weights``-weighted mean direction / 2,
   clipped to [-1, 1] (a fraction of ``max_position``; all five at +2 -> fully long);
3. the trade is filled at the next bar's open (``fill_at_next_open``; else at this close), paying
   ``cost_bps + slippage_bps`` plus ``slippage_atr`` x relative ATR on the traded exposure; PnL runs
   from close ``t`` to close ``t + 1`` (old position until the fill, new one after);
4. rewards per agent = ``individual_weight`` x own-signal PnL + ``shared_weight`` x team PnL with a
   drawdown penalty + ``shaping_scale`` x a small documented per-agent shaping term, all in units of
   the bar's ATR (risk-adjusted), clipped to ``reward_clip``;
5. finished envs (``episode_len`` steps, or drawdown >= ``stop_drawdown``) restart at once at a fresh
   random start; ``info`` carries their final account and episode totals.

Observations never look ahead: at bar ``t`` an agent sees the matrix rows up to ``t`` (tactical) or
up to the last 30-minute bar closed by ``t`` (strategic) and the account after the fill of bar ``t-1``.
Rewards do look one bar ahead (that is what they score). Full definitions: ``docs/marl_env.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec
import numpy as np

from sage.agents.observation import (
    ACCOUNT_DIM,
    ACCOUNT_FEATURES,
    AGENTS,
    N_ACTIONS,
    N_AGENTS,
    STRATEGIC_SHAPE,
    TACTICAL_SHAPE,
)
from sage.features import STRATEGIC_COLUMNS, TACTICAL_COLUMNS
from sage.training import env_kernels as _k
from sage.training.env_data import EnvData, EnvDataError, aggregate_bars
from sage.training.env_kernels import JOINT_DIM

__all__ = [
    "JOINT_DIM",
    "JOINT_FEATURES",
    "EnvConfig",
    "EnvConfigError",
    "EnvData",
    "EnvDataError",
    "Observation",
    "VecMarketEnv",
    "aggregate_bars",
]

JOINT_FEATURES: tuple[str, ...] = (
    *ACCOUNT_FEATURES,
    *TACTICAL_COLUMNS,
    *STRATEGIC_COLUMNS,
    *(f"prev_dir_{a}" for a in AGENTS),
    "episode_progress",
)
"""Centralised-critic vector: account, the newest tactical and strategic rows, every agent's previous
direction / 2, and the fraction of the episode elapsed."""
assert len(JOINT_FEATURES) == JOINT_DIM


class EnvConfigError(ValueError):
    """An :class:`EnvConfig` field is out of range."""


class EnvConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Environment parameters (frozen; change with ``msgspec.structs.replace``)."""

    episode_len: int = 256
    """Steps (5-minute bars) per episode before truncation (default 256 = ~21 hours)."""
    cost_bps: float = 1.0
    """Commission and fees, basis points of traded notional (default 1.0 bp)."""
    slippage_bps: float = 0.5
    """Fixed slippage, basis points of traded notional (default 0.5 bp)."""
    slippage_atr: float = 0.02
    """Volatility-proportional slippage: fraction of the bar's relative ATR paid per unit traded
    (default 0.02, i.e. 2 % of an ATR)."""
    max_position: float = 1.0
    """Exposure at position 1.0 as a multiple of starting equity (default 1.0 = fully invested)."""
    drawdown_penalty: float = 0.5
    """Extra weight on every new unit of drawdown in the shared reward (default 0.5: a loss that deepens
    the drawdown counts 1.5x)."""
    individual_weight: float = 0.7
    """Weight of the agent's own-signal PnL in its reward (default 0.7)."""
    shared_weight: float = 0.3
    """Weight of the team PnL in every agent's reward (default 0.3)."""
    shaping_scale: float = 0.05
    """Scale of the per-agent shaping terms, each in [-1, 1] (default 0.05: small next to PnL, whose
    per-step magnitude is ~1 ATR unit)."""
    reward_clip: float = 10.0
    """Rewards are clipped to [-reward_clip, reward_clip] (default 10; guards gaps over weekends)."""
    stop_drawdown: float = 0.25
    """An episode terminates when drawdown from peak reaches this fraction (default 0.25)."""
    fill_at_next_open: bool = True
    """Fill the new position at the next bar's open (True, default: honest) or at this bar's close."""
    agent_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)
    """Weight of each agent's direction in the target position (AGENTS order; default equal)."""
    seed: int = 0
    """Seed of the episode-start sampler (default 0)."""

    def __post_init__(self) -> None:
        if self.episode_len < 1:
            raise EnvConfigError(f"episode_len must be >= 1, got {self.episode_len}")
        for name in ("cost_bps", "slippage_bps", "slippage_atr", "drawdown_penalty", "shaping_scale"):
            if not getattr(self, name) >= 0.0:
                raise EnvConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.max_position > 0.0:
            raise EnvConfigError(f"max_position must be > 0, got {self.max_position}")
        if not (self.individual_weight >= 0.0 and self.shared_weight >= 0.0):
            raise EnvConfigError("individual_weight and shared_weight must be >= 0")
        if not self.reward_clip > 0.0:
            raise EnvConfigError(f"reward_clip must be > 0, got {self.reward_clip}")
        if not 0.0 < self.stop_drawdown <= 1.0:
            raise EnvConfigError(f"stop_drawdown must be in (0, 1], got {self.stop_drawdown}")
        if len(self.agent_weights) != N_AGENTS or any(not w >= 0.0 for w in self.agent_weights):
            raise EnvConfigError(f"agent_weights must be {N_AGENTS} non-negative numbers (AGENTS order)")
        if sum(self.agent_weights) <= 0.0:
            raise EnvConfigError("agent_weights must not all be zero")

    def kernel_params(self) -> np.ndarray:
        """The float64 parameter vector of :func:`sage.training.env_kernels.step_kernel`."""
        p = np.zeros(_k.P_SIZE, dtype=np.float64)
        p[_k.P_MAX_POSITION] = self.max_position
        p[_k.P_UNIT_COST] = (self.cost_bps + self.slippage_bps) * 1e-4
        p[_k.P_SLIPPAGE_ATR] = self.slippage_atr
        p[_k.P_DRAWDOWN_PENALTY] = self.drawdown_penalty
        p[_k.P_W_INDIVIDUAL] = self.individual_weight
        p[_k.P_W_SHARED] = self.shared_weight
        p[_k.P_SHAPING] = self.shaping_scale
        p[_k.P_REWARD_CLIP] = self.reward_clip
        p[_k.P_STOP_DRAWDOWN] = self.stop_drawdown
        p[_k.P_NEXT_OPEN] = 1.0 if self.fill_at_next_open else 0.0
        p[_k.P_EPISODE_LEN] = self.episode_len
        return p


class Observation(NamedTuple):
    """What the agents see after a reset or step (one row per env).

    ``tactical``/``strategic`` are None when the env was built with ``gather_windows=False``; a trainer
    then gathers windows itself: ``data.tactical_rows[t_index - 59 : t_index + 1]`` and
    ``data.strategic_rows[s_index - 47 : s_index + 1]``.
    """

    tactical: np.ndarray | None
    """float32 (n_envs, 60, 7): the tactical matrix (fvg, momentum, entry agents)."""
    strategic: np.ndarray | None
    """float32 (n_envs, 48, 13): the strategic matrix (trend, mean_reversion agents)."""
    account: np.ndarray
    """float32 (n_envs, ACCOUNT_DIM): ``sage.agents.observation.ACCOUNT_FEATURES``."""
    joint: np.ndarray
    """float32 (n_envs, JOINT_DIM): the centralised critic's input (``JOINT_FEATURES``)."""
    t_index: np.ndarray
    """int64 (n_envs,): the observed 5-minute bar (row of ``data.tactical_rows``)."""
    s_index: np.ndarray
    """int64 (n_envs,): the last closed 30-minute bar (row of ``data.strategic_rows``)."""


class VecMarketEnv:
    """``n_envs`` market episodes stepped together; see the module docstring for the dynamics.

    ``reset() -> Observation``; ``step(actions int64 (n_envs, 5)) -> (Observation, rewards float32
    (n_envs, 5), dones bool (n_envs,), info)``. Finished envs restart automatically; the returned
    observation of such an env is its new episode's first. ``info`` keys (arrays over envs):
    ``pnl``, ``cost``, ``turnover``, ``equity``, ``position`` (this step), ``terminated``,
    ``truncated``, and for envs that finished this step: ``final_t_index``, ``final_account``,
    ``episode_pnl``, ``episode_reward`` (n_envs, 5), ``episode_length``; plus ``episode_returns``, a
    list of the finished episodes' net PnL (fraction of starting equity).

    ``reuse_buffers=True`` returns the same arrays every step (faster; copy what you keep).
    """

    def __init__(
        self,
        data: EnvData,
        config: EnvConfig | None = None,
        n_envs: int = 64,
        seed: int | None = None,
        *,
        gather_windows: bool = True,
        reuse_buffers: bool = False,
    ) -> None:
        if not isinstance(data, EnvData):
            raise TypeError(f"data must be an EnvData, got {type(data).__name__}")
        if n_envs < 1:
            raise EnvConfigError(f"n_envs must be >= 1, got {n_envs}")
        self.data = data
        self.config = EnvConfig() if config is None else config
        self.n_envs = int(n_envs)
        self.n_agents = N_AGENTS
        self.agents = AGENTS
        self.n_actions = N_ACTIONS
        self.gather_windows = gather_windows
        self.reuse_buffers = reuse_buffers
        self.seed = self.config.seed if seed is None else int(seed)
        self.starts = data.episode_starts(self.config.episode_len)
        self._params = self.config.kernel_params()
        self._weights = np.asarray(self.config.agent_weights, dtype=np.float64)
        self._rng = np.random.Generator(np.random.PCG64(self.seed))
        n, a = self.n_envs, N_AGENTS
        # Per-env state.
        self._t = np.zeros(n, dtype=np.int64)
        self._k = np.zeros(n, dtype=np.int64)
        self._pos = np.zeros(n, dtype=np.float64)
        self._entry = np.zeros(n, dtype=np.float64)
        self._held = np.zeros(n, dtype=np.int64)
        self._equity = np.ones(n, dtype=np.float64)
        self._peak = np.ones(n, dtype=np.float64)
        self._prev_dir = np.zeros((n, a), dtype=np.int64)
        self._ep_pnl = np.zeros(n, dtype=np.float64)
        self._ep_reward = np.zeros((n, a), dtype=np.float64)
        # Pre-drawn auto-reset starts: the kernel consumes them in env order, so runs are reproducible.
        self._pool = np.empty(0, dtype=np.int64)
        self._pool_ptr = np.zeros(1, dtype=np.int64)
        self._buffers: dict[str, np.ndarray] | None = None
        self._started = False

    # -- public API ----------------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> Observation:
        """Start every env at a random valid bar (re-seeding the sampler if ``seed`` is given)."""
        if seed is not None:
            self.seed = int(seed)
            self._rng = np.random.Generator(np.random.PCG64(self.seed))
        self._pool = np.empty(0, dtype=np.int64)
        self._pool_ptr[0] = 0
        starts = self._draw_starts(self.n_envs)
        return self.reset_at(starts)

    def reset_at(self, starts: np.ndarray) -> Observation:
        """Start env ``i`` at 5-minute bar ``starts[i]`` (each must be in :attr:`starts`)."""
        starts = np.ascontiguousarray(starts, dtype=np.int64)
        if starts.shape != (self.n_envs,):
            raise EnvConfigError(f"starts must have shape ({self.n_envs},), got {starts.shape}")
        if not np.isin(starts, self.starts).all():
            raise EnvConfigError("every start must be a bar where a whole episode fits (see env.starts)")
        buf = self._out()
        d = self.data
        _k.reset_kernel(
            starts,
            self._params,
            d.close,
            d.atr,
            d.tactical_rows,
            d.strategic_rows,
            d.strategic_index,
            self._t,
            self._k,
            self._pos,
            self._entry,
            self._held,
            self._equity,
            self._peak,
            self._prev_dir,
            self._ep_pnl,
            self._ep_reward,
            buf["s_index"],
            buf["account"],
            buf["joint"],
        )
        self._started = True
        return self._observation(buf)

    def step(self, actions: np.ndarray) -> tuple[Observation, np.ndarray, np.ndarray, dict[str, Any]]:
        """Apply one joint action per env; return (observation, rewards, dones, info)."""
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions)
        if actions.shape != (self.n_envs, N_AGENTS):
            raise ValueError(f"actions must have shape ({self.n_envs}, {N_AGENTS}), got {actions.shape}")
        if actions.dtype.kind not in "iu":
            raise ValueError(f"actions must be integer action indices, got dtype {actions.dtype}")
        actions = np.ascontiguousarray(actions, dtype=np.int64)
        if actions.size and (actions.min() < 0 or actions.max() >= N_ACTIONS):
            raise ValueError(f"actions must be in 0..{N_ACTIONS - 1}")
        if self._pool.shape[0] - self._pool_ptr[0] < self.n_envs:
            self._refill_pool()
        buf = self._out()
        d = self.data
        _k.step_kernel(
            actions,
            self._weights,
            self._params,
            d.open,
            d.close,
            d.atr,
            d.tactical_rows,
            d.strategic_rows,
            d.strategic_index,
            self._pool,
            self._pool_ptr,
            self._t,
            self._k,
            self._pos,
            self._entry,
            self._held,
            self._equity,
            self._peak,
            self._prev_dir,
            self._ep_pnl,
            self._ep_reward,
            buf["rewards"],
            buf["terminated"],
            buf["truncated"],
            buf["pnl"],
            buf["cost"],
            buf["turnover"],
            buf["equity"],
            buf["position"],
            buf["final_t_index"],
            buf["final_account"],
            buf["episode_pnl"],
            buf["episode_reward"],
            buf["episode_length"],
            buf["s_index"],
            buf["account"],
            buf["joint"],
        )
        dones = buf["terminated"] | buf["truncated"]
        info: dict[str, Any] = {
            name: buf[name]
            for name in (
                "pnl",
                "cost",
                "turnover",
                "equity",
                "position",
                "terminated",
                "truncated",
                "final_t_index",
                "final_account",
                "episode_pnl",
                "episode_reward",
                "episode_length",
            )
        }
        info["episode_returns"] = buf["episode_pnl"][dones].tolist()
        return self._observation(buf), buf["rewards"], dones, info

    def sample_actions(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """Uniform random joint actions (for smoke tests and baselines)."""
        rng = self._rng if rng is None else rng
        return rng.integers(0, N_ACTIONS, size=(self.n_envs, N_AGENTS), dtype=np.int64)

    def gather(self, t_index: np.ndarray, s_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tactical and strategic windows ending at the given rows (e.g. ``info['final_t_index']``)."""
        t_index = np.ascontiguousarray(t_index, dtype=np.int64)
        s_index = np.ascontiguousarray(s_index, dtype=np.int64)
        tac = np.empty((t_index.shape[0], *TACTICAL_SHAPE), dtype=np.float32)
        strat = np.empty((t_index.shape[0], *STRATEGIC_SHAPE), dtype=np.float32)
        _k.gather_kernel(t_index, s_index, self.data.tactical_rows, self.data.strategic_rows, tac, strat)
        return tac, strat

    # -- internals -----------------------------------------------------------------------------------

    def _draw_starts(self, count: int) -> np.ndarray:
        return self.starts[self._rng.integers(0, self.starts.shape[0], size=count)]

    def _refill_pool(self) -> None:
        rest = self._pool[self._pool_ptr[0] :]
        self._pool = np.concatenate([rest, self._draw_starts(max(4 * self.n_envs, 1024))])
        self._pool_ptr[0] = 0

    def _out(self) -> dict[str, np.ndarray]:
        """Output arrays: fresh each call, or the same ones when ``reuse_buffers``."""
        if self.reuse_buffers and self._buffers is not None:
            return self._buffers
        n, a = self.n_envs, N_AGENTS
        buf = {
            "rewards": np.empty((n, a), dtype=np.float32),
            "terminated": np.empty(n, dtype=np.bool_),
            "truncated": np.empty(n, dtype=np.bool_),
            "pnl": np.empty(n, dtype=np.float64),
            "cost": np.empty(n, dtype=np.float64),
            "turnover": np.empty(n, dtype=np.float64),
            "equity": np.empty(n, dtype=np.float64),
            "position": np.empty(n, dtype=np.float64),
            "final_t_index": np.full(n, -1, dtype=np.int64),
            "final_account": np.zeros((n, ACCOUNT_DIM), dtype=np.float32),
            "episode_pnl": np.zeros(n, dtype=np.float64),
            "episode_reward": np.zeros((n, a), dtype=np.float32),
            "episode_length": np.zeros(n, dtype=np.int64),
            "s_index": np.empty(n, dtype=np.int64),
            "account": np.empty((n, ACCOUNT_DIM), dtype=np.float32),
            "joint": np.empty((n, JOINT_DIM), dtype=np.float32),
        }
        if self.gather_windows:
            buf["tactical"] = np.empty((n, *TACTICAL_SHAPE), dtype=np.float32)
            buf["strategic"] = np.empty((n, *STRATEGIC_SHAPE), dtype=np.float32)
        if self.reuse_buffers:
            self._buffers = buf
        return buf

    def _observation(self, buf: dict[str, np.ndarray]) -> Observation:
        t_index = self._t.copy() if not self.reuse_buffers else self._t
        tac = strat = None
        if self.gather_windows:
            tac, strat = buf["tactical"], buf["strategic"]
            _k.gather_kernel(
                t_index, buf["s_index"], self.data.tactical_rows, self.data.strategic_rows, tac, strat
            )
        return Observation(tac, strat, buf["account"], buf["joint"], t_index, buf["s_index"])
