"""Chronos (Amazon, ``chronos-forecasting``) behind sage's quantile-forecaster interface, local only.

One adapter for the three pipeline families the package loads from a ``save_pretrained`` directory
(``config.json`` + weights); the config's ``chronos_pipeline_class`` picks the family:

* **Chronos-Bolt** (``ChronosBoltPipeline``): T5 encoder-decoder over patches with a direct quantile
  head for 0.1..0.9 -- deterministic, the recommended choice here.
* **Chronos-2** (``Chronos2Pipeline``): quantile head as well (21 levels including 0.1..0.9).
* **Chronos** (``ChronosPipeline``, the original T5 models): a language model over binned values that
  forecasts by *sampling* paths; quantiles are empirical quantiles of ``num_samples`` paths. To keep the
  forecast a function of the context alone, the torch RNG is reseeded with ``AdapterConfig.seed`` before
  every model call (in a forked RNG state, so the caller's RNG is untouched); with ``batch_size > 1`` a
  row's samples also depend on the rows batched with it, so keep the default 1 for this family.

Loading never touches the network: the directory must exist, and ``from_pretrained`` runs with
``local_files_only=True`` (no hub lookups, whatever ``HF_HUB_OFFLINE`` says) and without remote code.

Licence: ``chronos-forecasting`` and the released Chronos / Chronos-Bolt / Chronos-2 weights are
Apache-2.0. sage does not ship any of them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from sage.models.adapters.base import (
    AdapterConfig,
    AdapterUnavailableError,
    LocalForecastAdapter,
    checkpoint_dir,
)
from sage.models.forecaster import QUANTILE_LEVELS
from sage.models.registry import CorruptCheckpointError, MissingCheckpointError

SAMPLING_PIPELINE = "ChronosPipeline"
"""Pipeline class of the original, sampling-based Chronos models."""


def _import_chronos():  # returns BaseChronosPipeline (imported lazily)
    try:
        from chronos import BaseChronosPipeline
    except ImportError as exc:
        raise AdapterUnavailableError(
            "the Chronos adapter needs the optional package 'chronos-forecasting' "
            "(pip install 'sage[foundation]')"
        ) from exc
    return BaseChronosPipeline


class ChronosAdapter(LocalForecastAdapter):
    """A Chronos / Chronos-Bolt / Chronos-2 pipeline loaded from a local ``save_pretrained`` directory."""

    name = "chronos"

    def __init__(self, directory: str | os.PathLike[str], config: AdapterConfig | None = None) -> None:
        config = config or AdapterConfig()
        path = checkpoint_dir(directory, "Chronos")
        if not (path / "config.json").is_file():
            raise MissingCheckpointError(f"Chronos checkpoint {str(path)!r} has no config.json")
        base = _import_chronos()
        import torch

        try:
            with _quiet_transformers():
                pipeline = base.from_pretrained(
                    str(path),
                    device_map=config.device,
                    dtype=torch.float32,
                    local_files_only=True,
                    trust_remote_code=False,
                )
        except Exception as exc:  # any failure of a foreign loader is a bad checkpoint
            raise CorruptCheckpointError(
                f"Chronos checkpoint {str(path)!r} could not be loaded: {exc}"
            ) from exc
        self.pipeline = pipeline
        self.family = type(pipeline).__name__
        self.sampling = self.family == SAMPLING_PIPELINE
        inner = getattr(pipeline, "inner_model", None) or getattr(pipeline, "model", None)
        if inner is not None:
            inner.eval()
        super().__init__(path, config, model_context_length=_model_context_length(pipeline))

    def _price_quantiles(self, contexts: np.ndarray) -> np.ndarray:
        import torch

        context = torch.from_numpy(contexts)
        with torch.inference_mode():
            if self.sampling:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(self.config.seed)
                    quantiles, _ = self._call(context)
            else:
                quantiles, _ = self._call(context)
        if isinstance(quantiles, list):  # Chronos-2: one (n_variates, h, Q) tensor per series
            quantiles = torch.stack([q[0] for q in quantiles])
        return quantiles[:, self.horizon - 1, :].to(torch.float32).numpy()

    def _call(self, context: Any) -> Any:
        return self.pipeline.predict_quantiles(
            context,
            prediction_length=self.horizon,
            quantile_levels=list(QUANTILE_LEVELS),
        )


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No "Loading weights" progress bar while loading (restored afterwards): a model load inside a
    node's log should be one line, not a tqdm bar."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _model_context_length(pipeline: Any) -> int:
    """The longest context the pipeline uses (it truncates anything longer)."""
    try:
        return int(pipeline.model_context_length)
    except (AttributeError, NotImplementedError):
        pass
    chronos_config = getattr(getattr(pipeline, "model", None), "chronos_config", None)
    length = getattr(chronos_config, "context_length", None)
    if length is None:
        raise CorruptCheckpointError("Chronos pipeline does not declare a context length")
    return int(length)
