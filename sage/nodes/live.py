"""Assemble and run a Nautilus ``TradingNode`` from a YAML file: offline paper trading or real venues.

The YAML is a NautilusTrader ``TradingNodeConfig``: every top-level key is Nautilus's own. Clients are
written the way Nautilus's ``ImportableConfig`` spells them (``path`` to the config class, ``config``,
``factory: {path: ...}``), so the same file format drives the offline replay (``configs/live_paper.yaml``)
and real adapters (``configs/live_templates/``). sage adds what a command line and a reproducible run
need:

* ``${NAME}`` placeholders resolved from the environment at load time (a missing variable is an error
  naming it and the key that uses it); resolved values are redacted from the ``config.json`` Nautilus
  writes next to the streamed data, so credentials never land in files;
* validation before anything starts, with errors naming the offending key (unknown keys included,
  which msgspec would otherwise ignore silently), reusing :class:`sage.nodes.backtest.ConfigError`;
* overrides for the replay clients (``--catalog``, speed, bar limit) and the persistence directory;
* :func:`run_live`: build, run until the replay ends (or a timeout), collect the reports, dispose,
  and convert the streamed custom data into the persistence catalog.

Every ``Data`` type listed in ``streaming.include_types`` (e.g. ``sage.data.types:DecisionRecord``) is
persisted by Nautilus's ``StreamingFeatherWriter`` while the node runs and converted to Parquet after.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pandas as pd
from nautilus_trader.common.config import NautilusConfig, resolve_path
from nautilus_trader.config import (
    ImportableActorConfig,
    ImportableExecAlgorithmConfig,
    ImportableStrategyConfig,
    LiveDataClientConfig,
    LiveExecClientConfig,
    StreamingConfig,
    TradingNodeConfig,
)
from nautilus_trader.core.data import Data
from nautilus_trader.live.factories import LiveDataClientFactory, LiveExecClientFactory
from nautilus_trader.live.node import TradingNode
from nautilus_trader.model.data import Bar
from nautilus_trader.model.identifiers import Venue
from nautilus_trader.persistence.catalog import ParquetDataCatalog
from nautilus_trader.persistence.funcs import class_to_filename
from nautilus_trader.system.kernel import NautilusKernel

from sage.data.sample import DEFAULT_CATALOG
from sage.nodes.backtest import ConfigError, read_yaml_mapping
from sage.nodes.replay_client import ReplayDataClient, ReplayDataClientConfig, ReplayStats

__all__ = [
    "DEFAULT_PERSIST_DIR",
    "LiveConfig",
    "LiveOutcome",
    "build_node",
    "load_live_config",
    "run_live",
]

#: Where streamed data goes when ``streaming.catalog_path`` is null and no ``persist`` is given
#: (relative to the working directory; ``runs/`` is git-ignored in the sage repository).
DEFAULT_PERSIST_DIR = Path("runs")

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_CLIENT_KEYS = {"path", "config", "factory"}
_CLIENT_SECTIONS = ("data_clients", "exec_clients")
#: Third-party modules some Nautilus adapters import, and the nautilus_trader extra providing them.
_ADAPTER_EXTRAS = {
    "ibapi": "ib",
    "betfair_parser": "betfair",
    "docker": "docker",
    "py_clob_client": "polymarket",
}


@dataclass(frozen=True)
class LiveConfig:
    """A validated node config and the client factories its entries name.

    ``node.data_clients`` / ``node.exec_clients`` hold concrete client config objects (decoded with
    Nautilus's own ``NautilusConfig.parse``, so ``InstrumentId`` and other typed fields work); the
    factories are registered on the node under the same names by :func:`build_node`.
    """

    node: TradingNodeConfig
    data_factories: Mapping[str, type[LiveDataClientFactory]]
    exec_factories: Mapping[str, type[LiveExecClientFactory]]
    source: Path
    secrets: frozenset[str] = frozenset()  #: values substituted from the environment (redacted)


@dataclass
class LiveOutcome:
    """What one live run did, gathered before the node was disposed."""

    instance_id: str
    stop_reason: str  #: "replay finished", "timeout" or "stopped" (signal / other component)
    wall_secs: float  #: from node.run() to its return (start, trading and graceful stop)
    replay: dict[str, ReplayStats]  #: per replay client id
    fills: pd.DataFrame
    orders: pd.DataFrame  #: one row per filled order
    positions: pd.DataFrame
    account: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: every order of the run, whatever its status (``Trader.generate_orders_report``), with its tags
    order_history: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: the risk engine's trading state when the node stopped: "ACTIVE", "REDUCING" or "HALTED"
    trading_state: str = "ACTIVE"
    #: per strategy id, the state it hands Nautilus when saved (``Strategy.save()``, i.e. ``on_save``):
    #: what ``save_state: true`` wrote to the cache database when the node stopped
    strategy_states: dict[str, dict[str, bytes]] = field(default_factory=dict)
    stream_dir: Path | None = None  #: <persist>/live/<instance_id> with the feather files
    persist_catalog: Path | None = None  #: catalog the streamed custom data was converted into
    converted: list[str] = field(default_factory=list)  #: data classes converted to Parquet
    #: Tasks Nautilus left pending after the node stopped, which were then cancelled. Expected: one
    #: ``ActorExecutor._worker`` per strategy/actor (``Actor.stop`` re-creates its worker task).
    cancelled_tasks: list[str] = field(default_factory=list)
    #: Tasks of the node's loop not finished after dispose (must be empty).
    pending_after_dispose: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few plain lines for a terminal: why it stopped, what it replayed and traded, where data is."""
        lines = [f"node {self.instance_id}: stopped ({self.stop_reason}) after {self.wall_secs:.1f} s"]
        for client, stats in self.replay.items():
            span = ""
            if stats.first_original_ns is not None and stats.last_original_ns is not None:
                first = pd.Timestamp(stats.first_original_ns, tz="UTC")
                last = pd.Timestamp(stats.last_original_ns, tz="UTC")
                span = f", data {first:%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M} UTC"
            error = f", error: {stats.error}" if stats.error else ""
            derived = f" (+{stats.derived_emitted:,d} derived)" if stats.derived_emitted else ""
            lines.append(
                f"  {client}: {stats.bars_emitted:,d} of {stats.bars_loaded:,d} bars replayed{derived}{span}{error}"
            )
        lines.append(
            f"  {len(self.orders)} filled orders, {len(self.fills)} fills, {len(self.positions)} positions"
        )
        if self.trading_state != "ACTIVE":
            lines.append(f"  trading state {self.trading_state} (kill switch or risk engine)")
        for venue, report in self.account.items():
            if len(report):
                last_row = report.iloc[-1]
                lines.append(f"  {venue} balance: {last_row['total']} {last_row['currency']}")
        if self.stream_dir is not None:
            lines.append(f"  streamed to {self.stream_dir}")
        if self.converted:
            lines.append(f"  converted {', '.join(self.converted)} into catalog {self.persist_catalog}")
        return "\n".join(lines)


# -- loading ---------------------------------------------------------------------------------------


def load_live_config(
    path: Path | str,
    catalog: Path | str | None = None,
    *,
    speed: float | str | None = None,
    max_bars: int | None = None,
    persist: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
) -> LiveConfig:
    """Read, resolve and validate a ``TradingNodeConfig`` YAML.

    ``catalog``, ``speed`` and ``max_bars`` override the fields of every replay data client;
    ``persist`` replaces ``streaming.catalog_path`` (a null one defaults to :data:`DEFAULT_PERSIST_DIR`).
    ``environ`` defaults to ``os.environ``. Raises :class:`ConfigError` naming the file and key.
    """
    path = Path(path)
    raw = _read_yaml(path)
    raw, secrets = _resolve_env(raw, os.environ if environ is None else environ, path)
    _reject_unknown(
        raw,
        TradingNodeConfig,
        "",
        path,
        skip=set(_CLIENT_SECTIONS) | {"strategies", "actors", "exec_algorithms"},
    )

    data_clients, data_factories = _clients(
        raw, "data_clients", LiveDataClientConfig, LiveDataClientFactory, path
    )
    exec_clients, exec_factories = _clients(
        raw, "exec_clients", LiveExecClientConfig, LiveExecClientFactory, path
    )
    data_clients = _override_replay(data_clients, catalog, speed, max_bars, path)
    _check_components(raw, path)
    streaming = _streaming(raw.pop("streaming", None), persist, path)
    for key in (*_CLIENT_SECTIONS, "streaming"):
        raw.pop(key, None)
    try:
        node = TradingNodeConfig.parse(json.dumps(raw))
    except (msgspec.ValidationError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {_keyed(exc, '')}") from None
    node = msgspec.structs.replace(
        node, data_clients=data_clients, exec_clients=exec_clients, streaming=streaming
    )
    return LiveConfig(node, data_factories, exec_factories, path, frozenset(secrets))


def _read_yaml(path: Path) -> dict[str, Any]:
    return read_yaml_mapping(path, "a mapping of TradingNodeConfig keys")


def _resolve_env(raw: Any, environ: Mapping[str, str], path: Path) -> tuple[Any, set[str]]:
    """Replace ``${NAME}`` in every string; all missing names are reported at once, with their keys."""
    missing: dict[str, list[str]] = {}
    used: set[str] = set()

    def sub(value: Any, where: str) -> Any:
        if isinstance(value, dict):
            return {k: sub(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [sub(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if not isinstance(value, str):
            return value

        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                missing.setdefault(name, []).append(where)
                return match.group(0)
            if environ[name]:
                used.add(environ[name])
            return environ[name]

        return _ENV_PATTERN.sub(one, value)

    resolved = sub(raw, "")
    if missing:
        detail = "; ".join(f"{name} (used at {', '.join(keys)})" for name, keys in sorted(missing.items()))
        raise ConfigError(f"{path}: environment variable(s) not set: {detail}")
    return resolved, used


def _clients(
    raw: dict[str, Any],
    section: str,
    base: type[NautilusConfig],
    factory_base: type,
    path: Path,
) -> tuple[dict[str, Any], dict[str, type]]:
    entries = raw.get(section) or {}
    if not isinstance(entries, dict):
        raise ConfigError(f"{path}: {section} must be a mapping of client name -> {{path, config, factory}}")
    configs: dict[str, Any] = {}
    factories: dict[str, type] = {}
    for key, entry in entries.items():
        where = f"{section}.{key}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: {where} must be a mapping with path, config and factory")
        unknown = sorted(set(entry) - _CLIENT_KEYS)
        if unknown:
            raise ConfigError(
                f"{path}: unknown key(s) {[f'{where}.{k}' for k in unknown]}; expected {sorted(_CLIENT_KEYS)}"
            )
        config_cls = _import(entry.get("path"), f"{where}.path", path)
        if not (isinstance(config_cls, type) and issubclass(config_cls, base)):
            raise ConfigError(f"{path}: {where}.path: {entry['path']} is not a {base.__name__}")
        factory = entry.get("factory")
        if not isinstance(factory, dict) or set(factory) != {"path"}:
            raise ConfigError(f"{path}: {where}.factory must be {{path: module:FactoryClass}}")
        factory_cls = _import(factory["path"], f"{where}.factory.path", path)
        if not (isinstance(factory_cls, type) and issubclass(factory_cls, factory_base)):
            raise ConfigError(
                f"{path}: {where}.factory.path: {factory['path']} is not a {factory_base.__name__}"
            )
        # TradingNodeBuilder looks factories up by the part of the key before the first "-".
        name = str(key).partition("-")[0]
        if factories.get(name, factory_cls) is not factory_cls:
            raise ConfigError(f"{path}: {where}: clients named {name}-* must share one factory")
        factories[name] = factory_cls
        body = entry.get("config") or {}
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: {where}.config must be a mapping")
        configs[key] = _parse(config_cls, body, f"{where}.config", path)
    return configs, factories


def _override_replay(
    clients: dict[str, Any],
    catalog: Path | str | None,
    speed: float | str | None,
    max_bars: int | None,
    path: Path,
) -> dict[str, Any]:
    out = dict(clients)
    for key, cfg in clients.items():
        if not isinstance(cfg, ReplayDataClientConfig):
            continue
        where = f"data_clients.{key}.config"
        changes: dict[str, Any] = {}
        if catalog is not None:
            changes["catalog_path"] = str(Path(catalog).resolve())
        elif not cfg.catalog_path:
            # Like every sage command that reads a catalog: default to the bundled sample catalog.
            changes["catalog_path"] = str(DEFAULT_CATALOG.resolve())
        if speed is not None:
            changes["speed"] = _speed(speed, where, path)
        if max_bars is not None:
            changes["max_bars"] = max_bars
        if changes:
            body = {**_jsonable(cfg), **changes}
            cfg = _parse(type(cfg), body, where, path)
        if not cfg.catalog_path:
            raise ConfigError(f"{path}: {where}.catalog_path is empty; pass --catalog PATH")
        _check_catalog(cfg, where, path)
        out[key] = cfg
    return out


def _speed(value: float | str, where: str, path: Path) -> float | str:
    if isinstance(value, str) and value.strip().lower() == "max":
        return "max"
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{path}: {where}.speed: {value!r} is neither a number nor 'max'") from None


def _check_catalog(cfg: ReplayDataClientConfig, where: str, path: Path) -> None:
    """Fail at load time, naming the key, rather than as a log line from a running node."""
    root = Path(cfg.catalog_path or "")
    if not root.is_dir():
        raise ConfigError(f"{path}: {where}.catalog_path: catalog {root} does not exist")
    catalog = ParquetDataCatalog(str(root))
    for i, bar_type in enumerate(cfg.bar_types):
        if not catalog.get_intervals(Bar, bar_type):
            raise ConfigError(f"{path}: {where}.bar_types[{i}]: no {bar_type} bars in catalog {root}")


def _check_components(raw: dict[str, Any], path: Path) -> None:
    """Decode each strategy/actor/exec-algorithm config the way Nautilus's factories will, so errors
    name the key."""
    for section, importable, cls_key in (
        ("strategies", ImportableStrategyConfig, "strategy_path"),
        ("actors", ImportableActorConfig, "actor_path"),
        ("exec_algorithms", ImportableExecAlgorithmConfig, "exec_algorithm_path"),
    ):
        entries = raw.get(section) or []
        if not isinstance(entries, list):
            raise ConfigError(f"{path}: {section} must be a list")
        for i, entry in enumerate(entries):
            where = f"{section}[{i}]"
            if not isinstance(entry, dict):
                raise ConfigError(f"{path}: {where} must be a mapping with {cls_key}, config_path and config")
            _reject_unknown(entry, importable, where, path, skip={"config"})
            _import(entry.get(cls_key), f"{where}.{cls_key}", path)
            config_cls = _import(entry.get("config_path"), f"{where}.config_path", path)
            _parse(config_cls, entry.get("config") or {}, f"{where}.config", path)


def _streaming(raw: Any, persist: Path | str | None, path: Path) -> StreamingConfig | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: streaming must be a mapping (StreamingConfig)")
    raw = dict(raw)
    names = raw.pop("include_types", None)
    types: list[type] | None = None
    if names is not None:
        if not isinstance(names, list):
            raise ConfigError(f"{path}: streaming.include_types must be a list of module:Class paths")
        types = [_import(name, f"streaming.include_types[{i}]", path) for i, name in enumerate(names)]
    if persist is not None:
        raw["catalog_path"] = str(Path(persist).resolve())
    elif not raw.get("catalog_path"):
        raw["catalog_path"] = str(DEFAULT_PERSIST_DIR.resolve())
    config = _parse(StreamingConfig, raw, "streaming", path)
    return msgspec.structs.replace(config, include_types=types)


def _parse(cls: type, body: dict[str, Any], where: str, path: Path) -> Any:
    _reject_unknown(body, cls, where, path)
    try:
        return cls.parse(json.dumps(body))
    except (msgspec.ValidationError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {where}: {_keyed(exc, where)}") from None


def _keyed(exc: Exception, where: str) -> str:
    """msgspec says "... - at `$.speed`"; say "... - at `data_clients.REPLAY.config.speed`"."""
    text = str(exc)
    return text.replace("`$.", f"`{where}." if where else "`").replace("`$[", f"`{where}[")


def _import(dotted: Any, where: str, path: Path) -> Any:
    if not isinstance(dotted, str) or ":" not in dotted:
        raise ConfigError(f"{path}: {where} must be 'module.path:Name', was {dotted!r}")
    try:
        return resolve_path(dotted)
    except ModuleNotFoundError as exc:
        extra = _ADAPTER_EXTRAS.get((exc.name or "").partition(".")[0])
        hint = f"; install it with pip install 'nautilus_trader[{extra}]'" if extra else ""
        raise ConfigError(f"{path}: {where}: cannot import {dotted} ({exc}){hint}") from None
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{path}: {where}: cannot import {dotted} ({exc})") from None


def _reject_unknown(raw: Any, cls: type, where: str, path: Path, skip: Iterable[str] = ()) -> None:
    """msgspec ignores unknown fields; a typo like ``sped: 1`` must not silently become the default."""
    unknown: list[str] = []
    _walk(raw, mi.type_info(cls), where, unknown, frozenset(skip))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown} (see the Nautilus config class of that section)")


def _walk(value: Any, info: Any, where: str, unknown: list[str], skip: frozenset[str] = frozenset()) -> None:
    """Collect keys of ``value`` that the msgspec type ``info`` does not have, recursing into structs."""

    def join(key: Any) -> str:
        return f"{where}.{key}" if where else str(key)

    if isinstance(info, mi.StructType) and isinstance(value, dict):
        fields = {f.encode_name: f for f in info.fields}
        for key, item in value.items():
            if key in skip:
                continue
            if key not in fields:
                unknown.append(join(key))
            else:
                _walk(item, fields[key].type, join(key), unknown)
    elif isinstance(info, mi.UnionType) and isinstance(value, dict):
        structs = [t for t in info.types if isinstance(t, mi.StructType)]
        if len(structs) == 1:
            _walk(value, structs[0], where, unknown)
    elif isinstance(info, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)) and isinstance(
        value, list
    ):
        for i, item in enumerate(value):
            _walk(item, info.item_type, f"{where}[{i}]", unknown)
    elif isinstance(info, mi.DictType) and isinstance(value, dict):
        for key, item in value.items():
            _walk(item, info.value_type, join(key), unknown)


def _jsonable(config: NautilusConfig) -> dict[str, Any]:
    return json.loads(config.json())


# -- building and running --------------------------------------------------------------------------


def build_node(config: LiveConfig, loop: asyncio.AbstractEventLoop | None = None) -> TradingNode:
    """Create and build a ``TradingNode`` on ``loop`` (default: a new loop, set as the current one).

    Must be called from the main thread: Nautilus installs SIGINT/SIGTERM handlers on the loop, and
    those stop the node gracefully. Replay clients get an idle probe over the node's engine queues.
    """
    if loop is None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
    node = TradingNode(config=config.node, loop=loop)
    for name, factory in config.data_factories.items():
        node.add_data_client_factory(name, factory)
    for name, factory in config.exec_factories.items():
        node.add_exec_client_factory(name, factory)
    node.build()
    probe = _engines_idle(node.kernel)
    for client in _replay_clients(node):
        client.set_idle_probe(probe)
    _redact_stream_config(node, config.secrets)
    return node


def run_live(
    config_path: Path | str,
    catalog: Path | str | None = None,
    *,
    speed: float | str | None = None,
    max_bars: int | None = None,
    persist: Path | str | None = None,
    timeout_secs: float | None = None,
) -> LiveOutcome:
    """Load, build and run a node until it stops; the entry point of ``sage live CONFIG``.

    The node stops by itself when a replay client with ``stop_node_on_end`` has emitted its last bar,
    on SIGINT/SIGTERM, or after ``timeout_secs`` (default ``None``: no limit, as for a real venue).
    Reports are collected before disposal; streamed custom data is converted into the persistence
    catalog afterwards (the feather files are complete only once the node is disposed).
    """
    config = load_live_config(config_path, catalog, speed=speed, max_bars=max_bars, persist=persist)
    node = build_node(config)
    loop = node.get_event_loop()
    assert loop is not None
    timed_out: list[bool] = []
    watchdog = None
    if timeout_secs is not None:
        watchdog = loop.call_later(timeout_secs, lambda: (timed_out.append(True), node.stop()))
    try:
        started = time.perf_counter()
        node.run()
        wall = time.perf_counter() - started
        if watchdog is not None:
            watchdog.cancel()
        outcome = _collect(node, config, wall, timed_out=bool(timed_out))
        outcome.cancelled_tasks = _cancel_leftovers(node)
    finally:
        node.dispose()
        asyncio.set_event_loop(None)
    outcome.pending_after_dispose = _names([t for t in asyncio.all_tasks(loop) if not t.done()])
    _convert_streams(outcome, config)
    return outcome


def _engines_idle(kernel: NautilusKernel) -> Callable[[], bool]:
    """True when the engines' queues are empty and no component timer is overdue.

    Overdue timers matter for exec algorithms: they start each parent order on a zero-delay time alert
    (``sage.execution.algorithms.base``), which the live clock fires on the loop a moment later; a
    replay at ``speed: max`` must not emit the next bar before it has fired, or where the first slice
    lands would depend on thread scheduling. Timers due in the future (slices, horizons) are not waited
    for: they run in wall time (see docs/live.md).
    """
    data, risk, exec_ = kernel.data_engine, kernel.risk_engine, kernel.exec_engine
    trader = kernel.trader
    clocks = [c.clock for c in (*trader.actors(), *trader.strategies(), *trader.exec_algorithms())]
    now_ns = kernel.clock.timestamp_ns

    def timers_overdue() -> bool:
        now = now_ns()
        for clock in clocks:
            for name in clock.timer_names:
                due = clock.next_time_ns(name)
                if 0 < due <= now:
                    return True
        return False

    def idle() -> bool:
        return not (
            data.data_qsize()
            or data.cmd_qsize()
            or data.req_qsize()
            or data.res_qsize()
            or risk.cmd_qsize()
            or risk.evt_qsize()
            or exec_.cmd_qsize()
            or exec_.evt_qsize()
            or timers_overdue()
        )

    return idle


def _replay_clients(node: TradingNode) -> list[ReplayDataClient]:
    # ``_clients`` is a read-only attribute of the Cython DataEngine (declared ``readonly`` in its
    # .pxd); the engine has no public accessor returning client objects.
    clients = node.kernel.data_engine._clients.values()
    return [c for c in clients if isinstance(c, ReplayDataClient)]


def _redact_stream_config(node: TradingNode, secrets: frozenset[str]) -> None:
    """Nautilus writes the whole node config to ``<stream>/config.json``; put placeholders back."""
    writer = node.kernel.writer
    if writer is None or not secrets:
        return
    target = f"{writer.path}/config.json"
    with writer.fs.open(target, "rb") as f:
        data = json.loads(f.read())

    # Whole values always; inside longer strings (a token in a URL) only from 4 characters on, so a
    # short value such as "1" does not mangle unrelated text.
    embedded = [s for s in secrets if len(s) >= 4]

    def scrub(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        if isinstance(value, str):
            if value in secrets:
                return "***"
            for secret in embedded:
                value = value.replace(secret, "***")
        return value

    with writer.fs.open(target, "wb") as f:
        f.write(json.dumps(scrub(data)).encode())


def _collect(node: TradingNode, config: LiveConfig, wall: float, *, timed_out: bool) -> LiveOutcome:
    trader = node.trader
    replay = {str(c.id): c.stats for c in _replay_clients(node)}
    if timed_out:
        reason = "timeout"
    elif replay and all(s.finished for s in replay.values()):
        reason = "replay finished"
    else:
        reason = "stopped"
    venues = sorted({str(getattr(cfg, "venue", "")) for cfg in config.node.exec_clients.values()} - {""})
    writer = node.kernel.writer
    streaming = config.node.streaming
    return LiveOutcome(
        instance_id=node.instance_id.value,
        stop_reason=reason,
        wall_secs=wall,
        replay=replay,
        fills=trader.generate_fills_report(),
        orders=trader.generate_order_fills_report(),
        positions=trader.generate_positions_report(),
        account={v: trader.generate_account_report(Venue(v)) for v in venues},
        order_history=trader.generate_orders_report(),
        trading_state=node.kernel.risk_engine.trading_state.name,
        strategy_states={str(s.id): dict(s.save()) for s in trader.strategies()},
        stream_dir=Path(writer.path) if writer is not None else None,
        persist_catalog=Path(streaming.catalog_path) if streaming is not None else None,
    )


def _cancel_leftovers(node: TradingNode) -> list[str]:
    """Name and cancel tasks still pending after ``run()`` returned (there should be none)."""
    loop = node.get_event_loop()
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    if pending:
        node.kernel.cancel_all_tasks()
    return _names(pending)


def _names(tasks: Iterable[asyncio.Task]) -> list[str]:
    return [getattr(t.get_coro(), "__qualname__", t.get_name()) for t in tasks]


def _convert_streams(outcome: LiveOutcome, config: LiveConfig) -> None:
    streaming = config.node.streaming
    if streaming is None or not streaming.include_types or outcome.persist_catalog is None:
        return
    catalog = ParquetDataCatalog(str(outcome.persist_catalog))
    for cls in streaming.include_types:
        if not (isinstance(cls, type) and issubclass(cls, Data)) or outcome.stream_dir is None:
            continue
        name = class_to_filename(cls)
        if not any(outcome.stream_dir.glob(f"{name}/**/*.feather")) and not any(
            outcome.stream_dir.glob(f"{name}_*.feather")
        ):
            continue  # nothing of this type was published during the run
        catalog.convert_stream_to_data(outcome.instance_id, cls, subdirectory="live")
        outcome.converted.append(cls.__name__)
