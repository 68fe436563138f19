"""Train the five MARL agents -- the core of ``sage train agents``.

Recipe (one frozen :class:`AgentsTrainConfig`; the defaults produce the shipped ``agents-default``):

1. **Data**: 1-minute bars from a catalog bar type, or the seeded synthetic market -- by default the
   *trending* variant (:func:`trending_market`: long, strong BULL/BEAR runs), where persistent trends
   give the agents something learnable within a small budget. ``EnvData.from_bars`` aggregates them
   to 5- and 30-minute bars and computes the matrices exactly as live inference does.
2. **Initialisation**: every actor's encoder LSTM from the pretrained encoder (``encoder-default``,
   ``sage.training.encoder``); the projections and heads start from the seeded init.
3. **MAPPO** (``sage.training.mappo``) in the vectorised env (``sage.training.env``) with costs.
4. **Checkpoint** through ``sage.models.registry`` (``AgentEnsemble.save``) with the config, data
   description, training history summary and wall time in the manifest, plus ``learning_curves.png``.

Deterministic: one thread, deterministic algorithms, everything seeded -- the same command reproduces
the shipped weights bit for bit (``weights_sha256`` in the manifest; tested on a tiny budget).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
import torch

from sage.models.encoder import transfer_weights
from sage.models.policy import MultiAgentPolicy
from sage.training.mappo import MappoConfig, plot_learning_curves, train_mappo

SHIPPED_COMMAND = "sage train agents --out sage/assets/models/agents-default"
"""The command that produced the shipped ``agents-default`` weights (all other options default)."""


class AgentsTrainError(ValueError):
    """A training request that cannot run as given (e.g. ``--catalog`` without ``--bar-type``)."""


def trending_market(seed: int, n_bars: int) -> Any:
    """A ``SyntheticMarketConfig`` with strong persistent trends (1-minute bars).

    BULL/BEAR: drift +-1e-4 per minute against volatility 4e-4 and mean runs of 1,500 minutes (~25 h):
    a mean run moves 15 % against noise of 1.5 %, so trend following pays clearly after costs.
    SIDEWAYS (mean-reverting) and VOLATILE runs are short (300 and 100 minutes). Everything else is
    ``SyntheticMarketConfig``'s default.
    """
    from sage.data.synthetic import RegimeParams, SyntheticMarketConfig

    return SyntheticMarketConfig(
        seed=seed,
        n_bars=n_bars,
        bull=RegimeParams(drift=1e-4, volatility=4e-4, volume_mean=1000.0, mean_duration=1500.0),
        bear=RegimeParams(drift=-1e-4, volatility=4e-4, volume_mean=1300.0, mean_duration=1500.0),
        sideways=RegimeParams(drift=0.0, volatility=3e-4, volume_mean=700.0, mean_duration=300.0, mean_reversion=0.02),
        volatile=RegimeParams(drift=0.0, volatility=8e-4, volume_mean=2500.0, mean_duration=100.0),
    )


class AgentsDataConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Training bars: a catalog bar type (1-minute bars), or the seeded synthetic market."""

    catalog: str | None = None
    """Catalog directory (default None = synthetic market)."""
    bar_type: str | None = None
    """1-minute bar type in ``catalog`` (required with ``catalog``)."""
    synthetic_bars: int = 60_000
    """1-minute bars of the synthetic market (default 60,000 = 12,000 5-minute bars, ~42 days)."""
    seed: int = 7
    """Synthetic market seed (default 7; evaluation uses other seeds)."""
    market: Literal["trending", "default"] = "trending"
    """Synthetic market parameters: ``trending`` (:func:`trending_market`, default) or ``default``
    (``SyntheticMarketConfig`` defaults)."""


class AgentsTrainConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Everything that determines ``sage train agents``; equal configs give bitwise-equal weights."""

    data: AgentsDataConfig = AgentsDataConfig()
    """Training bars (default: 60k trending synthetic 1-minute bars, seed 7)."""
    mappo: MappoConfig = MappoConfig()
    """MAPPO hyper-parameters, network sizes and env (default ``MappoConfig()``)."""
    encoder: str | None = "default"
    """Pretrained encoder initialising every actor's LSTM: ``"default"`` (shipped ``encoder-default``), a
    checkpoint directory, or None (random init)."""
    name: str = "agents-default"
    """Model name in the manifest (default ``agents-default``)."""
    version: str = "1.0.0"
    """Model version in the manifest (default 1.0.0)."""


def load_env_data(config: AgentsDataConfig) -> Any:
    """The ``EnvData`` a data config describes."""
    from sage.training.env import EnvData

    if config.catalog is not None:
        if not config.bar_type:
            raise AgentsTrainError("--bar-type is required with --catalog")
        return EnvData.from_catalog(config.catalog, config.bar_type)
    from sage.data.synthetic import SyntheticMarketConfig

    market = (
        trending_market(config.seed, config.synthetic_bars)
        if config.market == "trending"
        else SyntheticMarketConfig(seed=config.seed, n_bars=config.synthetic_bars)
    )
    return EnvData.from_synthetic(market)


def initial_policy(config: AgentsTrainConfig) -> tuple[MultiAgentPolicy, dict[str, Any]]:
    """Seeded policy with pretrained encoder weights transferred into every actor (if configured)."""
    torch.manual_seed(config.mappo.seed)
    policy = MultiAgentPolicy(config.mappo.policy)
    info: dict[str, Any] = {"encoder": None}
    if config.encoder is not None:
        from sage.training.encoder import load_pretrained

        _, state, manifest = load_pretrained(config.encoder)
        copied = {a: transfer_weights(state, policy.actors[a].encoder) for a in policy.config.agents}
        info = {
            "encoder": f"{manifest.name}@{manifest.version}",
            "encoder_sha256": manifest.weights_sha256,
            "transferred": copied,
        }
    return policy, info


@dataclass
class AgentsTrainResult:
    ensemble: Any  # AgentEnsemble
    history: list[dict[str, float]]
    seconds: float
    out_dir: Path | None


def train_agents(
    config: AgentsTrainConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    progress: bool = True,
    command: str | None = None,
    data: Any = None,
) -> AgentsTrainResult:
    """Train the agents; write the checkpoint (+ learning curves, history) to ``out_dir`` if given."""
    from sage.agents.ensemble import AgentEnsemble

    config = config if config is not None else AgentsTrainConfig()
    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = data if data is not None else load_env_data(config.data)
        policy, init_info = initial_policy(config)
        target = Path(out_dir) if out_dir is not None else None

        def on_checkpoint(net: MultiAgentPolicy, directory: Path, update: int) -> None:
            AgentEnsemble(net).save(directory, name=f"{config.name}-update{update}", version=config.version)
            net.train()

        result = train_mappo(
            data, config.mappo, policy=policy, progress=progress,
            checkpoint_dir=None if target is None else target / "checkpoints", on_checkpoint=on_checkpoint,
        )  # fmt: skip
        ensemble = AgentEnsemble(result.policy)
        seconds = time.perf_counter() - started
        if target is not None:
            last = result.history[-min(5, len(result.history)) :]
            training = {
                "command": command or "sage.training.agents.train_agents(AgentsTrainConfig(...))",
                "config": msgspec.to_builtins(config),
                "data": data.describe(),
                "initialisation": init_info,
                "updates": len(result.history),
                "seconds": round(seconds, 1),
                "threads": 1,
                "torch": str(torch.__version__),
            }
            metrics = {
                "final_updates": {k: _finite_mean([h[k] for h in last]) for k in last[0]},
                "first_update": result.history[0],
            }
            ensemble.save(target, name=config.name, version=config.version, training=training, metrics=metrics)
            (target / "history.json").write_text(json.dumps(result.history, indent=1) + "\n")
            plot_learning_curves(result.history, target / "learning_curves.png", title=f"MAPPO {config.name}")
        return AgentsTrainResult(ensemble, result.history, seconds, target)
    finally:
        torch.set_num_threads(threads)


def _finite_mean(values: list[float]) -> float | None:
    """Mean of the finite values (None if there are none, e.g. no episode finished yet)."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


# -- command ------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``sage train agents``."""
    parser.add_argument("--catalog", type=Path, default=None, help="catalog with 1-minute bars (default: synthetic)")
    parser.add_argument("--bar-type", default=None, help="1-minute bar type in --catalog")
    parser.add_argument("--synthetic-bars", type=int, default=None, help="1-minute synthetic bars (default 60000)")
    parser.add_argument("--seed", type=int, default=None, help="synthetic market seed (default 7)")
    parser.add_argument("--market", choices=["trending", "default"], default=None,
                        help="synthetic market parameters (default trending)")
    parser.add_argument("--train-seed", type=int, default=None, help="MAPPO seed (default 0)")
    parser.add_argument("--total-steps", type=int, default=None, help="joint env transitions (default 32768)")
    parser.add_argument("--encoder", default=None,
                        help="pretrained encoder: 'default', a checkpoint directory, or 'none' (default: default)")
    parser.add_argument("--out", type=Path, default=Path("runs/agents-default"),
                        help="output directory (default runs/agents-default)")


def config_from_args(args: argparse.Namespace) -> AgentsTrainConfig:
    """The :class:`AgentsTrainConfig` an argument namespace describes (defaults for unset options)."""
    base = AgentsTrainConfig()
    data_changes: dict[str, Any] = {}
    if args.catalog is not None:
        data_changes.update(catalog=str(args.catalog), bar_type=args.bar_type)
    for key, value in (("synthetic_bars", args.synthetic_bars), ("seed", args.seed), ("market", args.market)):
        if value is not None:
            data_changes[key] = value
    mappo_changes: dict[str, Any] = {}
    if args.train_seed is not None:
        mappo_changes["seed"] = args.train_seed
    if args.total_steps is not None:
        mappo_changes["total_steps"] = args.total_steps
    config = msgspec.structs.replace(
        base,
        data=msgspec.structs.replace(base.data, **data_changes),
        mappo=msgspec.structs.replace(base.mappo, **mappo_changes),
    )
    if args.encoder is not None:
        config = msgspec.structs.replace(config, encoder=None if args.encoder == "none" else args.encoder)
    return config
