"""``sage train encoder``, ``sage train agents`` and ``sage evaluate agents`` (see ``docs/agents.md``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _train_encoder(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sage.training.encoder import config_from_args, train_encoder

    console = Console(soft_wrap=True)
    config = config_from_args(args)
    command = "sage train encoder " + " ".join(args._argv) if getattr(args, "_argv", None) else "sage train encoder"
    result = train_encoder(config, out_dir=args.out, progress=True, command=command, log=console.print)
    holdout = result.metrics["holdout"]
    for task in ("expansion", "swing", "candle"):
        m = holdout[task]
        console.print(
            f"  {task:9s} held-out balanced accuracy {m['balanced_accuracy']:.3f} "
            f"(accuracy {m['accuracy']:.3f}, majority class {m['majority_accuracy']:.3f})"
        )
    assert result.manifest is not None
    console.print(
        f"encoder written to {args.out} in {result.seconds:.1f} s (sha256 {result.manifest.weights_sha256[:16]}...)"
    )
    return 0


def _train_agents(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sage.training.agents import config_from_args, train_agents

    console = Console(soft_wrap=True)
    config = config_from_args(args)
    command = "sage train agents " + " ".join(args._argv) if getattr(args, "_argv", None) else "sage train agents"
    result = train_agents(config, out_dir=args.out, progress=True, command=command)
    last = result.history[-1]
    manifest = result.ensemble.manifest
    console.print(
        f"agents written to {args.out} in {result.seconds:.1f} s: {len(result.history)} updates, "
        f"episode return {last['episode_return']:+.4f}, entropy {last['entropy']:.3f}, "
        f"sha256 {manifest.weights_sha256[:16]}...; learning curves: {args.out / 'learning_curves.png'}"
    )
    return 0


def _evaluate_agents(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sage.training.evaluate_agents import EvaluationConfig, run_evaluation

    console = Console(soft_wrap=True)
    config = EvaluationConfig(model=args.model, catalog=str(args.catalog) if args.catalog else None)
    report = run_evaluation(config, out_dir=args.out, log=console.print)
    console.print(report.markdown, markup=False, highlight=False)
    console.print(f"written: {args.out / 'agents_evaluation.md'}, {args.out / 'agents_evaluation.json'}")
    return 0


def register(groups, argv: list[str]) -> None:
    """Add the agents' sub-commands (their options are only built when they are the command run)."""
    heavy = argv[:2] in (["train", "encoder"], ["train", "agents"], ["evaluate", "agents"])
    enc = groups.train.add_parser("encoder", help="pretrain the BiLSTM bar encoder (self-supervised, deterministic)")
    agents = groups.train.add_parser("agents", help="train the five MARL agents with MAPPO (deterministic)")
    ev = groups.evaluate.add_parser(
        "agents", help="walk-forward out-of-sample evaluation of the agents vs buy-and-hold and EMA cross"
    )
    if heavy:
        from sage.training.agents import add_arguments as add_agents
        from sage.training.encoder import add_arguments as add_encoder

        add_encoder(enc)
        add_agents(agents)
    ev.add_argument("--catalog", type=Path, default=None, help="sample catalog with ES/EUR-USD bars (default catalogs/sample)")
    ev.add_argument("--model", default="default", help="agents checkpoint: name or directory (default: default)")
    ev.add_argument("--out", type=Path, default=Path("runs/agents-evaluation"), help="output directory")
    enc.set_defaults(func=_train_encoder, _argv=argv[2:])
    agents.set_defaults(func=_train_agents, _argv=argv[2:])
    ev.set_defaults(func=_evaluate_agents)
