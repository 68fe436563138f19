"""The tearsheet: real PNGs with content, a self-contained page, and clear panels when records are absent."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from sage.reports.run_dir import load_run
from sage.reports.tearsheet import statistics_table

PLOTS = [
    "equity.png",
    "price_ESU3.XCME.png",
    "price_EUR_USD.SIM.png",
    "decisions.png",
    "fallback_levels.png",
    "tca.png",
]


def _image(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(path)


def _n_colours(img: np.ndarray) -> int:
    rgb = (img[..., :3] * 255).astype(np.uint32).reshape(-1, 3)
    return len(np.unique(rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2]))


@pytest.mark.parametrize("which", ["demo_run", "sage_run"])
def test_every_plot_is_a_real_picture(which: str, request: pytest.FixtureRequest) -> None:
    report = request.getfixturevalue(which) / "report"
    assert sorted(p.name for p in report.glob("*.png")) == sorted(PLOTS)
    for name in PLOTS:
        img = _image(report / name)
        assert img.shape[1] > 800 and img.shape[0] > 200, name
        assert _n_colours(img) > 20, name  # text, lines and markers, not a blank canvas


def test_plots_without_records_say_so(demo_run: Path, sage_run: Path) -> None:
    """The EMACross demo has no decisions: that plot is a short notice panel; with decisions it is a chart."""
    demo = _image(demo_run / "report" / "decisions.png")
    sage = _image(sage_run / "report" / "decisions.png")
    assert demo.shape[0] < 0.5 * sage.shape[0]
    assert _n_colours(sage) > 4 * _n_colours(demo)


def test_html_is_self_contained(sage_run: Path) -> None:
    page = (sage_run / "report" / "index.html").read_text()
    assert page.count("src='data:image/png;base64,") == len(PLOTS)
    assert not re.search(r"(src|href)=['\"]https?:", page)
    for text in (
        "sharpe",
        "sortino",
        "max_drawdown",
        "turnover",
        "PnL (total)",
        "Sharpe Ratio (252 days)",
        "shortfall_bps",
    ):
        assert text in page, text


def test_statistics_table_has_sage_and_nautilus_numbers(demo_run: Path) -> None:
    table = statistics_table(load_run(demo_run))
    assert {"sage (USD)", "Nautilus PnL (USD)", "Nautilus returns", "Nautilus general"} <= set(table["group"])
    assert set(table[table.group == "sage (USD)"].statistic) >= {
        "sharpe",
        "sortino",
        "max_drawdown",
        "turnover",
    }
