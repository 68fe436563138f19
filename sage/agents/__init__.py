"""sage.agents: the MARL trading agents (inference side).

* :mod:`sage.agents.observation` -- what an agent sees (agents, shapes, account vector, alignment);
  shared with the training environment.
* :mod:`sage.agents.ensemble` -- ``AgentEnsemble.load("default")``: ``act_tactical`` / ``act_strategic``
  -> ``AgentOutput`` (``to_signal`` -> ``AgentSignal``), ``attributions`` (gradient x input).
* :mod:`sage.agents.engine` -- the numba inference kernel behind the ensemble.

Heavy names (torch, numba) load lazily, so ``import sage.agents.observation`` stays light.
See ``docs/agents.md``.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "AgentEnsemble": "sage.agents.ensemble",
    "AgentOutput": "sage.agents.ensemble",
    "AgentInputError": "sage.agents.ensemble",
    "Attribution": "sage.agents.ensemble",
}

__all__ = ["AgentEnsemble", "AgentInputError", "AgentOutput", "Attribution"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sage.agents' has no attribute {name!r}")
