"""The ``soak`` marker: registered here and skipped unless selected with ``-m soak`` (``make soak``).

This keeps the default ``pytest`` run short even before ``pyproject.toml`` registers the marker with
``addopts = "-m 'not soak'"``; with that in place the skip below simply never triggers.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: million-bar endurance tests (excluded by default; make soak)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "soak" in (config.getoption("-m") or "").replace("not soak", ""):
        return
    skip = pytest.mark.skip(reason="soak test: run with `make soak` (pytest -m soak)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)
