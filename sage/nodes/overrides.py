"""``--instrument`` and ``--bar-type`` overrides: run a shipped config on a user's own ingested data.

A config names its instrument in several places (data entries, actor and strategy configs, composite
bar types such as ``ESU3.XCME-5-MINUTE-LAST-INTERNAL@1-MINUTE-EXTERNAL``). Editing them by hand is how
runs end up half on one instrument and half on another, so the overrides rewrite every occurrence at
once, refuse when the mapping is ambiguous, and rename the venue when the new instrument trades
elsewhere. They work on the raw YAML mapping before Nautilus parses it, so no Nautilus type is involved.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from sage.data.bar_types import bar_source, instrument_of
from sage.nodes.backtest import ConfigError

# Where instrument ids and bar types may appear in a BacktestRunConfig mapping.
_COMPONENT_LISTS = ("actors", "strategies", "exec_algorithms", "controller")
_ID_RE = re.compile(r"^(?P<symbol>.+)\.(?P<venue>[A-Za-z0-9_]+)$")


def _split_mapping(value: str, what: str) -> tuple[str | None, str]:
    if "=" in value:
        old, new = value.split("=", 1)
        if not old or not new:
            raise ConfigError(f"--{what} {value!r}: expected NEW or OLD=NEW")
        return old, new
    return None, value


def _venue_of(instrument_id: str) -> str:
    match = _ID_RE.match(instrument_id)
    if match is None:
        raise ConfigError(f"{instrument_id!r} is not an instrument id (SYMBOL.VENUE)")
    return match.group("venue")


def _instrument_of_bar_type(bar_type: str) -> str:
    try:
        return instrument_of(bar_type)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _strings(node: Any, path: str = "$"):
    """Every (path, string) in a nested mapping/list."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def _rewrite(node: Any, fn) -> Any:
    if isinstance(node, dict):
        return {key: _rewrite(value, fn) for key, value in node.items()}
    if isinstance(node, list):
        return [_rewrite(value, fn) for value in node]
    if isinstance(node, str):
        return fn(node)
    return node


def _targets(raw: dict[str, Any]) -> list[tuple[Any, Any]]:
    """(container, key) pairs whose subtrees may name instruments: data entries and component configs."""
    out: list[tuple[Any, Any]] = []
    for i, _entry in enumerate(raw.get("data") or []):
        out.append((raw["data"], i))
    engine = raw.get("engine") or {}
    for name in _COMPONENT_LISTS:
        items = engine.get(name)
        if isinstance(items, list):
            for i, item in enumerate(items):
                if isinstance(item, dict) and "config" in item:
                    out.append((item, "config"))
        elif isinstance(items, dict) and "config" in items:
            out.append((items, "config"))
    return out


def configured_instruments(raw: dict[str, Any]) -> list[str]:
    """Instrument ids the config's data entries load (from instrument_id(s) and bar_types)."""
    found: list[str] = []
    for entry in raw.get("data") or []:
        if not isinstance(entry, dict):
            continue
        ids = []
        if entry.get("instrument_id"):
            ids.append(entry["instrument_id"])
        ids += list(entry.get("instrument_ids") or [])
        ids += [_instrument_of_bar_type(bt) for bt in entry.get("bar_types") or []]
        for iid in ids:
            if iid not in found:
                found.append(iid)
    return found


def _replace_instrument_token(text: str, old: str, new: str) -> str:
    if text == old:
        return new
    if text.startswith(old + "-"):
        return new + text[len(old):]
    return text


def apply_overrides(raw: dict[str, Any], instrument: str | None = None, bar_type: str | None = None) -> dict[str, Any]:
    """Return ``raw`` with the instrument and/or base bar type replaced everywhere (a new mapping).

    ``instrument``: ``NEW`` (the config must load exactly one instrument) or ``OLD=NEW``.
    ``bar_type``: ``NEW`` (the config must load exactly one bar type) or ``OLD=NEW``; a bar type on
    another instrument implies the instrument override. Composite bar types built on the old one
    (``...@1-MINUTE-EXTERNAL``) follow the new step/aggregation/source.
    """
    raw = copy.deepcopy(raw)
    bar_swap: tuple[str, str] | None = None
    if bar_type is not None:
        old_bt, new_bt = _split_mapping(bar_type, "bar-type")
        all_bts = [bt for e in raw.get("data") or [] if isinstance(e, dict) for bt in e.get("bar_types") or []]
        if old_bt is None:
            if len(set(all_bts)) != 1:
                raise ConfigError(
                    f"--bar-type {new_bt}: the config loads {len(set(all_bts))} bar types {sorted(set(all_bts))}; "
                    "use --bar-type OLD=NEW"
                )
            old_bt = all_bts[0]
        elif old_bt not in all_bts:
            raise ConfigError(f"--bar-type: {old_bt!r} is not loaded by the config (it loads {sorted(set(all_bts))})")
        old_inst, new_inst = _instrument_of_bar_type(old_bt), _instrument_of_bar_type(new_bt)
        if old_inst != new_inst:
            if instrument is not None and _split_mapping(instrument, "instrument")[1] != new_inst:
                raise ConfigError(f"--instrument {instrument} contradicts --bar-type {new_bt}")
            instrument = f"{old_inst}={new_inst}"
            old_bt = new_inst + old_bt[len(old_inst):]  # after the instrument rewrite below
        bar_swap = (old_bt, new_bt)
    if instrument is not None:
        _override_instrument(raw, instrument)
    if bar_swap is not None:
        _override_bar_type(raw, *bar_swap)
    return raw


def _override_instrument(raw: dict[str, Any], instrument: str) -> None:
    old, new = _split_mapping(instrument, "instrument")
    loaded = configured_instruments(raw)
    if old is None:
        if len(loaded) != 1:
            raise ConfigError(
                f"--instrument {new}: the config loads {len(loaded)} instruments {loaded}; use --instrument OLD=NEW"
            )
        old = loaded[0]
    elif old not in loaded:
        raise ConfigError(f"--instrument: {old!r} is not loaded by the config (it loads {loaded})")
    for container, key in _targets(raw):
        container[key] = _rewrite(container[key], lambda s: _replace_instrument_token(s, old, new))
    old_venue, new_venue = _venue_of(old), _venue_of(new)
    venues = [v for v in raw.get("venues") or [] if isinstance(v, dict)]
    names = [v.get("name") for v in venues]
    if new_venue in names:
        return
    if old_venue not in names:
        raise ConfigError(f"--instrument {new}: venue {new_venue} is not configured and {old_venue} is not either")
    still_used = [i for i in configured_instruments(raw) if _venue_of(i) == old_venue]
    if still_used:
        raise ConfigError(
            f"--instrument {new}: venue {new_venue} is not configured and {old_venue} is still used by "
            f"{still_used}; add a venue named {new_venue} to the config"
        )
    raw["venues"] = [dict(v, name=new_venue) if v.get("name") == old_venue else v for v in venues]


def _bar_source(bar_type: str) -> str:
    """``1-MINUTE-EXTERNAL`` of ``X-1-MINUTE-LAST-EXTERNAL``: how composite bar types name their source."""
    try:
        return bar_source(bar_type)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _override_bar_type(raw: dict[str, Any], old_bt: str, new_bt: str) -> None:
    inst = _instrument_of_bar_type(old_bt)
    old_source, new_source = _bar_source(old_bt), _bar_source(new_bt)

    def swap(text: str) -> str:
        if text == old_bt:
            return new_bt
        if text.startswith(inst + "-") and text.endswith("@" + old_source):
            return text[: -len(old_source)] + new_source
        return text

    for container, key in _targets(raw):
        container[key] = _rewrite(container[key], swap)
