"""Run independent tasks in parallel: a local process pool (default) or Ray, results in task order.

``run_tasks(fn, tasks, engine=...)`` is the one primitive: sweeps map backtests over it, trainers map
seeds over it. It is deliberately generic -- ``fn`` is any picklable top-level function of one
argument -- and its result list is in the order of ``tasks`` whatever order workers finish in, so
the same inputs give the same output on every engine.

Why processes and not threads: a Nautilus engine, numba kernels and torch each hold the GIL or their
own thread pools; independent backtests only scale across processes. Workers are *spawned* (not
forked): Nautilus's Rust logger and torch's thread pools do not survive ``fork`` reliably. Each worker
limits BLAS/OpenMP/numba/torch to ``threads_per_worker`` threads (default 1) so N workers use N cores.

Failures: with ``on_error="capture"`` an exception inside ``fn`` becomes a :class:`TaskError` in the
result list (the other tasks still run). A worker process that dies outright (segfault, OOM kill)
breaks a ``ProcessPoolExecutor`` for every task in flight; those tasks are re-run one at a time in
fresh processes, so only the task that really kills its worker is reported as failed.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

EngineName = Literal["serial", "pool", "ray"]
ENGINES: tuple[str, ...] = ("serial", "pool", "ray")
OnError = Literal["raise", "capture"]

T = TypeVar("T")
R = TypeVar("R")

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


class EngineError(RuntimeError):
    """The engine could not run (Ray missing or unreachable, bad worker count)."""


class TaskFailed(RuntimeError):
    """Raised by :func:`run_tasks` with ``on_error="raise"``; ``error`` is the first failure in task order."""

    def __init__(self, error: TaskError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class TaskError:
    """A task that raised (or whose worker died). Picklable, so it crosses process boundaries."""

    index: int  #: position of the task in ``tasks``
    error_type: str  #: exception class name, e.g. ``ValueError`` or ``WorkerCrashed``
    message: str
    traceback: str = ""

    def __str__(self) -> str:
        return f"{self.error_type}: {self.message}"


def default_workers() -> int:
    """Cores this process may use (respects CPU affinity / container limits)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def run_tasks(
    fn: Callable[[T], R],
    tasks: Sequence[T],
    *,
    engine: EngineName = "pool",
    workers: int | None = None,
    ray_address: str | None = None,
    on_error: OnError = "raise",
    threads_per_worker: int = 1,
    on_done: Callable[[int, int], None] | None = None,
) -> list[R | TaskError]:
    """``[fn(t) for t in tasks]``, computed by ``engine``; element i belongs to ``tasks[i]``.

    engine: ``"pool"`` (local spawned processes, ``workers`` of them, default: all cores), ``"ray"``
        (a local Ray instance with ``num_cpus=workers``, or the cluster at ``ray_address``) or
        ``"serial"`` (this process; for debugging and for ``fn`` that must share memory).
    on_error: ``"raise"`` raises :class:`TaskFailed` for the first failing task (in task order, once
        all tasks are done); ``"capture"`` puts a :class:`TaskError` in that task's place.
    on_done: called as ``on_done(n_done, n_total)`` after each task completes (progress bars).
    """
    if engine not in ENGINES:
        raise EngineError(f"engine must be one of {ENGINES}, got {engine!r}")
    if workers is not None and workers < 1:
        raise EngineError(f"workers must be >= 1, got {workers}")
    workers = workers or default_workers()
    tasks = list(tasks)
    if not tasks:
        return []
    if engine == "serial":
        results = []
        for i, task in enumerate(tasks):
            results.append(_call(fn, i, task, None))
            if on_done:
                on_done(i + 1, len(tasks))
    elif engine == "pool":
        results = _run_pool(fn, tasks, min(workers, len(tasks)), threads_per_worker, on_done)
    else:
        results = _run_ray(fn, tasks, workers, ray_address, threads_per_worker, on_done)
    if on_error == "raise":
        first = next((r for r in results if isinstance(r, TaskError)), None)
        if first is not None:
            raise TaskFailed(first)
    return results


# -- the call every engine makes in its worker --------------------------------------------------------


def _limit_threads(n: int | None) -> None:
    if n is None:
        return
    for var in _THREAD_VARS:
        os.environ[var] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _call(fn: Callable[[T], R], index: int, task: T, threads: int | None) -> R | TaskError:
    """Run one task, turning an exception into a :class:`TaskError` (tracebacks do not always pickle)."""
    _limit_threads(threads)
    try:
        return fn(task)
    except Exception as exc:  # noqa: BLE001 - reported per task, by design
        return TaskError(index, type(exc).__name__, str(exc), traceback.format_exc())


# -- local process pool --------------------------------------------------------------------------------


def _run_pool(
    fn: Callable[[T], R],
    tasks: list[T],
    workers: int,
    threads: int,
    on_done: Callable[[int, int], None] | None,
) -> list[R | TaskError]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    ctx = multiprocessing.get_context("spawn")
    results: list[Any] = [None] * len(tasks)
    broken: list[int] = []
    done = 0
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_limit_threads,
                             initargs=(threads,)) as pool:  # fmt: skip
        futures = {pool.submit(_call, fn, i, task, threads): i for i, task in enumerate(tasks)}
        for future in as_completed(futures):
            i = futures[future]
            try:
                results[i] = future.result()
            except BrokenProcessPool:
                broken.append(i)
                continue
            done += 1
            if on_done:
                on_done(done, len(tasks))
    # A dead worker takes every in-flight task with it; re-run those one at a time in a single-worker
    # pool (replaced after each crash) so only the task that really kills its worker is reported.
    pool = None
    try:
        for i in sorted(broken):
            if pool is None:
                pool = ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_limit_threads,
                                           initargs=(threads,))  # fmt: skip
            try:
                results[i] = pool.submit(_call, fn, i, tasks[i], threads).result()
            except BrokenProcessPool as exc:
                results[i] = TaskError(i, "WorkerCrashed", f"the worker process died running this task ({exc})")
                pool.shutdown(wait=True)
                pool = None
            done += 1
            if on_done:
                on_done(done, len(tasks))
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    return results


# -- Ray -------------------------------------------------------------------------------------------------


def _run_ray(
    fn: Callable[[T], R],
    tasks: list[T],
    workers: int,
    address: str | None,
    threads: int,
    on_done: Callable[[int, int], None] | None,
) -> list[R | TaskError]:
    try:
        import ray
    except ImportError:
        raise EngineError(
            "engine 'ray' needs Ray: pip install -c constraints.txt 'ray==2.60.0' (or sage[ray])"
        ) from None
    started = False
    if not ray.is_initialized():
        try:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise EngineError(f"could not start or reach Ray ({address or 'local'}): {exc}") from exc
        started = True
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(_call)
        refs = [remote.remote(fn, i, task, threads) for i, task in enumerate(tasks)]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(tasks)
        pending, done = list(refs), 0
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                i = index[ref]
                try:
                    results[i] = ray.get(ref)
                except ray.exceptions.RayError as exc:  # worker died, object lost, ...
                    results[i] = TaskError(i, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
                done += 1
                if on_done:
                    on_done(done, len(tasks))
        return results
    finally:
        if started:
            ray.shutdown()
