"""Declarative, validated ``exec_algorithm_params`` for the sage execution algorithms.

Why a table instead of ``dict.get`` calls scattered through each algorithm: a primary order with a
misspelt or out-of-range parameter must be *denied with a reason* before any child exists, never
half-executed with a silent default. Each algorithm declares its parameters once as :class:`Param` rows;
:func:`parse_params` applies defaults, coerces types and checks bounds, and names every problem at once.
The same rows document the defaults (``docs/execution.md`` lists them), so code and docs cannot drift on
which keys exist.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

ParamKind = Literal["float", "int", "choice", "bool"]


class ParamError(ValueError):
    """Raised when ``exec_algorithm_params`` cannot be accepted; the message lists every problem."""


class _Required:
    """Sentinel default: the key must be given."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Param:
    """One accepted key of ``exec_algorithm_params``.

    ``minimum``/``maximum`` are inclusive unless ``exclusive_minimum`` is set (``horizon_secs > 0``);
    ``default=None`` means "optional, no value" (e.g. Stealth's ``seed`` falls back to a derived seed).
    """

    name: str
    kind: ParamKind
    default: Any
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    choices: tuple[str, ...] = ()

    def coerce(self, value: Any) -> Any:
        """Return ``value`` as this parameter's type, or raise ``ValueError``/``TypeError`` saying why not."""
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            raise TypeError(f"must be a bool, got {value!r}")
        if self.kind == "choice":
            text = str(value).lower()
            if text not in self.choices:
                raise ValueError(f"must be one of {self.choices}, got {value!r}")
            return text
        if isinstance(value, bool):  # bool is an int subclass; True seconds is a bug, not a value
            raise TypeError(f"must be a number, got {value!r}")
        if self.kind == "int":
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, int):
                try:
                    value = int(str(value))
                except ValueError:
                    raise ValueError(f"must be an integer, got {value!r}") from None
            number: float = value
        else:
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"must be a number, got {value!r}") from None
            if not math.isfinite(value):
                raise ValueError(f"must be finite, got {value!r}")
            number = value
        if self.minimum is not None:
            if self.exclusive_minimum and number <= self.minimum:
                raise ValueError(f"must be > {self.minimum:g}, got {value!r}")
            if not self.exclusive_minimum and number < self.minimum:
                raise ValueError(f"must be >= {self.minimum:g}, got {value!r}")
        if self.maximum is not None and number > self.maximum:
            raise ValueError(f"must be <= {self.maximum:g}, got {value!r}")
        return value


def parse_params(raw: Mapping[str, Any] | None, specs: tuple[Param, ...], algorithm: str) -> dict[str, Any]:
    """Validate ``raw`` against ``specs``: unknown keys, missing required keys and bad values all fail.

    Returns a plain dict with every declared key present (defaults filled in). Raises
    :class:`ParamError` listing all problems, so one denial tells the user everything to fix.
    """
    raw = dict(raw or {})
    known = {p.name for p in specs}
    problems = [
        f"unknown key {key!r} (known: {', '.join(sorted(known)) or 'none'})"
        for key in sorted(raw)
        if key not in known
    ]
    out: dict[str, Any] = {}
    for spec in specs:
        if spec.name not in raw or raw[spec.name] is None:
            if spec.default is REQUIRED:
                problems.append(f"{spec.name!r} is required ({spec.doc})")
            out[spec.name] = None if spec.default is REQUIRED else spec.default
            continue
        try:
            out[spec.name] = spec.coerce(raw[spec.name])
        except (TypeError, ValueError) as exc:
            problems.append(f"{spec.name!r} {exc}")
    if problems:
        raise ParamError(f"{algorithm} exec_algorithm_params rejected: " + "; ".join(problems))
    return out


#: Parameters shared by the slicing algorithms that can send marketable-limit children.
CHILD_TYPE = Param(
    "child_type",
    "choice",
    "market",
    "'market' children (GTC, always fill) or 'limit' marketable-limit children (IOC, never rest)",
    choices=("market", "limit"),
)
LIMIT_OFFSET_TICKS = Param(
    "limit_offset_ticks",
    "int",
    1,
    "ticks added to (buy) / taken from (sell) the reference price for 'limit' children",
    minimum=0,
)
AT_HORIZON = Param(
    "at_horizon",
    "choice",
    None,
    "what happens to quantity still unfilled at the horizon: 'complete' (one final sweep) or 'cancel'; "
    "default from the algorithm config",
    choices=("complete", "cancel"),
)
