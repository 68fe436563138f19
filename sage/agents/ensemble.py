"""Live inference of the trained MARL agents: ``AgentEnsemble.load("default").act_tactical(...)``.

This is exactly what a strategy calls (the contract in ``docs/agents.md``)::

    from sage.agents import AgentEnsemble
    ens = AgentEnsemble.load("default")                 # sage/assets/models/agents-default, verified
    outs = ens.act_strategic(strategic_48x13, account)  # on every 30-minute bar (trend, mean_reversion)
    outs = ens.act_tactical(tactical_60x7, account)     # on every 5-minute bar (fvg, momentum, entry)
    sig = outs[0].to_signal(instrument_id, ts_event=bar.ts_event, ts_init=bar.ts_init,
                            model_version=ens.model_version)
    ens.attributions("momentum", tactical_60x7, account, top_k=5)   # gradient x input (analytic, numba)

Each call evaluates its group of agents in one numba call (``sage.agents.engine``): encoders, heads and
the centralised critic's values. The critic reads every agent's window summary, so the ensemble caches the
latest summaries of the other timeframe: a tactical call uses the strategic summaries of the last
``act_strategic`` call -- exactly the training environment's alignment (the last 30-minute bar closed
at or before the 5-minute bar). Until the first strategic call, those summaries are zero (documented
fallback: only ``value`` is affected, the actors never read them). ``reset()`` clears the cache.

Inputs are validated: wrong shapes raise ``ValueError``; a NaN/inf anywhere in the matrix or account
raises :class:`AgentInputError` (a matrix still warming up contains NaN rows -- wait until
``MatrixStream.ready``).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import msgspec
import numpy as np
import torch

from sage.agents.attribution import gradient_x_input, pack_actor64, top_cells
from sage.agents.engine import act_group, pack_critic, pack_group
from sage.agents.observation import ACCOUNT_FEATURES, ACTION_DIRECTIONS, AGENT_TIMEFRAMES
from sage.features.matrices import STRATEGIC_COLUMNS, TACTICAL_COLUMNS
from sage.features.schema import DEFAULT_SCHEMA, FeatureSchema, SchemaMismatchError
from sage.models.policy import DEFAULT_POLICY, MultiAgentPolicy, PolicyConfig
from sage.models.registry import (
    ModelManifest,
    ModelSchemaMismatchError,
    load_checkpoint,
    save_checkpoint,
)
from sage.models.schema_checkpoint import schema_manifest, verified_feature_schema

KIND: str = "sage.agents-policy"
"""Registry kind of an agents checkpoint."""

INPUT_NAMES: tuple[str, ...] = (*TACTICAL_COLUMNS, *STRATEGIC_COLUMNS, *ACCOUNT_FEATURES)
"""Every model input: tactical columns, strategic columns, then account features (manifest order)."""

DEFAULT_NAME: str = "agents-default"
"""Shipped checkpoint ``load("default")`` resolves to."""

_DIRECTIONS = np.asarray(ACTION_DIRECTIONS, dtype=np.float64)


class AgentInputError(ValueError):
    """An observation handed to an agent contains NaN or inf (e.g. a matrix still warming up)."""


class AgentOutput(msgspec.Struct, frozen=True, kw_only=True):
    """One agent's decision on one bar."""

    agent: str
    """Agent name (``sage.agents.observation.AGENTS``)."""
    timeframe: str
    """Bar timeframe the agent runs on ("5m" tactical, "30m" strategic)."""
    direction: int
    """Greedy action as a direction: -2 strong sell, -1, 0 hold, +1, +2 strong buy (argmax of the policy)."""
    strength: float
    """Expected direction under the policy divided by 2, in [-1, 1] (sign = net view, size = conviction)."""
    probabilities: tuple[float, float, float, float, float]
    """Policy probabilities over directions -2..2."""
    value: float
    """The centralised critic's value estimate for this agent (expected discounted reward)."""

    def to_signal(self, instrument_id: Any, *, ts_event: int, ts_init: int, model_version: str) -> Any:
        """This output as a ``sage.data.types.AgentSignal`` record for ``instrument_id``."""
        from sage.data.types import AgentSignal

        return AgentSignal(
            instrument_id,
            agent=self.agent,
            timeframe=self.timeframe,
            direction=self.direction,
            strength=self.strength,
            probabilities=self.probabilities,
            value=self.value,
            model_version=model_version,
            ts_event=ts_event,
            ts_init=ts_init,
        )


class Attribution(msgspec.Struct, frozen=True, kw_only=True):
    """One input cell's contribution (gradient x input) to an agent's signal strength."""

    feature: str
    """Matrix column name (``TACTICAL_COLUMNS`` / ``STRATEGIC_COLUMNS``)."""
    lag: int
    """Bars before the newest row (0 = the newest bar of the matrix)."""
    score: float
    """``d strength / d x * x``: signed contribution to the expected direction / 2."""


def input_hash(config: PolicyConfig, schema: FeatureSchema) -> str:
    """sha256 of everything the agents read: feature-schema hash, matrix shapes and columns, account."""
    payload = {
        "feature_schema_hash": schema.hash,
        "tactical": {"shape": list(config.tactical_shape), "columns": list(TACTICAL_COLUMNS)},
        "strategic": {"shape": list(config.strategic_shape), "columns": list(STRATEGIC_COLUMNS)},
        "account": list(ACCOUNT_FEATURES),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def resolve_name(name_or_path: str | os.PathLike[str]) -> str | os.PathLike[str]:
    """``"default"`` -> the shipped ``agents-default``; anything else unchanged."""
    return DEFAULT_NAME if str(name_or_path) == "default" else name_or_path


class _Group:
    """Packed weights of the agents that read one matrix, plus preallocated outputs."""

    def __init__(self, policy: MultiAgentPolicy, agents: tuple[str, ...]) -> None:
        self.agents = agents
        self.params, self.dims = pack_group(policy, agents)
        self.positions = np.array([policy.config.agents.index(a) for a in agents], dtype=np.int64)
        n_act = policy.config.n_actions
        self.logits = np.zeros((len(agents), n_act), np.float32)
        self.probs = np.zeros((len(agents), n_act), np.float32)
        self.timeframes = tuple(AGENT_TIMEFRAMES[a] for a in agents)


class AgentEnsemble:
    """The five trained agents behind the inference contract (one instance per instrument stream)."""

    def __init__(
        self,
        policy: MultiAgentPolicy,
        feature_schema: FeatureSchema = DEFAULT_SCHEMA,
        manifest: ModelManifest | None = None,
    ) -> None:
        self.policy = policy.eval()
        self.config: PolicyConfig = policy.config
        self.feature_schema = feature_schema
        self.manifest = manifest
        self.refresh()

    def refresh(self) -> None:
        """Repack the engine from ``self.policy`` (after changing its weights in place) and clear the cache."""
        c = self.config
        self._tactical = _Group(self.policy, c.tactical_agents)
        self._strategic = _Group(self.policy, c.strategic_agents)
        self._cparams, self._cdims = pack_critic(self.policy.critic, len(c.agents), 2 * c.hidden)
        self._embeddings = np.zeros((len(c.agents), 2 * c.hidden), np.float32)
        self._values = np.zeros(len(c.agents), np.float32)
        self._attribution_params = {agent: pack_actor64(self.policy.actors[agent]) for agent in c.agents}

    def reset(self) -> None:
        """Forget the cached window summaries (start of a new instrument stream or session)."""
        self._embeddings[:] = 0.0

    # -- construction -----------------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: PolicyConfig = DEFAULT_POLICY, *, seed: int = 0) -> AgentEnsemble:
        """Untrained agents with seeded initial weights (tests, benchmarks); the global torch RNG is kept."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            policy = MultiAgentPolicy(config)
        return cls(policy)

    @classmethod
    def load(
        cls, name_or_path: str | os.PathLike[str] = "default", *, schema: FeatureSchema | str | None = None
    ) -> AgentEnsemble:
        """Load verified agents (``"default"`` = shipped ``agents-default``, a shipped name, or a directory).

        Raises a ``sage.models.registry.ModelLoadError`` subclass on any problem (missing files, sha256
        mismatch, unsafe pickle, foreign kind, architecture mismatch, inconsistent manifest, or -- with
        ``schema`` -- features other than those the agents were trained on).
        """
        built: dict[str, MultiAgentPolicy] = {}

        def expected_for(manifest: ModelManifest) -> dict[str, torch.Tensor]:
            built["policy"] = MultiAgentPolicy(msgspec.convert(manifest.architecture, PolicyConfig))
            return built["policy"].state_dict()

        target = resolve_name(name_or_path)
        manifest, state_dict = load_checkpoint(target, kind=KIND, expected_for=expected_for)
        policy = built["policy"]
        feature_schema = verified_feature_schema(
            target,
            manifest,
            input_hash_of=lambda fs: input_hash(policy.config, fs),
            input_names=INPUT_NAMES,
        )
        policy.load_state_dict(state_dict, strict=True)
        ensemble = cls(policy, feature_schema, manifest)
        if schema is not None:
            ensemble.check_schema(schema)
        return ensemble

    def save(
        self,
        directory: str | os.PathLike[str],
        *,
        name: str,
        version: str = "1.0.0",
        training: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        created: str | None = None,
    ) -> ModelManifest:
        """Write the agents as a registry checkpoint; returns (and keeps) the written manifest."""
        manifest = schema_manifest(
            name=name,
            kind=KIND,
            version=version,
            config=self.config,
            feature_schema=self.feature_schema,
            input_hash=input_hash(self.config, self.feature_schema),
            input_names=INPUT_NAMES,
            training=training,
            metrics=metrics,
            created=created,
        )
        self.manifest = save_checkpoint(directory, self.policy.state_dict(), manifest)
        return self.manifest

    def check_schema(self, schema: FeatureSchema | str) -> None:
        """Raise ``ModelSchemaMismatchError`` unless ``schema`` (schema or hash) is what the agents read."""
        if isinstance(schema, FeatureSchema):
            try:
                self.feature_schema.check(schema)
            except SchemaMismatchError as exc:
                raise ModelSchemaMismatchError(f"agents {self.model_version}: {exc}") from exc
            return
        own = (self.feature_schema.hash, input_hash(self.config, self.feature_schema))
        if str(schema) not in own:
            raise ModelSchemaMismatchError(
                f"agents {self.model_version}: schema hash {str(schema)[:16]}... is not the one they were "
                f"trained on ({own[0][:16]}...)"
            )

    # -- description ------------------------------------------------------------------------------------

    @property
    def model_version(self) -> str:
        """``<name>@<version>`` of the loaded checkpoint (``untracked`` for unsaved weights)."""
        if self.manifest is None:
            return "untracked"
        return f"{self.manifest.name}@{self.manifest.version}"

    @property
    def agents(self) -> tuple[str, ...]:
        """All agents, in joint order."""
        return self.config.agents

    # -- inference --------------------------------------------------------------------------------------

    def _check(self, matrix: np.ndarray, account: np.ndarray, shape: tuple[int, int], kind: str) -> tuple:
        m = np.asarray(matrix)
        a = np.asarray(account)
        if m.shape != tuple(shape):
            raise ValueError(f"{kind} matrix must have shape {tuple(shape)}, got {m.shape}")
        if a.shape != (self.config.account_dim,):
            raise ValueError(f"account must have shape ({self.config.account_dim},), got {a.shape}")
        if m.dtype.kind != "f":
            m = m.astype(np.float64)
        if a.dtype.kind != "f":
            a = a.astype(np.float64)
        return m, a

    def _act(self, group: _Group, matrix: np.ndarray, account: np.ndarray, kind: str) -> list[AgentOutput]:
        ok = act_group(
            group.params, group.dims, matrix, account, group.positions, self._embeddings,
            self._cparams, self._cdims, group.logits, self._values, group.probs,
        )  # fmt: skip
        if not ok:
            where = "matrix" if not np.isfinite(matrix).all() else "account"
            raise AgentInputError(
                f"{kind} {where} contains NaN or inf (rows still warming up, or a bad bar); agents need a "
                "fully finite observation -- wait until MatrixStream.ready"
            )
        outs = []
        for g, agent in enumerate(group.agents):
            p = group.probs[g].astype(np.float64)
            outs.append(
                AgentOutput(
                    agent=agent,
                    timeframe=group.timeframes[g],
                    direction=int(_DIRECTIONS[int(np.argmax(p))]),
                    strength=float(p @ _DIRECTIONS) / 2.0,
                    probabilities=tuple(p.tolist()),
                    value=float(self._values[group.positions[g]]),
                )
            )
        return outs

    def act_tactical(self, tactical: np.ndarray, account: np.ndarray) -> list[AgentOutput]:
        """fvg, momentum, entry on one tactical matrix ``(60, 7)`` and the account vector."""
        m, a = self._check(tactical, account, self.config.tactical_shape, "tactical")
        return self._act(self._tactical, m, a, "tactical")

    def act_strategic(self, strategic: np.ndarray, account: np.ndarray) -> list[AgentOutput]:
        """trend, mean_reversion on one strategic matrix ``(48, 13)`` and the account vector."""
        m, a = self._check(strategic, account, self.config.strategic_shape, "strategic")
        return self._act(self._strategic, m, a, "strategic")

    def attributions(
        self, agent: str, matrix: np.ndarray, account: np.ndarray, top_k: int = 5
    ) -> list[Attribution]:
        """The ``top_k`` matrix cells with the largest ``|gradient x input|`` of the agent's strength.

        The target is the strength ``sum_a p_a * direction_a / 2`` of the agent's actor (the engine's
        weights); the gradient with respect to the matrix is evaluated analytically in float64
        (``sage.agents.attribution``: forward with cached activations, hand-written backward through the
        head, the newest-row residual path, both LSTM directions and the projection; ~0.1 ms instead of
        ~1.7 ms for torch autograd, which it equals on a float64 copy of the actor to ~1e-15). The matrix
        and account are read as the network reads them (float32). Sorted by decreasing absolute score; equal
        scores keep row-major order (oldest row first, then column order). Raises ``ValueError`` for an
        unknown agent or wrong shapes and :class:`AgentInputError` for NaN/inf input.
        """
        if agent not in self.config.agents:
            raise ValueError(f"unknown agent {agent!r}; agents are {self.config.agents}")
        tactical = self.config.is_tactical(agent)
        shape = self.config.tactical_shape if tactical else self.config.strategic_shape
        m, a = self._check(matrix, account, shape, "tactical" if tactical else "strategic")
        if not (np.isfinite(m).all() and np.isfinite(a).all()):
            raise AgentInputError(f"{agent}: observation contains NaN or inf; attributions need finite input")
        columns = TACTICAL_COLUMNS if tactical else STRATEGIC_COLUMNS
        params, dims = self._attribution_params[agent]
        _, score, _ = gradient_x_input(params, dims, m, a, _DIRECTIONS)  # (L, F) float64
        length, width = score.shape
        out = []
        for flat in top_cells(score, top_k):
            row, col = divmod(int(flat), width)
            out.append(Attribution(feature=columns[col], lag=length - 1 - row, score=float(score[row, col])))
        return out

    def __repr__(self) -> str:
        c = self.config
        return f"AgentEnsemble({self.model_version}: agents={c.agents}, d={c.d_model}, hidden={c.hidden})"
