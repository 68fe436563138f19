"""MARL policy networks: one decentralised actor per agent and one centralised critic.

Agents (order fixed by ``sage.agents.observation.AGENTS``): the tactical ``fvg``, ``momentum``, ``entry``
read the 60 x 7 tactical matrix of 5-minute bars, the strategic ``trend`` and ``mean_reversion`` the
48 x 13 strategic matrix of 30-minute bars; every agent also reads the account-state vector.

* **Actor** (decentralised, one per agent, own weights): ``SequenceEncoder`` over its matrix (a BiLSTM
  whose weights can come from the pretrained encoder, ``sage.models.encoder``) -> summary ``e_i (2H)``;
  ``[e_i, newest matrix row, account] -> tanh MLP -> 5 logits`` over directions -2..2. The newest row
  skips the encoder (a residual path): the latest bar matters most, and a head that sees it directly
  learns in a few updates what would otherwise have to pass through an untrained LSTM first. At
  execution time an agent needs only its own observation.
* **Critic** (centralised, training-time value baseline): reads the *joint* observation -- both
  matrices and the account -- through the five actors' encoders: ``[e_1 .. e_5, account] -> tanh MLP ->
  5 values`` (one per agent, since every agent has its own reward stream). Sharing the encoders
  (like CleanRL's Atari PPO shares its trunk) keeps the network small and makes the value nearly free at
  inference: the tactical summaries are computed for the actors anyway and the strategic ones are
  cached from the last 30-minute bar. The value loss therefore also shapes the encoders (weighted by
  ``vf_coef`` in MAPPO).

Shapes (``B`` joint observations, ``N = 5`` agents, ``A = ACCOUNT_DIM``, ``H`` = encoder hidden)::

    tactical  (B, 60, 7)    strategic (B, 48, 13)    account (B, A)
    embeddings (B, N, 2H)   logits (B, N, 5)         values (B, N)

Live inference does not run these modules: ``sage.agents.engine`` evaluates the same weights with a
numba kernel (deterministic, tens of microseconds per bar); the modules are the training graph and the
reference the kernel is tested against.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import msgspec
import torch
from torch import nn

from sage.agents.observation import (
    ACCOUNT_DIM,
    AGENTS,
    N_ACTIONS,
    STRATEGIC_AGENTS,
    STRATEGIC_SHAPE,
    TACTICAL_AGENTS,
    TACTICAL_SHAPE,
)
from sage.models.encoder import EncoderConfig, SequenceEncoder


class PolicyConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Architecture of the multi-agent policy (stored as the checkpoint manifest's ``architecture``)."""

    agents: tuple[str, ...] = AGENTS
    """Agent names in action/reward column order (default ``AGENTS``)."""
    tactical_agents: tuple[str, ...] = TACTICAL_AGENTS
    """Agents reading the tactical matrix (default fvg, momentum, entry); the rest read the strategic one."""
    tactical_shape: tuple[int, int] = TACTICAL_SHAPE
    """Tactical matrix ``(window, columns)`` (default (60, 7))."""
    strategic_shape: tuple[int, int] = STRATEGIC_SHAPE
    """Strategic matrix ``(window, columns)`` (default (48, 13))."""
    account_dim: int = ACCOUNT_DIM
    """Account-state features (default ``ACCOUNT_DIM``)."""
    n_actions: int = N_ACTIONS
    """Discrete actions per agent (default 5: directions -2..2)."""
    d_model: int = 8
    """Encoder projection width (default 8, as the pretrained encoder, so its LSTM transfers)."""
    hidden: int = 8
    """Encoder LSTM hidden size per direction (default 8; summary width 16)."""
    head_hidden: int = 16
    """Hidden width of each actor's head MLP (default 16)."""
    critic_hidden: int = 32
    """Hidden width of the critic's two tanh layers (default 32)."""

    def __post_init__(self) -> None:
        if not self.agents or len(set(self.agents)) != len(self.agents):
            raise ValueError(f"PolicyConfig.agents must be distinct names, got {self.agents}")
        unknown = [a for a in self.tactical_agents if a not in self.agents]
        if unknown:
            raise ValueError(f"PolicyConfig.tactical_agents {unknown} are not in agents")
        for name in ("account_dim", "n_actions", "d_model", "hidden", "head_hidden", "critic_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"PolicyConfig.{name} must be >= 1")

    @property
    def strategic_agents(self) -> tuple[str, ...]:
        """Agents reading the strategic matrix, in ``agents`` order."""
        return tuple(a for a in self.agents if a not in self.tactical_agents)

    def is_tactical(self, agent: str) -> bool:
        """Whether ``agent`` reads the tactical matrix."""
        return agent in self.tactical_agents

    def encoder_config(self, agent: str) -> EncoderConfig:
        """Encoder sizes of ``agent``'s actor (input width from its matrix)."""
        shape = self.tactical_shape if self.is_tactical(agent) else self.strategic_shape
        return EncoderConfig(n_features=shape[1], d_model=self.d_model, hidden=self.hidden)


DEFAULT_POLICY = PolicyConfig()
"""The shipped architecture."""

assert DEFAULT_POLICY.strategic_agents == STRATEGIC_AGENTS


def layer_init(layer: nn.Linear, std: float = math.sqrt(2.0), bias: float = 0.0) -> nn.Linear:
    """Orthogonal weights with gain ``std`` and constant bias (CleanRL's PPO initialisation)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


class Actor(nn.Module):
    """One agent's decentralised policy: encoder over its matrix + account -> action logits."""

    def __init__(self, encoder: EncoderConfig, account_dim: int, head_hidden: int, n_actions: int) -> None:
        super().__init__()
        self.encoder = SequenceEncoder(encoder)
        self.head = nn.Sequential(
            layer_init(nn.Linear(encoder.out_dim + encoder.n_features + account_dim, head_hidden)),
            nn.Tanh(),
            layer_init(nn.Linear(head_hidden, n_actions), std=0.01),  # near-uniform initial policy
        )

    def logits(self, embedding: torch.Tensor, matrix: torch.Tensor, account: torch.Tensor) -> torch.Tensor:
        """``(B, 2H), (B, L, F), (B, A) -> (B, n_actions)`` (the head reads the matrix's newest row)."""
        return self.head(torch.cat([embedding, matrix[:, -1], account], dim=1))

    def forward(self, matrix: torch.Tensor, account: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_actions)`` from this agent's own observation ``matrix (B, L, F)``, ``account (B, A)``."""
        return self.logits(self.encoder(matrix), matrix, account)


class PolicyOutput(NamedTuple):
    """One joint forward pass."""

    logits: torch.Tensor  # (B, N, n_actions)
    values: torch.Tensor  # (B, N)
    embeddings: torch.Tensor  # (B, N, 2H)


class MultiAgentPolicy(nn.Module):
    """All actors plus the centralised critic (one state dict: ``actors.<agent>.*``, ``critic.*``)."""

    def __init__(self, config: PolicyConfig = DEFAULT_POLICY) -> None:
        super().__init__()
        self.config = config
        self.actors = nn.ModuleDict(
            {
                agent: Actor(config.encoder_config(agent), config.account_dim, config.head_hidden, config.n_actions)
                for agent in config.agents
            }
        )
        n, e = len(config.agents), 2 * config.hidden
        self.critic = nn.Sequential(
            layer_init(nn.Linear(n * e + config.account_dim, config.critic_hidden)),
            nn.Tanh(),
            layer_init(nn.Linear(config.critic_hidden, config.critic_hidden)),
            nn.Tanh(),
            layer_init(nn.Linear(config.critic_hidden, n), std=1.0),
        )

    def embed(self, tactical: torch.Tensor, strategic: torch.Tensor) -> torch.Tensor:
        """Every agent's window summary ``(B, N, 2H)`` from the two matrices."""
        parts = [
            self.actors[a].encoder(tactical if self.config.is_tactical(a) else strategic)
            for a in self.config.agents
        ]
        return torch.stack(parts, dim=1)

    def values_from(self, embeddings: torch.Tensor, account: torch.Tensor) -> torch.Tensor:
        """Centralised values ``(B, N)`` from the joint summaries ``(B, N, 2H)`` and the account ``(B, A)``."""
        return self.critic(torch.cat([embeddings.flatten(1), account], dim=1))

    def forward(self, tactical: torch.Tensor, strategic: torch.Tensor, account: torch.Tensor) -> PolicyOutput:
        """Joint pass over ``tactical (B, 60, 7)``, ``strategic (B, 48, 13)``, ``account (B, A)``."""
        emb = self.embed(tactical, strategic)  # (B, N, 2H)
        logits = torch.stack(
            [
                self.actors[a].logits(emb[:, i], tactical if self.config.is_tactical(a) else strategic, account)
                for i, a in enumerate(self.config.agents)
            ],
            dim=1,
        )  # (B, N, n_actions)
        return PolicyOutput(logits, self.values_from(emb, account), emb)
