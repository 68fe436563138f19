"""run_tasks: results in task order on every engine, failures captured per task, dead workers isolated."""

from __future__ import annotations

import os
import time

import pytest

from sage.sweep.engine import EngineError, TaskError, TaskFailed, run_tasks


def _square_slowly(x: int) -> int:
    time.sleep(0.05 * (4 - x % 4))  # later tasks finish first
    return x * x


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three is not allowed")
    return x


def _die_on_two(x: int) -> int:
    if x == 2:
        os._exit(9)  # a segfault / OOM kill, as far as the pool can tell
    time.sleep(0.2)
    return x


def _threads(_: int) -> str:
    return os.environ.get("OMP_NUM_THREADS", "")


@pytest.mark.parametrize("engine", ["serial", "pool"])
def test_results_come_back_in_task_order(engine: str) -> None:
    progress: list[tuple[int, int]] = []
    out = run_tasks(_square_slowly, range(8), engine=engine, workers=2,
                    on_done=lambda d, t: progress.append((d, t)))  # fmt: skip
    assert out == [x * x for x in range(8)]
    assert progress[-1] == (8, 8) and len(progress) == 8


def test_errors_are_captured_or_raised_in_task_order() -> None:
    out = run_tasks(_fail_on_three, range(5), engine="pool", workers=2, on_error="capture")
    assert out[:3] == [0, 1, 2] and out[4] == 4
    err = out[3]
    assert isinstance(err, TaskError) and err.index == 3 and err.error_type == "ValueError"
    assert "three is not allowed" in str(err) and "_fail_on_three" in err.traceback
    with pytest.raises(TaskFailed, match="three is not allowed"):
        run_tasks(_fail_on_three, range(5), engine="serial")


def test_a_dying_worker_fails_only_its_own_task() -> None:
    out = run_tasks(_die_on_two, range(5), engine="pool", workers=2, on_error="capture")
    assert [o for i, o in enumerate(out) if i != 2] == [0, 1, 3, 4]
    assert isinstance(out[2], TaskError) and out[2].error_type == "WorkerCrashed"


def test_workers_are_limited_to_one_thread_each() -> None:
    assert run_tasks(_threads, range(2), engine="pool", workers=2) == ["1", "1"]


def test_bad_engine_arguments() -> None:
    assert run_tasks(_square_slowly, [], engine="pool") == []
    with pytest.raises(EngineError, match="engine must be one of"):
        run_tasks(_square_slowly, [1], engine="dask")  # type: ignore[arg-type]
    with pytest.raises(EngineError, match="workers"):
        run_tasks(_square_slowly, [1], workers=0)
