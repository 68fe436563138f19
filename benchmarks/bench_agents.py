"""Agents benchmark: per-bar inference latency of the shipped agents and the default training wall time.

``python -m benchmarks.bench_agents [--skip-training] [--total-steps N]`` prints:

1. **Inference latency per bar** (shipped ``agents-default``, one core): ``act_tactical`` -- the three
   tactical agents together, including input checks, the numba engine and the ``AgentOutput`` objects --
   and ``act_strategic`` (two agents), p50/p99 over real tactical/strategic matrices of a synthetic
   market; next to the **baseline measured in the same run**: a plain eager torch forward of the same
   actors (batch 1, ``no_grad``, one call per agent, plus the critic), reported as a ratio. Goal:
   tactical p99 < 200 us.
2. **Default training wall time** (``sage train agents`` defaults: pretrained encoder + MAPPO, one
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


def training_time(total_steps: int | None = None) -> dict[str, float]:
    import msgspec

    from sage.training.agents import AgentsTrainConfig, load_env_data, train_agents

    config = AgentsTrainConfig()
    if total_steps is not None:
        config = msgspec.structs.replace(config, mappo=msgspec.structs.replace(config.mappo, total_steps=total_steps))
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
    parser.add_argument("--skip-training", action="store_true", help="only measure inference")
    parser.add_argument("--total-steps", type=int, default=None, help="shorter training (default: the default run)")
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
    if not args.skip_training:
        print("\n2. default training (sage train agents defaults, 1 training thread)")
        tr = training_time(args.total_steps)
        results.update(tr)
        for k, v in tr.items():
            print(f"   {k:<32}{v:,.2f}")
    return results


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
