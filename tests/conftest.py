"""Shared fixtures: the real sample catalog, built once per session (a no-op when up to date)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sage.data.sample import DEFAULT_CATALOG, build_sample_catalog


@pytest.fixture(scope="session")
def sample_catalog() -> Path:
    build_sample_catalog(DEFAULT_CATALOG)
    return DEFAULT_CATALOG
