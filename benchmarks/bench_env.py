"""Benchmark of the MARL environment: agent-steps per second, vectorised kernel vs plain-Python loop.

Run from the repo root::

    python -m benchmarks.bench_env                      # n_envs 1024 and 4096
    python -m benchmarks.bench_env --envs 256 4096 --steps 100

An *agent-step* is one agent's transition (one env step = 5 agent-steps). Goal (issue): > 1M
agent-steps/s on one core. Timed per ``VecMarketEnv.step`` call: action validation, the numba step
kernel (PnL, costs, rewards, auto-reset, account and joint vectors) and, depending on the mode, the
observation windows:

* ``indices``  -- no windows (``gather_windows=False``): account, joint and the row indices a trainer
  uses to gather windows itself (e.g. on its own device);
* ``windows``  -- full observation materialisation: every env's 60x7 tactical and 48x13 strategic
  window copied into (n_envs, ...) float32 arrays, reused buffers;
* ``windows, fresh`` -- as ``windows`` but new arrays every step (the default, safe mode).

The baseline is :class:`sage.training.env_kernels.ReferenceMarketEnv`, the plain-Python loop that
defines the same dynamics (the tests require equal results), stepped env by env in the same run, with
its windows copied too. Actions are drawn up front (policy cost excluded). The kernel is
single-threaded; the process is pinned to one core (``--no-pin`` to\nallow all) and rates are wall-clock (this sandbox's process CPU\naccounting over-reports, so CPU time is not used).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from sage.data.synthetic import SyntheticMarketConfig
from sage.training.env import EnvConfig, EnvData, VecMarketEnv
from sage.training.env_kernels import ReferenceMarketEnv

GOAL = 1_000_000.0
N_AGENTS = 5


def _time_vec(data: EnvData, n_envs: int, steps: int, repeat: int, **kwargs) -> float:
    """Best wall-clock agent-steps/s of ``steps`` env steps over ``repeat`` runs."""
    env = VecMarketEnv(data, EnvConfig(), n_envs=n_envs, seed=0, **kwargs)
    env.reset()
    rng = np.random.default_rng(0)
    actions = [rng.integers(0, 5, size=(n_envs, N_AGENTS), dtype=np.int64) for _ in range(8)]
    env.step(actions[0])  # load / compile
    best = 0.0
    for _ in range(repeat):
        w0 = time.perf_counter()
        for k in range(steps):
            env.step(actions[k % 8])
        best = max(best, steps * n_envs * N_AGENTS / (time.perf_counter() - w0))
    return best


def _time_reference(data: EnvData, n_envs: int, steps: int) -> float:
    config = EnvConfig()
    starts = data.episode_starts(config.episode_len)
    rng = np.random.default_rng(0)
    envs = [ReferenceMarketEnv(data, config) for _ in range(n_envs)]
    for env in envs:
        env.reset(int(rng.choice(starts)))
    actions = rng.integers(0, 5, size=(steps, n_envs, N_AGENTS))
    w0 = time.perf_counter()
    for k in range(steps):
        for i, env in enumerate(envs):
            _, _, _, term, trunc, _ = env.step(actions[k, i])
            if term or trunc:
                env.reset(int(rng.choice(starts)))
            np.array(data.tactical_window(env.t))
            np.array(data.strategic_window(env.t))
    return steps * n_envs * N_AGENTS / (time.perf_counter() - w0)


def _pin_one_core() -> int | None:
    """Restrict this process to one CPU core so "per core" is literal (Linux; no-op elsewhere)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--envs", type=int, nargs="+", default=[1024, 4096], help="n_envs values (default 1024 4096)"
    )
    parser.add_argument("--steps", type=int, default=200, help="env steps per timing run (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="timing runs, best kept (default 3)")
    parser.add_argument(
        "--ref-envs", type=int, default=32, help="envs of the Python reference loop (default 32)"
    )
    parser.add_argument(
        "--ref-steps", type=int, default=100, help="steps of the Python reference loop (default 100)"
    )
    parser.add_argument("--bars", type=int, default=60_000, help="synthetic 1-minute bars (default 60,000)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU core")
    args = parser.parse_args(argv)
    pinned = _pin_one_core() if not args.no_pin else None

    t0 = time.perf_counter()
    data = EnvData.from_synthetic(SyntheticMarketConfig(seed=7, n_bars=args.bars))
    print(f"sage.training.env benchmark: {data.describe()}  (prepared in {time.perf_counter() - t0:.1f} s)")
    print(f"pinned to CPU core {pinned}" if pinned is not None else "not pinned (all cores allowed)")

    ref_wall = _time_reference(data, args.ref_envs, args.ref_steps)
    print(f"\n{'mode':<34}{'n_envs':>7}{'agent-steps/s':>16}{'x python':>10}  goal > 1M")
    print(f"{'python reference loop (windows)':<34}{args.ref_envs:>7}{ref_wall:>16,.0f}{1.0:>10.1f}")
    results: dict[str, float] = {"python_agent_steps_per_s": ref_wall}
    modes = (
        ("indices", {"gather_windows": False, "reuse_buffers": True}),
        ("windows", {"gather_windows": True, "reuse_buffers": True}),
        ("windows, fresh", {"gather_windows": True, "reuse_buffers": False}),
    )
    for n_envs in args.envs:
        for name, kwargs in modes:
            wall = _time_vec(data, n_envs, args.steps, args.repeat, **kwargs)
            verdict = "PASS" if wall > GOAL else "FAIL"
            label = f"numba, {name}"
            print(f"{label:<34}{n_envs:>7}{wall:>16,.0f}{wall / ref_wall:>10.0f}  {verdict}")
            key = name.replace(", ", "_")
            results[f"vec_{key}_{n_envs}_agent_steps_per_s"] = wall
            results[f"vec_{key}_{n_envs}_speedup"] = wall / ref_wall
    print(f"\n(total {time.perf_counter() - t0:.1f} s)")
    return results


if __name__ == "__main__":
    main()
