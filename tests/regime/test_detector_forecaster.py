"""A foundation-model forecaster (tiny TiRex, built offline) replaces the bundle's quantile head inside the
detector: batch and stream still agree, and its quantiles really are the ones calibrated."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("tirex", reason="optional extra sage[foundation] not installed")

from sage.data.synthetic import SyntheticMarketConfig, generate_bars
from sage.models.adapters.tiny import build_tiny_tirex
from sage.regime.detector import DetectorConfig, load_detector


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return generate_bars(SyntheticMarketConfig(n_bars=700, seed=11))


def test_tirex_forecaster_inside_the_detector_batch_equals_stream(tmp_path_factory, bars):
    directory = tmp_path_factory.mktemp("tirex")
    build_tiny_tirex(directory, seed=3)
    config = DetectorConfig(forecaster=f"tirex:{directory}", forecaster_context=64, latency_budget_us=1e9)
    detector = load_detector("default", config)
    assert detector.forecaster is not None
    batch = detector.batch(bars)
    stream = detector.stream()
    rows = pd.DataFrame([stream.update({"ts": int(ts.value), **row}) for ts, row in zip(bars.index, bars.to_dict("records"), strict=True)])
    rows.index = batch.index
    cols = [c for c in batch.columns if c != "latency_us"]
    pd.testing.assert_frame_equal(batch[cols], rows[cols], check_dtype=False)
    # the adapter changed the calibrated quantities compared with the bundle's own head
    own = load_detector("default", DetectorConfig(latency_budget_us=1e9)).batch(bars)
    level1 = batch["level"] == 1
    assert level1.any()
    assert not np.allclose(batch.loc[level1, "uncertainty"], own.loc[level1, "uncertainty"], equal_nan=True)


def test_a_forecaster_needs_a_model_bundle(tmp_path):
    build_tiny_tirex(tmp_path, seed=3)
    detector = load_detector("rules", DetectorConfig(forecaster=f"tirex:{tmp_path}"))
    assert detector.forecaster is None  # documented: ignored without a learned model
