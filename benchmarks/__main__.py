"""The benchmark harness: ``python -m benchmarks`` (what ``make bench`` calls).

Runs every ``benchmarks/bench_*.py`` (each in its own subprocess, so one benchmark's CPU pinning, thread
settings, frozen GC or memory do not leak into the next), prints each one's own table as it runs,
collects what each ``main(argv)`` returns, adds a per-component latency probe, and writes

* ``benchmarks/results/latest.json`` -- every returned number, per-component latencies, the full-stack
  throughput ratios and goals, run metadata (machine, load average, versions, git commit);
* ``benchmarks/results/latest.md``   -- the same as tables (printed at the end of the run);
* ``benchmarks/results/logs/<name>.txt`` -- each benchmark's printed output.

Modes (argument lists per benchmark are in :data:`PROFILES`):

* default  -- sized to finish in about 15 minutes on an idle 2-core machine (``make bench``): the
  full-stack backtest over 100k bars instead of 1M, agent training skipped, the rest at their defaults
  or slightly smaller;
* ``--quick`` -- a smoke run (a few minutes): every benchmark with its smallest settings;
* ``--full``  -- every benchmark at its own defaults (1M-bar full stack, default agent training).

``--only NAME ...`` / ``--skip NAME ...`` select benchmarks by short name (``full_stack``, ``regime``,
...; ``components`` is the latency probe); ``--list`` shows them with their arguments.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
COMPONENTS = "components"

#: Run first, in this order; any other ``benchmarks/bench_*.py`` follows in name order.
_FIRST = (
    "writer",
    "features",
    "execution",
    "regime_models",
    "regime",
)

#: Per benchmark: (default-mode argv, --quick argv). ``--full`` passes no arguments. A benchmark not
#: listed runs with no arguments in every mode.
PROFILES: dict[str, tuple[list[str], list[str]]] = {
    COMPONENTS: ([], ["--quick"]),
    "writer": (
        [],
        ["--rows", "100000", "--object-rows", "20000", "--write-data-rows", "2000", "--repeat", "1"],
    ),
    "features": ([], ["--bars", "100000", "--updates", "10000", "--repeat", "1"]),
    "execution": (["--reps", "2"], ["--reps", "1", "--sizes", "0.25", "5", "--markets", "synthetic"]),
    "regime_models": ([], ["--quick"]),
    "regime": ([], []),
    "agents": (["--skip-training"], ["--skip-training"]),
    "combiner": ([], ["--n", "2000"]),
    "env": (
        [],
        [
            "--envs",
            "256",
            "--steps",
            "20",
            "--repeat",
            "1",
            "--ref-envs",
            "8",
            "--ref-steps",
            "20",
            "--bars",
            "20000",
        ],
    ),
    "forecast_adapters": ([], ["--quick", "--calls", "50"]),
    "risk": ([], []),
    "full_stack": (["--bars", "100000"], ["--quick"]),
}

#: Goals the harness judges from returned numbers: (benchmark, key, comparison, threshold, label).
GOALS: tuple[tuple[str, str, str, float, str], ...] = (
    ("full_stack", "sage_streaming_over_noop", ">=", 0.25, "full-stack throughput >= 25% of no-op's"),
    ("full_stack", "sage_streaming_over_ema_cross", ">=", 2.0, "full-stack throughput >= 2x EMACross's"),
    (
        "full_stack",
        "sage_streaming_growth_mb_per_1m",
        "<",
        100.0,
        "full-stack memory growth < 100 MB / 1M bars (judged on a 1M-bar run only)",
    ),
    (
        "full_stack",
        "sage_replay_over_sage_streaming",
        ">=",
        3.0,
        "precompute + replay >= 3x faster than streaming",
    ),
    (COMPONENTS, "features_stream_p99_us", "<", 20.0, "FeatureStream.update p99 < 20 us"),
    ("agents", "tactical_p99_us", "<", 200.0, "tactical agents p99 < 200 us"),
    ("risk", "mrms_propose_p99_us", "<", 200.0, "M-RMS proposal p99 < 200 us"),
)


def discover() -> tuple[str, ...]:
    found = sorted(p.stem.removeprefix("bench_") for p in Path(__file__).parent.glob("bench_*.py"))
    return (*(n for n in _FIRST if n in found), *(n for n in found if n not in _FIRST), COMPONENTS)


BENCHMARKS = discover()


def argv_for(name: str, mode: str) -> list[str]:
    standard, quick = PROFILES.get(name, ([], []))
    return {"default": standard, "quick": quick, "full": []}[mode]


# -- the per-component latency probe ---------------------------------------------------------------------


def components_probe(argv: list[str]) -> dict[str, float]:
    """Latencies no benchmark returns yet, measured the way the owning benchmarks measure them.

    * ``FeatureStream.update(Bar)`` and the tactical/strategic ``MatrixStream.update(Bar)`` p50/p99
      (``bench_features``' own timing helpers, synthetic bars);
    * the ``RegimeActor`` per model -- the shipped ``default`` bundle and the reference-scale RDE
      (``REFERENCE_BUNDLE``: d_model 256, 3 layers, 8 heads; seeded weights saved as a checkpoint,
      timing does not depend on their values) -- inside a real ``BacktestEngine`` over the ES sample
      bars (``bench_regime.actor_cost``): the detector stream's own p50/p99 and the actor's mean cost
      per bar (engine with the actor minus without).
    """
    import logging

    import numpy as np
    import torch

    from benchmarks import bench_features, bench_regime
    from sage.data.synthetic import SyntheticMarketConfig, generate_bars
    from sage.features import FeatureStream
    from sage.features.matrices import MatrixStream
    from sage.models.bundle import REFERENCE_BUNDLE, RegimeModelBundle

    parser = argparse.ArgumentParser(prog="python -m benchmarks --only components")
    parser.add_argument("--quick", action="store_true", help="fewer feature updates")
    args = parser.parse_args(argv)
    logging.getLogger("sage").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    out: dict[str, float] = {}

    n = 5_000 if args.quick else 50_000
    bars = bench_features._nautilus_bars(generate_bars(SyntheticMarketConfig(seed=7, n_bars=n)))
    print(f"features: streaming updates over {n:,} synthetic bars")
    for key, make in (
        ("features_stream", FeatureStream),
        ("tactical_matrix", lambda: MatrixStream("tactical")),
        ("strategic_matrix", lambda: MatrixStream("strategic")),
    ):
        stream = make()
        stream.update(bars[0])  # load the kernel
        stream.reset()
        lat = bench_features._latencies(stream.update, bars)
        out[f"{key}_p50_us"], out[f"{key}_p99_us"] = (float(x) for x in np.percentile(lat, [50, 99]))
        print(f"  {key:<20} p50 {out[f'{key}_p50_us']:8.2f} us  p99 {out[f'{key}_p99_us']:8.2f} us")

    print("regime actor in a BacktestEngine over the ES sample bars, per model")
    with tempfile.TemporaryDirectory(prefix="bench_components_") as tmp:
        reference = Path(tmp) / "regime-reference"
        RegimeModelBundle.from_config(REFERENCE_BUNDLE, seed=0).save(reference, name="regime-reference-bench")
        for key, model in (("regime_default", "default"), ("regime_reference", str(reference))):
            cost = bench_regime.actor_cost(model)
            out[f"{key}_stream_p50_us"] = cost["stream_p50_us"]
            out[f"{key}_stream_p99_us"] = cost["stream_p99_us"]
            out[f"{key}_actor_us_per_bar"] = cost["actor_us_per_bar"]
            print(
                f"  {key:<20} stream p50 {cost['stream_p50_us']:8.1f} us  p99 {cost['stream_p99_us']:8.1f} us  "
                f"actor {cost['actor_us_per_bar']:8.1f} us/bar ({cost['bars']:,} bars)"
            )
    return out


# -- running one benchmark in a child process -------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """Returned values as strict JSON: non-finite floats become null, numpy scalars plain numbers,
    anything else unknown its string form."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    if isinstance(value, float) or hasattr(value, "dtype"):
        if float(f).is_integer() and "int" in str(getattr(value, "dtype", "")):
            return int(f)
        return f if math.isfinite(f) else None
    return str(value)


def _child(name: str, argv: list[str], result_path: Path) -> int:
    """Inside the subprocess: run one benchmark's ``main(argv)``, write what it returned as JSON."""
    if name == COMPONENTS:
        returned: Any = components_probe(argv)
    else:
        import importlib

        returned = importlib.import_module(f"benchmarks.bench_{name}").main(argv)
    result_path.write_text(json.dumps(_jsonable(returned), allow_nan=False))
    return 0


def run_one(name: str, argv: list[str], log_dir: Path) -> dict[str, Any]:
    """Run one benchmark in a subprocess, its output shown live and kept in ``log_dir/<name>.txt``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.txt"
    with tempfile.TemporaryDirectory(prefix="bench_harness_") as tmp:
        result_path = Path(tmp) / "result.json"
        cmd = [
            sys.executable,
            "-u",
            "-m",
            "benchmarks",
            "--child",
            name,
            "--child-result",
            str(result_path),
            "--",
            *argv,
        ]
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        )
        started = time.perf_counter()
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                log.write(line)
            code = proc.wait()
        seconds = time.perf_counter() - started
        returned = json.loads(result_path.read_text()) if code == 0 and result_path.exists() else None
    return {
        "argv": argv,
        "status": "ok" if code == 0 else "failed",
        "returncode": code,
        "seconds": round(seconds, 2),
        "results": returned,
        "log": str(log_path.relative_to(RESULTS_DIR))
        if log_path.is_relative_to(RESULTS_DIR)
        else str(log_path),
    }


# -- summary ---------------------------------------------------------------------------------------------


def _get(runs: dict[str, Any], bench: str, key: str) -> float | None:
    results = (runs.get(bench) or {}).get("results")
    if not isinstance(results, dict):
        return None
    value = results.get(key)
    return float(value) if isinstance(value, (int, float)) else None


#: The per-component latency table: (component, source benchmark, p50 key, p99 key, what is timed).
COMPONENT_ROWS = (
    (
        "features: FeatureStream.update(Bar)",
        COMPONENTS,
        "features_stream_p50_us",
        "features_stream_p99_us",
        "full feature set, one bar",
    ),
    (
        "features: tactical MatrixStream",
        COMPONENTS,
        "tactical_matrix_p50_us",
        "tactical_matrix_p99_us",
        "60x7 matrix, one bar",
    ),
    (
        "features: strategic MatrixStream",
        COMPONENTS,
        "strategic_matrix_p50_us",
        "strategic_matrix_p99_us",
        "48x13 matrix, one bar",
    ),
    (
        "regime actor: default model",
        COMPONENTS,
        "regime_default_stream_p50_us",
        "regime_default_stream_p99_us",
        "detector stream per bar, in a BacktestEngine",
    ),
    (
        "regime actor: reference RDE",
        COMPONENTS,
        "regime_reference_stream_p50_us",
        "regime_reference_stream_p99_us",
        "same, d_model 256 x 3 layers",
    ),
    (
        "agents: act_tactical (3 agents)",
        "agents",
        "tactical_p50_us",
        "tactical_p99_us",
        "per 5-minute decision",
    ),
    (
        "agents: act_strategic (2 agents)",
        "agents",
        "strategic_p50_us",
        "strategic_p99_us",
        "per 30-minute bar",
    ),
    (
        "M-RMS: propose",
        "risk",
        "mrms_propose_p50_us",
        "mrms_propose_p99_us",
        "features + ensemble + decision",
    ),
    ("combiner: step + build_decision", "combiner", "decision_p50_us", "decision_p99_us", "per decision"),
)


def summarise(runs: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    components = []
    for label, bench, k50, k99, note in COMPONENT_ROWS:
        components.append(
            {
                "component": label,
                "source": bench,
                "p50_us": _get(runs, bench, k50),
                "p99_us": _get(runs, bench, k99),
                "note": note,
            }
        )
    for model in ("default", "reference"):
        per_bar = _get(runs, COMPONENTS, f"regime_{model}_actor_us_per_bar")
        if per_bar is not None:
            for row in components:
                if row["component"].endswith("default model" if model == "default" else "reference RDE"):
                    row["note"] += f"; actor mean {per_bar:,.0f} us/bar incl. publish"
    goals = []
    for bench, key, op, threshold, label in GOALS:
        value = _get(runs, bench, key)
        verdict = (
            "n/a"
            if value is None
            else ("PASS" if (value >= threshold if op == ">=" else value < threshold) else "FAIL")
        )
        goals.append(
            {
                "goal": label,
                "source": bench,
                "key": key,
                "value": value,
                "target": f"{op} {threshold:g}",
                "verdict": verdict,
            }
        )
    fs = (runs.get("full_stack") or {}).get("results") or {}
    full_stack: dict[str, Any] = {}
    if isinstance(fs, dict) and fs:
        full_stack = {"bars": fs.get("bars"), "variants": {}}
        for variant in ("noop", "ema_cross", "sage_streaming", "sage_replay"):
            if f"{variant}_bars_per_s" in fs:
                full_stack["variants"][variant] = {
                    k.removeprefix(f"{variant}_"): v
                    for k, v in fs.items()
                    if k.startswith(f"{variant}_") and "_over_" not in k
                }
        full_stack["ratios"] = {k: v for k, v in fs.items() if "_over_" in k}
        full_stack["replay_matches_streaming"] = fs.get("replay_matches_streaming")
    return components, goals, full_stack


def _fmt(x: Any, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if not math.isfinite(x):
            return "-"
        return f"{x:,.{digits}f}"
    return str(x)


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"# sage benchmarks ({report['mode']} mode)",
        "",
        (
            f"{report['created']} · commit {report['git']['commit'] or '?'}{' (dirty)' if report['git']['dirty'] else ''}"
            f" · {m['cpus']} CPUs · load average {m['load_average_start'][0]:.2f} at start, "
            f"{m['load_average_end'][0]:.2f} at end · python {m['python']} · nautilus_trader {m['nautilus_trader']}"
            f" · torch {m['torch']} · total {report['total_s'] / 60:.1f} min"
        ),
        "",
        "## Per-component latency (one bar / one decision, one thread)",
        "",
        "| component | p50 us | p99 us | source | timed |",
        "|---|---:|---:|---|---|",
    ]
    for row in report["components"]:
        lines.append(
            f"| {row['component']} | {_fmt(row['p50_us'])} | {_fmt(row['p99_us'])} | {row['source']} | {row['note']} |"
        )
    fs = report["full_stack"]
    if fs:
        lines += [
            "",
            f"## Full-stack backtest ({_fmt(fs['bars'], 0)} synthetic 1-minute bars, same venue, same run)",
            "",
            "| variant | bars/s (cpu) | bars/s (wall) | first / last tenth bars/s | orders | orders in cache at end | fills | peak RSS MB | RSS growth MB / 100k bars |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        labels = {
            "noop": "no-op strategy",
            "ema_cross": "EMACross",
            "sage_streaming": "SAGE streaming (actor live)",
            "sage_replay": "SAGE precompute + replay",
        }
        for variant, v in fs["variants"].items():
            lines.append(
                f"| {labels[variant]} | {_fmt(v.get('bars_per_s_cpu'), 0)} | {_fmt(v.get('bars_per_s'), 0)} | "
                f"{_fmt(v.get('first_tenth_bars_per_s'), 0)} / {_fmt(v.get('last_tenth_bars_per_s'), 0)} | {_fmt(v.get('orders'), 0)} | "
                f"{_fmt(v.get('orders_in_cache_at_end'), 0)} | {_fmt(v.get('fills'), 0)} | {_fmt(v.get('peak_rss_mb'), 0)} | {_fmt(v.get('growth_mb_per_100k'))} |"
            )
        if fs.get("replay_matches_streaming") is not None:
            lines += [
                "",
                f"Replay reproduced the streaming run's decisions and fills: {bool(fs['replay_matches_streaming'])}.",
            ]
    lines += ["", "## Goals", "", "| goal | value | target | verdict |", "|---|---:|---|---|"]
    for g in report["goals"]:
        lines.append(f"| {g['goal']} | {_fmt(g['value'], 2)} | {g['target']} | {g['verdict']} |")
    lines += [
        "",
        "## Benchmarks run",
        "",
        "| benchmark | arguments | status | seconds | headline numbers returned |",
        "|---|---|---|---:|---:|",
    ]
    for name, run in report["benchmarks"].items():
        returned = run["results"]
        count = len(returned) if isinstance(returned, (dict, list)) else 0
        lines.append(
            f"| {name} | `{' '.join(run['argv']) or '(defaults)'}` | {run['status']} | {run['seconds']:.0f} | {count} |"
        )
    lines += [
        "",
        "Every benchmark's printed tables are in `benchmarks/results/logs/`; every number in `latest.json`.",
        "",
    ]
    return "\n".join(lines)


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("nautilus_trader", "torch", "numba", "numpy"):
        try:
            from importlib.metadata import version

            out[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - metadata only, never fatal
            out[pkg] = "?"
    return out


def _git() -> dict[str, Any]:
    def run(*args: str) -> str | None:
        try:
            return subprocess.run(
                ["git", *args], check=False, cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    status = run("status", "--porcelain")
    return {"commit": run("rev-parse", "--short", "HEAD") or None, "dirty": bool(status)}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", action="store_true", help="smoke run: every benchmark at its smallest settings"
    )
    mode.add_argument(
        "--full",
        action="store_true",
        help="every benchmark at its own defaults (slow: 1M-bar full stack, agent training)",
    )
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks")
    parser.add_argument("--skip", nargs="+", metavar="NAME", default=[], help="do not run these benchmarks")
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR, help=f"results directory (default {RESULTS_DIR})"
    )
    parser.add_argument(
        "--list", action="store_true", help="list the benchmarks and their arguments, then exit"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-result", type=Path, help=argparse.SUPPRESS)
    if "--" in argv:
        split = argv.index("--")
        argv, passthrough = argv[:split], argv[split + 1 :]
    else:
        passthrough = []
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.child, passthrough, args.child_result)

    mode_name = "quick" if args.quick else "full" if args.full else "default"
    unknown = sorted((set(args.only or []) | set(args.skip)) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    selected = [n for n in BENCHMARKS if (not args.only or n in args.only) and n not in args.skip]
    if args.list:
        for name in BENCHMARKS:
            print(f"{name:<20} {' '.join(argv_for(name, mode_name)) or '(defaults)'}")
        return 0

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    print(
        f"sage benchmarks, {mode_name} mode: {', '.join(selected)}  (load average {load_start[0]:.2f})",
        flush=True,
    )
    runs: dict[str, Any] = {}
    for name in selected:
        bench_argv = argv_for(name, mode_name)
        print(f"\n=== {name} {' '.join(bench_argv)} ===", flush=True)
        runs[name] = run_one(name, bench_argv, out / "logs")
        print(f"({name}: {runs[name]['status']}, {runs[name]['seconds']:.1f} s)", flush=True)
    components, goals, full_stack = summarise(runs)
    report = {
        "schema": 1,
        "created": created,
        "mode": mode_name,
        "total_s": round(time.perf_counter() - started, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_start": list(load_start),
            "load_average_end": list(os.getloadavg()),
            **_versions(),
        },
        "git": _git(),
        "components": components,
        "full_stack": full_stack,
        "goals": goals,
        "benchmarks": runs,
    }
    (out / "latest.json").write_text(json.dumps(_jsonable(report), indent=2, allow_nan=False) + "\n")
    text = markdown(report)
    (out / "latest.md").write_text(text)
    print("\n" + text)
    print(f"written: {out / 'latest.json'}, {out / 'latest.md'}")
    failed = [n for n, r in runs.items() if r["status"] != "ok"]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
