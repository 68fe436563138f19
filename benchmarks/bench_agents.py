"""Agents benchmark: per-bar inference latency of the shipped agents and the default training wall time.

``python -m benchmarks.bench_agents [--skip-training] [--total-steps N]`` prints:

1. **Inference latency per bar** (shipped ``agents-default``, one core): ``act_tactical`` -- the three
   tactical agents together, including input checks, the numba engine and the ``AgentOutput`` objects --
   and ``act_strategic`` (two agents), p50/p99 over real tactical/strategic matrices of a synthetic
   market; next to the **baseline measured in the same run**: a plain eager torch forward of the same
   actors (batch 1, ``no_grad``, one call per agent, plus the critic), reported as a ratio. Goal:
   tactical p99 < 200 us.
2. **Attribution latency per agent** (``AgentEnsemble.attributions``, top 3 cells, each shipped agent on
   its real matrices): the analytic numba gradient (``sage.agents.attribution``) next to the previous
   torch path measured in the same run (float32 eager forward + ``torch.autograd.grad`` + the same
   ranking), p50/p99 and the p50/p99 ratios. A trading decision attributes the three tactical agents.
3. **Default training wall time** (``sage train agents`` defaults: pretrained encoder + MAPPO, one
   training thread) and, for scale, the env-step/update throughput. ``--total-steps`` shortens it.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def _percentiles(samples_ns: list[int]) -> tuple[float, float]:
    a = np.asarray(samples_ns[len(samples_ns) // 10 :], dtype=np.float64) / 1e3  # drop warm-up, in us
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def inference_latency(n: int = 3000) -> dict[str, float]:
    from sage.agents import AgentEnsemble
    from sage.training.agents import trending_market
    from sage.training.env import EnvData

    torch.set_num_threads(1)
    ens = AgentEnsemble.load("default")
    data = EnvData.from_synthetic(trending_market(99, 24_000))
    valid = np.flatnonzero(data.valid)[:n]
    acc = np.array([0.5, 0.1, 0.2, 0.3], dtype=np.float32)
    tacs = [np.ascontiguousarray(data.tactical_window(int(t))) for t in valid]
    strats = [np.ascontiguousarray(data.strategic_window(int(t))) for t in valid]
    out: dict[str, float] = {}
    for name, fn, mats in (("tactical", ens.act_tactical, tacs), ("strategic", ens.act_strategic, strats)):
        samples = []
        for m in mats:
            t0 = time.perf_counter_ns()
            fn(m, acc)
            samples.append(time.perf_counter_ns() - t0)
        out[f"{name}_p50_us"], out[f"{name}_p99_us"] = _percentiles(samples)

    # Baseline: eager torch on the same weights, batch 1, one forward per agent, + the critic.
    policy = ens.policy.eval()
    groups = {"tactical": ens.config.tactical_agents, "strategic": ens.config.strategic_agents}
    a_t = torch.from_numpy(acc)[None]
    emb = torch.zeros(1, len(ens.agents), 2 * ens.config.hidden)
    for name, mats in (("tactical", tacs), ("strategic", strats)):
        samples = []
        with torch.no_grad():
            for m in mats[: n // 3]:
                t0 = time.perf_counter_ns()
                x = torch.from_numpy(m)[None]
                for i, agent in enumerate(groups[name]):
                    actor = policy.actors[agent]
                    e = actor.encoder(x)
                    emb[:, ens.agents.index(agent)] = e
                    torch.softmax(actor.logits(e, x, a_t), 1)
                policy.values_from(emb, a_t)
                samples.append(time.perf_counter_ns() - t0)
        out[f"torch_{name}_p50_us"], out[f"torch_{name}_p99_us"] = _percentiles(samples)
    return out


def _torch_attributions(ens, agent: str, matrix: np.ndarray, account: np.ndarray, top_k: int) -> list:
    """The previous ``AgentEnsemble.attributions``: validation, torch autograd (float32), same ranking."""
    from sage.agents.attribution import top_cells, torch_strength_gradient
    from sage.agents.ensemble import _DIRECTIONS, Attribution
    from sage.features.matrices import STRATEGIC_COLUMNS, TACTICAL_COLUMNS

    tactical = ens.config.is_tactical(agent)
    shape = ens.config.tactical_shape if tactical else ens.config.strategic_shape
    m, a = ens._check(matrix, account, shape, "tactical" if tactical else "strategic")
    if not (np.isfinite(m).all() and np.isfinite(a).all()):
        raise ValueError("non-finite observation")
    columns = TACTICAL_COLUMNS if tactical else STRATEGIC_COLUMNS
    grad, _ = torch_strength_gradient(ens.policy.actors[agent], m, a, _DIRECTIONS)
    score = grad * np.asarray(m, dtype=np.float32)
    length, width = score.shape
    out = []
    for flat in top_cells(score, top_k):
        row, col = divmod(int(flat), width)
        out.append(Attribution(feature=columns[col], lag=length - 1 - row, score=float(score[row, col])))
    return out


def attribution_latency(n: int = 600, top_k: int = 3) -> dict[str, float]:
    """p50/p99 us of one ``attributions`` call (all agents pooled), analytic vs the torch autograd path."""
    from sage.agents import AgentEnsemble
    from sage.training.agents import trending_market
    from sage.training.env import EnvData

    torch.set_num_threads(1)
    ens = AgentEnsemble.load("default")
    data = EnvData.from_synthetic(trending_market(99, 24_000))
    valid = np.flatnonzero(data.valid)
    valid = valid[np.linspace(0, len(valid) - 1, min(n, len(valid))).astype(int)]
    acc = np.array([0.5, 0.1, 0.2, 0.3], dtype=np.float32)
    cases = [
        (agent, np.ascontiguousarray(
            data.tactical_window(int(t)) if ens.config.is_tactical(agent) else data.strategic_window(int(t))
        ))
        for t in valid
        for agent in ens.agents
    ]  # fmt: skip
    for agent, m in cases[: len(ens.agents)]:  # compile / warm both paths
        ens.attributions(agent, m, acc, top_k=top_k)
        _torch_attributions(ens, agent, m, acc, top_k)
    fast: list[int] = []
    slow: list[int] = []
    for i, (agent, m) in enumerate(cases):  # interleaved, so both paths see the same machine load
        t0 = time.perf_counter_ns()
        got = ens.attributions(agent, m, acc, top_k=top_k)
        fast.append(time.perf_counter_ns() - t0)
        if i % 3 == 0:  # the torch path is ~20x slower: a third of the cases is plenty
            t0 = time.perf_counter_ns()
            ref = _torch_attributions(ens, agent, m, acc, top_k)
            slow.append(time.perf_counter_ns() - t0)
            if abs(abs(got[0].score) - abs(ref[0].score)) > 1e-5 * abs(ref[0].score) + 1e-12:
                raise AssertionError(
                    f"{agent}: analytic and torch attributions disagree: {got[0]} vs {ref[0]}"
                )
    out: dict[str, float] = {}
    out["attr_p50_us"], out["attr_p99_us"] = _percentiles(fast)
    out["attr_torch_p50_us"], out["attr_torch_p99_us"] = _percentiles(slow)
    out["attr_speedup_p50"] = out["attr_torch_p50_us"] / out["attr_p50_us"]
    out["attr_speedup_p99"] = out["attr_torch_p99_us"] / out["attr_p99_us"]
    return out


def training_time(total_steps: int | None = None) -> dict[str, float]:
    import msgspec

    from sage.training.agents import AgentsTrainConfig, load_env_data, train_agents

    config = AgentsTrainConfig()
    if total_steps is not None:
        config = msgspec.structs.replace(
            config, mappo=msgspec.structs.replace(config.mappo, total_steps=total_steps)
        )
    t0 = time.perf_counter()
    data = load_env_data(config.data)
    prep = time.perf_counter() - t0
    result = train_agents(config, progress=False, data=data)
    total = time.perf_counter() - t0
    steps = len(result.history) * config.mappo.batch_size
    return {
        "train_data_prep_s": prep,
        "train_wall_s": total,
        "train_updates": float(len(result.history)),
        "train_joint_steps_per_s": steps / max(result.seconds, 1e-9),
        "train_final_episode_return": result.history[-1]["episode_return"],
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="bench_agents")
    parser.add_argument(
        "--skip-training", action="store_true", help="only measure inference and attributions"
    )
    parser.add_argument(
        "--total-steps", type=int, default=None, help="shorter training (default: the default run)"
    )
    args = parser.parse_args(argv or [])
    results = inference_latency()
    print("1. inference latency per bar (shipped agents-default, one core)")
    print(f"   {'':<28}{'p50 us':>10}{'p99 us':>10}{'torch p50':>12}{'torch p99':>12}{'speed-up p50':>14}")
    for name, label in (("tactical", "act_tactical (3 agents)"), ("strategic", "act_strategic (2 agents)")):
        p50, p99 = results[f"{name}_p50_us"], results[f"{name}_p99_us"]
        t50, t99 = results[f"torch_{name}_p50_us"], results[f"torch_{name}_p99_us"]
        results[f"{name}_speedup_vs_torch"] = t50 / p50
        print(f"   {label:<28}{p50:>10.1f}{p99:>10.1f}{t50:>12.1f}{t99:>12.1f}{t50 / p50:>13.1f}x")
    print(f"   goal: tactical p99 < 200 us -> {'met' if results['tactical_p99_us'] < 200 else 'NOT met'}")
    attr = attribution_latency()
    results.update(attr)
    print("\n2. attributions per agent call (top 3, all 5 shipped agents on real matrices, one core)")
    print(f"   {'':<28}{'p50 us':>10}{'p99 us':>10}")
    print(f"   {'analytic (numba, float64)':<28}{attr['attr_p50_us']:>10.1f}{attr['attr_p99_us']:>10.1f}")
    print(
        f"   {'torch autograd (baseline)':<28}{attr['attr_torch_p50_us']:>10.1f}{attr['attr_torch_p99_us']:>10.1f}"
    )
    print(f"   {'speed-up':<28}{attr['attr_speedup_p50']:>9.1f}x{attr['attr_speedup_p99']:>9.1f}x")
    if not args.skip_training:
        print("\n3. default training (sage train agents defaults, 1 training thread)")
        tr = training_time(args.total_steps)
        results.update(tr)
        for k, v in tr.items():
            print(f"   {k:<32}{v:,.2f}")
    return results


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
