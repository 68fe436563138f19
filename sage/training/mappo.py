"""MAPPO (multi-agent PPO) for the five sage agents -- one readable file in the style of CleanRL's ppo.py.

Algorithm (Yu et al. 2022, "The Surprising Effectiveness of PPO in Cooperative Multi-Agent Games"):

* **Decentralised actors**: every agent ``i`` samples its action from ``pi_i(a | o_i)``, its own policy
  over its own observation (its matrix + the account), ``sage.models.policy.Actor``.
* **Centralised critic**: ``V(s) -> (V_1 .. V_N)`` over the joint observation (both matrices through all
  agents' encoders + the account), one value per agent because every agent has its own reward.
* Rollouts of ``n_steps`` x ``n_envs`` joint transitions from ``sage.training.env.VecMarketEnv``; per
  agent **GAE(lambda)** advantages and returns; then ``update_epochs`` passes over shuffled minibatches
  with the **clipped surrogate** objective, **clipped value loss**, **entropy bonus**, per-minibatch
  **advantage normalisation** (per agent), global gradient-norm clipping and a linearly annealed
  learning rate.

Every hyper-parameter is a field of the frozen :class:`MappoConfig`. Runs are deterministic: one seed
drives weight init (``torch.manual_seed``), action sampling (torch RNG) and the env's start sampler;
with ``torch.use_deterministic_algorithms(True)`` and one thread the same config and data give
bitwise-identical weights (tested). Progress is a rich bar (episode return, policy/value loss,
entropy); :func:`plot_learning_curves` saves the curves as a PNG; intermediate checkpoints go through
``sage.models.registry`` (``AgentEnsemble.save``).

Shapes below: ``T = n_steps``, ``E = n_envs``, ``N = 5`` agents, ``A = ACCOUNT_DIM``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import msgspec
import numpy as np
import torch
from torch.distributions import Categorical

from sage.agents.observation import ACCOUNT_DIM, N_AGENTS, STRATEGIC_SHAPE, TACTICAL_SHAPE
from sage.models.policy import DEFAULT_POLICY, MultiAgentPolicy, PolicyConfig
from sage.training.env import EnvConfig, EnvData, VecMarketEnv


class MappoConfig(msgspec.Struct, frozen=True, kw_only=True):
    """MAPPO hyper-parameters (CleanRL names); equal configs and data give bitwise-equal weights."""

    seed: int = 0
    """Seed of weight init, action sampling and episode starts (default 0)."""
    total_steps: int = 32_768
    """Joint env transitions to collect (default 32,768 = 32 updates of 8 envs x 128 steps)."""
    n_envs: int = 8
    """Parallel environments (default 8)."""
    n_steps: int = 128
    """Steps per env per rollout (default 128 5-minute bars, ~11 hours)."""
    lr: float = 3e-3
    """Adam learning rate (default 3e-3: the networks are tiny), linearly annealed to 0 if ``anneal_lr``."""
    anneal_lr: bool = True
    """Anneal the learning rate linearly to 0 over the run (default True)."""
    gamma: float = 0.97
    """Discount (default 0.97: rewards are per-bar PnL; a horizon of ~33 bars = ~3 hours)."""
    gae_lambda: float = 0.95
    """GAE lambda (default 0.95)."""
    update_epochs: int = 4
    """Passes over each rollout (default 4)."""
    n_minibatches: int = 4
    """Minibatches per pass (default 4; 256 transitions each with the defaults)."""
    clip_coef: float = 0.2
    """PPO ratio clip (default 0.2)."""
    clip_vloss: bool = True
    """Clip the value update around the old value (default True)."""
    ent_coef: float = 0.003
    """Entropy bonus weight (default 0.003; 0.01 kept the five policies near uniform for twice as long)."""
    vf_coef: float = 0.5
    """Value-loss weight (default 0.5)."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip (default 0.5)."""
    norm_adv: bool = True
    """Normalise advantages per minibatch and agent (default True)."""
    checkpoint_every: int = 0
    """Save a registry checkpoint every this many updates under ``<out>/checkpoints`` (default 0 = off)."""
    policy: PolicyConfig = DEFAULT_POLICY
    """Network sizes (default ``sage.models.policy.DEFAULT_POLICY``)."""
    env: EnvConfig = EnvConfig()
    """Environment (costs, rewards, episode length; default ``EnvConfig()``); its seed is replaced by
    ``seed``."""

    def __post_init__(self) -> None:
        for name in ("total_steps", "n_envs", "n_steps", "update_epochs", "n_minibatches"):
            if getattr(self, name) < 1:
                raise ValueError(f"MappoConfig.{name} must be >= 1")
        if self.batch_size % self.n_minibatches:
            raise ValueError("n_envs * n_steps must be divisible by n_minibatches")
        if self.total_steps < self.batch_size:
            raise ValueError(f"total_steps must be >= n_envs * n_steps ({self.batch_size})")

    @property
    def batch_size(self) -> int:
        """Joint transitions per rollout (``n_envs * n_steps``)."""
        return self.n_envs * self.n_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.n_minibatches

    @property
    def n_updates(self) -> int:
        return self.total_steps // self.batch_size


@dataclass
class MappoResult:
    """What :func:`train_mappo` produced."""

    policy: MultiAgentPolicy
    history: list[dict[str, float]]  # one record per update
    seconds: float
    checkpoints: list[Path] = field(default_factory=list)


def _obs_tensors(obs: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.from_numpy(np.ascontiguousarray(obs.tactical)),  # (E, 60, 7)
        torch.from_numpy(np.ascontiguousarray(obs.strategic)),  # (E, 48, 13)
        torch.from_numpy(np.array(obs.account, dtype=np.float32)),  # (E, A)
    )


def train_mappo(
    data: EnvData,
    config: MappoConfig | None = None,
    *,
    policy: MultiAgentPolicy | None = None,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    on_checkpoint: Callable[[MultiAgentPolicy, Path, int], None] | None = None,
) -> MappoResult:
    """Train the agents on ``data`` with MAPPO; ``policy`` is the initial network (e.g. with pretrained
    encoders), built from ``config.policy`` with seed ``config.seed`` if None.

    ``checkpoint_dir`` + ``config.checkpoint_every`` + ``on_checkpoint(policy, directory, update)``: how
    intermediate checkpoints are written (the caller saves them through the registry).
    """
    c = config if config is not None else MappoConfig()
    started = time.perf_counter()
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(c.seed)
        if policy is None:
            policy = MultiAgentPolicy(c.policy)
        policy.train()
        optimizer = torch.optim.Adam(policy.parameters(), lr=c.lr, eps=1e-5)
        env = VecMarketEnv(data, msgspec.structs.replace(c.env, seed=c.seed), n_envs=c.n_envs, seed=c.seed)

        T, E, N = c.n_steps, c.n_envs, N_AGENTS
        tactical_buf = torch.zeros((T, E, *TACTICAL_SHAPE))
        strategic_buf = torch.zeros((T, E, *STRATEGIC_SHAPE))
        account_buf = torch.zeros((T, E, ACCOUNT_DIM))
        actions_buf = torch.zeros((T, E, N), dtype=torch.long)
        logprobs_buf = torch.zeros((T, E, N))
        rewards_buf = torch.zeros((T, E, N))
        dones_buf = torch.zeros((T, E))
        values_buf = torch.zeros((T, E, N))

        next_obs = _obs_tensors(env.reset())
        next_done = torch.zeros(E)
        history: list[dict[str, float]] = []
        checkpoints: list[Path] = []
        recent_returns: list[float] = []
        with _ProgressBar(c.n_updates, progress) as bar:
            for update in range(1, c.n_updates + 1):
                if c.anneal_lr:
                    optimizer.param_groups[0]["lr"] = c.lr * (1.0 - (update - 1.0) / c.n_updates)

                # -- rollout ----------------------------------------------------------------------------
                episode_returns: list[float] = []
                for step in range(T):
                    tactical_buf[step], strategic_buf[step], account_buf[step] = next_obs
                    dones_buf[step] = next_done
                    with torch.no_grad():
                        out = policy(*next_obs)  # logits (E, N, 5), values (E, N)
                        dist = Categorical(logits=out.logits)
                        action = dist.sample()  # (E, N)
                    actions_buf[step] = action
                    logprobs_buf[step] = dist.log_prob(action)
                    values_buf[step] = out.values
                    obs, reward, done, info = env.step(action.numpy())
                    rewards_buf[step] = torch.from_numpy(np.array(reward, dtype=np.float32))
                    next_obs, next_done = _obs_tensors(obs), torch.from_numpy(done.astype(np.float32))
                    episode_returns.extend(info["episode_returns"])

                # -- GAE per agent (CleanRL's recursion, vectorised over envs and agents) -----------------
                with torch.no_grad():
                    next_value = policy(*next_obs).values  # (E, N)
                    advantages = torch.zeros_like(rewards_buf)  # (T, E, N)
                    last_gae = torch.zeros((E, N))
                    for t in reversed(range(T)):
                        if t == T - 1:
                            not_done, v_next = 1.0 - next_done, next_value
                        else:
                            not_done, v_next = 1.0 - dones_buf[t + 1], values_buf[t + 1]
                        delta = rewards_buf[t] + c.gamma * v_next * not_done[:, None] - values_buf[t]
                        last_gae = delta + c.gamma * c.gae_lambda * not_done[:, None] * last_gae
                        advantages[t] = last_gae
                    returns = advantages + values_buf

                # -- flatten the batch --------------------------------------------------------------------
                b_tac = tactical_buf.reshape(-1, *TACTICAL_SHAPE)
                b_strat = strategic_buf.reshape(-1, *STRATEGIC_SHAPE)
                b_acc = account_buf.reshape(-1, ACCOUNT_DIM)
                b_actions = actions_buf.reshape(-1, N)
                b_logprobs = logprobs_buf.reshape(-1, N)
                b_adv = advantages.reshape(-1, N)
                b_returns = returns.reshape(-1, N)
                b_values = values_buf.reshape(-1, N)

                # -- optimise the clipped surrogate ---------------------------------------------------------
                clipfracs: list[float] = []
                for _epoch in range(c.update_epochs):
                    order = torch.randperm(c.batch_size)
                    for start in range(0, c.batch_size, c.minibatch_size):
                        mb = order[start : start + c.minibatch_size]
                        out = policy(b_tac[mb], b_strat[mb], b_acc[mb])
                        dist = Categorical(logits=out.logits)  # (M, N)
                        new_logprob = dist.log_prob(b_actions[mb])  # (M, N)
                        entropy = dist.entropy()  # (M, N)
                        log_ratio = new_logprob - b_logprobs[mb]
                        ratio = log_ratio.exp()
                        with torch.no_grad():
                            approx_kl = ((ratio - 1) - log_ratio).mean()
                            clipfracs.append(((ratio - 1.0).abs() > c.clip_coef).float().mean().item())

                        mb_adv = b_adv[mb]  # (M, N)
                        if c.norm_adv:
                            mb_adv = (mb_adv - mb_adv.mean(0)) / (mb_adv.std(0) + 1e-8)
                        pg_loss1 = -mb_adv * ratio
                        pg_loss2 = -mb_adv * torch.clamp(ratio, 1 - c.clip_coef, 1 + c.clip_coef)
                        pg_loss = torch.max(pg_loss1, pg_loss2).mean()  # mean over samples and agents

                        new_value = out.values  # (M, N)
                        if c.clip_vloss:
                            v_loss_unclipped = (new_value - b_returns[mb]) ** 2
                            v_clipped = b_values[mb] + torch.clamp(
                                new_value - b_values[mb], -c.clip_coef, c.clip_coef
                            )
                            v_loss_clipped = (v_clipped - b_returns[mb]) ** 2
                            v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
                        else:
                            v_loss = 0.5 * ((new_value - b_returns[mb]) ** 2).mean()

                        entropy_loss = entropy.mean()
                        loss = pg_loss - c.ent_coef * entropy_loss + v_loss * c.vf_coef

                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        torch.nn.utils.clip_grad_norm_(policy.parameters(), c.max_grad_norm)
                        optimizer.step()

                y_pred, y_true = b_values.flatten(), b_returns.flatten()
                var_y = torch.var(y_true)
                explained_var = float("nan") if var_y == 0 else float(1 - torch.var(y_true - y_pred) / var_y)
                recent_returns = (recent_returns + episode_returns)[-50:]
                record = {
                    "update": float(update),
                    "global_step": float(update * c.batch_size),
                    "episode_return": float(np.mean(recent_returns)) if recent_returns else float("nan"),
                    "episodes": float(len(episode_returns)),
                    "mean_reward": float(rewards_buf.mean()),
                    "policy_loss": float(pg_loss.item()),
                    "value_loss": float(v_loss.item()),
                    "entropy": float(entropy_loss.item()),
                    "approx_kl": float(approx_kl.item()),
                    "clipfrac": float(np.mean(clipfracs)),
                    "explained_variance": explained_var,
                    "lr": float(optimizer.param_groups[0]["lr"]),
                }
                history.append(record)
                bar.update(update, record)
                if checkpoint_dir is not None and c.checkpoint_every and update % c.checkpoint_every == 0:
                    directory = Path(checkpoint_dir) / f"update-{update:05d}"
                    if on_checkpoint is not None:
                        on_checkpoint(policy, directory, update)
                        checkpoints.append(directory)
        policy.eval()
        return MappoResult(policy, history, time.perf_counter() - started, checkpoints)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def plot_learning_curves(history: list[dict[str, float]], path: str | Path, title: str = "MAPPO") -> Path:
    """Save episode return, policy/value loss and entropy against env steps as a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    steps = [h["global_step"] for h in history]
    panels = (
        ("episode_return", "episode return (net PnL, last 50 episodes)"),
        ("mean_reward", "mean reward per agent-step"),
        ("policy_loss", "policy loss"),
        ("value_loss", "value loss"),
        ("entropy", "entropy (nats)"),
        ("approx_kl", "approx. KL"),
    )
    fig, axes = plt.subplots(2, 3, figsize=(12, 6), constrained_layout=True)
    for ax, (key, label) in zip(axes.flat, panels, strict=True):
        ax.plot(steps, [h[key] for h in history], lw=1.2)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("joint env steps", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)
    return path


class _ProgressBar:
    """Rich progress over the updates with the latest episode return, losses and entropy (no-op if hidden)."""

    def __init__(self, total: int, show: bool) -> None:
        self.total, self.show = total, show
        self._bar: Any = None

    def __enter__(self) -> Self:
        if self.show:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("[bold]MAPPO[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("{task.fields[status]}"),
            )  # fmt: skip
            self._bar.__enter__()
            self._task = self._bar.add_task("mappo", total=self.total, status="")
        return self

    def update(self, update: int, r: dict[str, float]) -> None:
        if self._bar is not None:
            ret = r["episode_return"]
            status = (
                f"return {ret:+.4f} " if math.isfinite(ret) else "return   -     "
            ) + f"pg {r['policy_loss']:+.3f} v {r['value_loss']:.3f} ent {r['entropy']:.3f}"
            self._bar.update(self._task, completed=update, status=status)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
