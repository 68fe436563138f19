"""TiRex (NX-AI, ``tirex-ts``) behind sage's quantile-forecaster interface, from a local checkpoint only.

TiRex is an xLSTM (sLSTM) forecaster that emits the 9 quantiles 0.1..0.9 directly, one output patch
(32 steps for the released model) per forward pass, so a 5-bar horizon is a single pass.

Checkpoint: a directory holding ``model.ckpt`` -- the file the released model ships
(``huggingface-cli download NX-AI/TiRex --local-dir DIR`` on a machine with network, then copy ``DIR``).
It is a Lightning-style dict ``{"hyper_parameters": {"model_config": ..., "train_ctx_len": ...},
"state_dict": ...}`` read by ``TiRexZero.from_pretrained`` with ``torch.load(weights_only=True)`` (no
pickled code). We hand ``from_pretrained`` the existing file, so its hub-download branch is never taken.

Licence: the TiRex code and weights are under the NXAI Community License (not OSI-approved; read it
before commercial use). sage does not ship TiRex or its weights.
"""

from __future__ import annotations

import contextlib
import io
import os

import numpy as np

from sage.models.adapters.base import (
    AdapterConfig,
    AdapterUnavailableError,
    LocalForecastAdapter,
    checkpoint_dir,
)
from sage.models.forecaster import QUANTILE_LEVELS
from sage.models.registry import CorruptCheckpointError, MissingCheckpointError

CHECKPOINT_FILE = "model.ckpt"
"""File name of a TiRex checkpoint inside its directory (as released on the hub)."""


def _import_tirex():  # returns the TiRexZero class (imported lazily)
    try:
        from tirex.models.tirex import TiRexZero
    except ImportError as exc:
        raise AdapterUnavailableError(
            "the TiRex adapter needs the optional package 'tirex-ts' (pip install 'sage[foundation]')"
        ) from exc
    return TiRexZero


class TiRexAdapter(LocalForecastAdapter):
    """A TiRex model loaded from ``directory/model.ckpt`` (CPU, torch backend, eval mode)."""

    name = "tirex"

    def __init__(self, directory: str | os.PathLike[str], config: AdapterConfig | None = None) -> None:
        config = config or AdapterConfig()
        path = checkpoint_dir(directory, "TiRex")
        ckpt = path / CHECKPOINT_FILE
        if not ckpt.is_file():
            raise MissingCheckpointError(f"TiRex checkpoint {str(ckpt)!r} does not exist")
        tirex_zero = _import_tirex()
        try:
            # from_pretrained prints "Loading weights from local directory"; keep stdout clean.
            with contextlib.redirect_stdout(io.StringIO()):
                model = tirex_zero.from_pretrained(str(ckpt), backend="torch", device=config.device)
        except Exception as exc:  # any failure of a foreign loader is a bad checkpoint
            raise CorruptCheckpointError(
                f"TiRex checkpoint {str(ckpt)!r} could not be loaded: {exc}"
            ) from exc
        levels = tuple(float(q) for q in model.config.quantiles)
        if not set(QUANTILE_LEVELS).issubset(levels):
            raise CorruptCheckpointError(
                f"TiRex checkpoint {str(ckpt)!r} predicts quantiles {levels}, which do not include {QUANTILE_LEVELS}"
            )
        self.model = model.eval()
        self._columns = np.array([levels.index(q) for q in QUANTILE_LEVELS], dtype=np.intp)
        super().__init__(path, config, model_context_length=int(model.config.train_ctx_len))

    def _price_quantiles(self, contexts: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            # TiRex public API: (B, L) context -> quantiles (B, prediction_length, Q).
            quantiles, _ = self.model.forecast(
                torch.from_numpy(contexts), prediction_length=self.horizon, batch_size=contexts.shape[0]
            )
        return quantiles[:, self.horizon - 1, :].numpy()[:, self._columns]
