"""Sweep files expand into the right tasks, in a fixed order, and bad files fail before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sage.sweep.spec import (
    SweepSpec,
    SweepSpecError,
    expand_tasks,
    fold_windows,
    grid_points,
    load_sweep_spec,
    param_labels,
    set_dotted,
    to_nanos,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "configs" / "sweeps" / "ema_cross_es.yaml"
BASE = ROOT / "configs" / "sweeps" / "ema_cross_base.yaml"


def _sweep(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(f"base: {BASE}\n{body}")
    return path


def test_set_dotted_walks_mappings_and_lists_and_refuses_typos() -> None:
    config = {"engine": {"strategies": [{"config": {"a": 1}}]}, "data": [{"x": None}]}
    set_dotted(config, "engine.strategies.0.config.a", 5)
    set_dotted(config, "engine.strategies.0.config.new_field", [1, 2])  # a new leaf is allowed
    assert config["engine"]["strategies"][0]["config"] == {"a": 5, "new_field": [1, 2]}
    with pytest.raises(KeyError, match="'engine.strategy' does not exist"):
        set_dotted(config, "engine.strategy.0.config.a", 1)
    with pytest.raises(KeyError, match="not an index of a list of 1"):
        set_dotted(config, "engine.strategies.1.config.a", 1)
    with pytest.raises(KeyError, match="is a int"):
        set_dotted(config, "engine.strategies.0.config.a.b", 1)


def test_grid_order_and_labels() -> None:
    points = grid_points({"a.x": [1, 2], "b.y": ["p", "q", "r"]})
    assert [dict(p) for p in points][:4] == [
        {"a.x": 1, "b.y": "p"}, {"a.x": 1, "b.y": "q"}, {"a.x": 1, "b.y": "r"}, {"a.x": 2, "b.y": "p"},
    ]  # fmt: skip
    assert len(points) == 6 and grid_points({}) == [()]
    assert param_labels(["s.0.config.fast", "s.1.config.fast", "s.0.config.slow"]) == {
        "s.0.config.fast": "0.config.fast", "s.1.config.fast": "1.config.fast", "s.0.config.slow": "slow",
    }  # fmt: skip


@pytest.mark.parametrize("anchored", [False, True])
@pytest.mark.parametrize("n", [1, 2, 5])
def test_generated_folds_are_ordered_and_test_windows_never_overlap(n: int, anchored: bool) -> None:
    spec = SweepSpec(base="x", folds=n, train_fraction=0.6, anchored=anchored)
    first, last = 1_000, 1_000_000_999
    folds = fold_windows(spec, (first, last))
    assert len(folds) == n
    for k, ((tr0, tr1), (te0, te1)) in enumerate(folds):
        assert tr0 <= tr1 < te0 <= te1 and te0 == tr1 + 1  # train strictly before test, no shared bar
        assert tr0 == (first if anchored or k == 0 else folds[k - 1][1][1] + 1)
        if k:
            assert te0 > folds[k - 1][1][1]  # later folds only look further ahead
    assert folds[0][0][0] == first and folds[-1][1][1] == last  # the whole range is used


def test_iso_times_are_utc_unless_they_say_otherwise() -> None:
    assert to_nanos("2013-09-02") == to_nanos("2013-09-02T00:00:00Z") == 1378080000 * 10**9
    assert to_nanos("2013-09-02T02:00:00+02:00") == to_nanos("2013-09-02")
    assert to_nanos(5) == 5


def test_shipped_sweep_expands_in_table_order(sample_catalog: Path) -> None:
    spec, base = load_sweep_spec(SHIPPED)
    tasks = expand_tasks(spec, base, sample_catalog)
    assert len(tasks) == 3 * 2 * 2
    assert [(t.fold, t.split, t.point) for t in tasks[:4]] == [(0, "train", 0), (0, "train", 1), (0, "train", 2),
                                                              (0, "test", 0)]  # fmt: skip
    assert [t.index for t in tasks] == list(range(12))
    fast = [t.config["engine"]["strategies"][0]["config"]["fast_ema_period"] for t in tasks]
    assert fast == [5, 10, 20] * 4
    assert all(t.config["start"] == t.start and t.config["end"] == t.end for t in tasks)
    assert base["engine"]["strategies"][0]["config"]["fast_ema_period"] == 10  # the base is not mutated


def test_explicit_windows_need_no_catalog_range(tmp_path: Path) -> None:
    path = _sweep(tmp_path, """
folds:
  - {train: {start: "2013-09-02T00:00", end: "2013-09-02T06:00"}, test: {start: "2013-09-02T06:00:01", end: "2013-09-02T09:00"}}
grid: {engine.strategies.0.config.fast_ema_period: [5]}
""")
    spec, base = load_sweep_spec(path)
    tasks = expand_tasks(spec, base, tmp_path / "no-catalog-needed")
    assert [(t.split, t.start) for t in tasks] == [("train", to_nanos("2013-09-02T00:00")),
                                                   ("test", to_nanos("2013-09-02T06:00:01"))]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("grid: {engine.strategy.0.config.fast_ema_period: [5]}\n", r"grid: 'engine.strategy.0.config.fast_ema_period'"),
        ("set: {data.3.bar_types: []}\n", r"set: 'data.3.bar_types': 'data.3' is not an index"),
        ("instruments: [{name: ES, set: {venue.0: 1}}]\n", r"instruments\[ES\].set: 'venue.0'"),
        ("grid: {engine.trader_id: []}\n", "has no values"),
        ("metric: profit\n", "metric 'profit'"),
        ("train_fraction: 1.0\n", "train_fraction"),
        ("folds: 0\n", "folds must be >= 1"),
        ("gird: {}\n", "gird"),
        ("instruments: [{name: A}, {name: A}]\n", "unique"),
    ],
)
def test_bad_sweep_files_name_the_problem(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(SweepSpecError, match=message):
        load_sweep_spec(_sweep(tmp_path, body))


def test_a_backtest_config_is_not_a_sweep_file() -> None:
    with pytest.raises(SweepSpecError, match="sage backtest"):
        load_sweep_spec(BASE)


def test_folds_outside_the_data_are_refused(sample_catalog: Path, tmp_path: Path) -> None:
    spec, base = load_sweep_spec(_sweep(tmp_path, "instruments: [{name: X, set: {data.0.bar_types: [NOPE.XCME-1-MINUTE-LAST-EXTERNAL]}}]\n"))
    with pytest.raises(SweepSpecError, match="no bars NOPE.XCME"):
        expand_tasks(spec, base, sample_catalog)
