"""``sage train risk`` and ``sage evaluate risk`` (M-RMS). Heavy imports happen inside the handlers."""

from __future__ import annotations

import argparse
from pathlib import Path


def _train(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sage.training.risk import run_train_risk

    return run_train_risk(args, Console())


def _evaluate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sage.training.risk import run_evaluate_risk

    return run_evaluate_risk(args, Console())


def register(groups, argv: list[str]) -> None:
    train = groups.train.add_parser(
        "risk",
        help="train the M-RMS risk model deterministically (reproduces the shipped weights)",
        description="Supervised contextual-bandit training of the three M-RMS sub-agents on simulated "
        "bracket outcomes of rule-signal candidate trades in seeded synthetic markets. See docs/risk.md.",
    )
    train.add_argument("--out", type=Path, default=Path("runs/mrms-default"),
                       help="checkpoint directory (default runs/mrms-default; "
                       "sage/assets/models/mrms-default replaces the shipped weights)")
    train.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    train.add_argument("--steps", type=int, default=None, help="optimizer steps (default 1500)")
    train.add_argument("--bars-per-seed", type=int, default=None, help="1-minute bars per training market")
    train.set_defaults(func=_train)

    evaluate = groups.evaluate.add_parser(
        "risk",
        help="walk-forward evaluation: M-RMS vs the rule fallback vs a fixed-size baseline",
        description="Writes risk_evaluation.md and risk_evaluation.json to --out. See docs/risk.md.",
    )
    evaluate.add_argument("--out", type=Path, default=Path("runs/risk-evaluation"),
                          help="output directory (default runs/risk-evaluation)")
    evaluate.add_argument("--model", default="default", help="M-RMS checkpoint for the held-out rows (default: shipped)")
    evaluate.add_argument("--bars", type=int, default=600_000, help="1-minute bars of the walk-forward market")
    evaluate.add_argument("--fold-steps", type=int, default=600, help="training steps per fold (default 600)")
    evaluate.set_defaults(func=_evaluate)
