"""PettingZoo-style parallel interface to the market environment, for users who bring other trainers.

``SageParallelEnv`` is one episode at a time over :class:`~sage.training.env.VecMarketEnv` with
``n_envs=1`` (same kernel, same rewards), in the PettingZoo ``ParallelEnv`` protocol:
``possible_agents``, ``agents``, ``observation_space(agent)``, ``action_space(agent)``,
``reset(seed=None, options=None) -> (observations, infos)`` and
``step(actions) -> (observations, rewards, terminations, truncations, infos)``. After an episode ends
``agents`` is empty and the returned observations are the episode's final ones.

Each agent observes ``{"matrix": float32 (60, 7) or (48, 13), "account": float32 (ACCOUNT_DIM,)}``;
actions are ``Discrete(5)``. ``state()`` is the centralised ``JOINT_FEATURES`` vector.

Spaces need ``gymnasium`` (optional dependency: ``pip install gymnasium``; ``pettingzoo`` itself is
only needed for its ``ParallelEnv`` base class and API tests). Everything else works without them.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from sage.agents.observation import (
    ACCOUNT_DIM,
    AGENTS,
    N_ACTIONS,
    STRATEGIC_SHAPE,
    TACTICAL_AGENTS,
    TACTICAL_SHAPE,
)
from sage.training.env import JOINT_DIM, EnvConfig, EnvData, VecMarketEnv

try:  # optional: be a real pettingzoo.ParallelEnv when pettingzoo is installed
    from pettingzoo import ParallelEnv as _ParallelBase
except ImportError:  # pragma: no cover - exercised only without pettingzoo
    _ParallelBase = object


class OptionalDependencyError(ImportError):
    """An optional package (gymnasium) is needed for this feature."""


def _spaces() -> Any:
    try:
        from gymnasium import spaces
    except ImportError as exc:
        raise OptionalDependencyError(
            "SageParallelEnv observation/action spaces need gymnasium: pip install gymnasium "
            "(reset/step work without it)"
        ) from exc
    return spaces


class SageParallelEnv(_ParallelBase):  # type: ignore[misc, valid-type]
    """One market episode, all five agents acting in parallel (PettingZoo ``ParallelEnv`` protocol)."""

    metadata: ClassVar[dict[str, Any]] = {
        "name": "sage_market_v0",
        "render_modes": [],
        "is_parallelizable": True,
    }

    def __init__(self, data: EnvData, config: EnvConfig | None = None, seed: int | None = None) -> None:
        self._vec = VecMarketEnv(data, config, n_envs=1, seed=seed)
        self.data = data
        self.config = self._vec.config
        self.possible_agents: list[str] = list(AGENTS)
        self.agents: list[str] = []
        self.render_mode = None
        self._obs_spaces: dict[str, Any] = {}
        self._act_spaces: dict[str, Any] = {}
        self._state = np.zeros(JOINT_DIM, dtype=np.float32)

    # -- spaces ----------------------------------------------------------------------------------------

    def observation_space(self, agent: str) -> Any:
        """``Dict(matrix=Box(-1, 1, shape), account=Box(-1, 1, (ACCOUNT_DIM,)))`` (needs gymnasium)."""
        self._check_agent(agent)
        if agent not in self._obs_spaces:
            spaces = _spaces()
            shape = TACTICAL_SHAPE if agent in TACTICAL_AGENTS else STRATEGIC_SHAPE
            self._obs_spaces[agent] = spaces.Dict(
                {
                    "matrix": spaces.Box(-1.0, 1.0, shape=shape, dtype=np.float32),
                    "account": spaces.Box(-1.0, 1.0, shape=(ACCOUNT_DIM,), dtype=np.float32),
                }
            )
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> Any:
        """``Discrete(5)``: index 0..4 = direction -2..+2 (needs gymnasium)."""
        self._check_agent(agent)
        if agent not in self._act_spaces:
            self._act_spaces[agent] = _spaces().Discrete(N_ACTIONS)
        return self._act_spaces[agent]

    def state_space(self) -> Any:
        """Box of the centralised state (``JOINT_FEATURES``; the account part is in [-1, 1])."""
        return _spaces().Box(-1.0, 1.0, shape=(JOINT_DIM,), dtype=np.float32)

    # -- protocol ----------------------------------------------------------------------------------------

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """Start a new episode at a random valid bar (``seed`` re-seeds the start sampler)."""
        obs = self._vec.reset(seed=seed)
        self.agents = list(self.possible_agents)
        self._state = obs.joint[0].copy()
        observations = self._split(obs.tactical[0], obs.strategic[0], obs.account[0])
        infos = {a: {"t_index": int(obs.t_index[0])} for a in self.agents}
        return observations, infos

    def step(self, actions: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        """Apply every live agent's action (dict agent -> 0..4) for one 5-minute bar."""
        if not self.agents:
            raise RuntimeError("episode is over (or reset() was not called); call reset()")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"actions missing for agent(s) {missing}")
        unknown = [a for a in actions if a not in self.possible_agents]
        if unknown:
            raise ValueError(f"unknown agent(s) {unknown}; agents are {self.possible_agents}")
        joint = np.array([[int(actions[a]) for a in AGENTS]], dtype=np.int64)
        obs, rewards, dones, info = self._vec.step(joint)
        done = bool(dones[0])
        if done:
            # The vector env already restarted; report the finished episode's last observation instead.
            final_t = info["final_t_index"][:1]
            s = self.data.strategic_index[final_t]
            tac, strat = self._vec.gather(final_t, s)
            observations = self._split(tac[0], strat[0], info["final_account"][0])
        else:
            observations = self._split(obs.tactical[0], obs.strategic[0], obs.account[0])
            self._state = obs.joint[0].copy()
        step_info = {
            "pnl": float(info["pnl"][0]),
            "cost": float(info["cost"][0]),
            "equity": float(info["equity"][0]),
            "position": float(info["position"][0]),
        }
        if done:
            step_info["episode_pnl"] = float(info["episode_pnl"][0])
            step_info["episode_length"] = int(info["episode_length"][0])
        agents = self.agents
        out_rewards = {a: float(rewards[0, AGENTS.index(a)]) for a in agents}
        terminations = {a: bool(info["terminated"][0]) for a in agents}
        truncations = {a: bool(info["truncated"][0]) for a in agents}
        infos = {a: dict(step_info) for a in agents}
        if done:
            self.agents = []
        return observations, out_rewards, terminations, truncations, infos

    def state(self) -> np.ndarray:
        """Centralised state (``sage.training.env.JOINT_FEATURES``) of the current observation."""
        return self._state

    def render(self) -> None:
        """No rendering (returns None)."""
        return

    def close(self) -> None:
        """Nothing to release."""
        return

    # -- helpers -----------------------------------------------------------------------------------------

    def _split(self, tactical: np.ndarray, strategic: np.ndarray, account: np.ndarray) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for a in self.possible_agents:
            matrix = tactical if a in TACTICAL_AGENTS else strategic
            out[a] = {
                "matrix": np.array(matrix, dtype=np.float32),
                "account": np.array(account, dtype=np.float32),
            }
        return out

    def _check_agent(self, agent: str) -> None:
        if agent not in self.possible_agents:
            raise ValueError(f"unknown agent {agent!r}; agents are {self.possible_agents}")
