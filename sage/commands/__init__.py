"""Sub-command plug-ins for the ``sage`` command line.

Each module in this package defines ``register(groups: CommandGroups, argv: list[str]) -> None`` and
adds its sub-commands to the groups it extends. Modules are discovered by name, so a new command is a
new file and ``sage/cli.py`` does not grow. Top-level imports must stay light (argparse only): import
torch, Nautilus or pandas inside the handler, so ``sage catalog info`` does not pay for them.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from dataclasses import dataclass


@dataclass(frozen=True)
class CommandGroups:
    """The sub-parser collections a plug-in may add to: ``sage X``, ``sage train X``,
    ``sage evaluate X``."""

    root: argparse._SubParsersAction
    train: argparse._SubParsersAction
    evaluate: argparse._SubParsersAction


def register_all(groups: CommandGroups, argv: list[str]) -> None:
    """Import every plug-in module of this package (sorted by name) and let it register."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(groups, argv)
