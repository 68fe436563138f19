"""Bidirectional-LSTM sequence encoder, shared by the pretraining task and the agents' policies.

Why this shape: an agent reads a window of normalised per-bar rows (60 x 7 tactical, 48 x 13
strategic); a pretraining task reads windows of the 11 relative features. The inputs differ in width
but not in kind -- all are sequences of bar descriptors -- so the encoder is split in two:

* ``proj``: a per-input linear projection ``F -> d_model`` (its shape depends on the input width, so
  it is *not* transferred between inputs of different widths);
* ``lstm``: a one-layer bidirectional LSTM ``d_model -> 2 * hidden`` whose weights do not depend on
  the input width, so what it learned in pretraining transfers into every agent's encoder
  (:func:`transfer_weights`).

The window summary is ``[h_forward(newest bar), h_backward(oldest bar)]``: the final state of each
direction, each of which has read the whole window. Shapes (``B`` windows, ``L`` bars, ``F`` features,
``D = d_model``, ``H = hidden``)::

    x      (B, L, F)   window, oldest bar first
    tokens (B, L, D)   proj(x)
    out    (B, 2H)     [h_n forward, h_n backward]

Sizes are small on purpose (default D = H = 8): live inference runs the three tactical agents' encoders
on every 5-minute bar within a latency budget of 200 microseconds (see ``docs/agents.md``).
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
import torch
from torch import nn


class EncoderConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Sizes of one :class:`SequenceEncoder`."""

    n_features: int = 11
    """Input width ``F`` (default 11, the relative feature family; 7 tactical, 13 strategic)."""
    d_model: int = 8
    """Projection width ``D``, the LSTM's input size (default 8)."""
    hidden: int = 8
    """LSTM hidden size per direction ``H`` (default 8; the summary has ``2H`` values). 8 keeps the three
    tactical encoders together well inside the per-bar latency budget; 16 measured ~3x slower."""

    def __post_init__(self) -> None:
        for name in ("n_features", "d_model", "hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"EncoderConfig.{name} must be an int >= 1, got {value!r}")

    @property
    def out_dim(self) -> int:
        """Width of the window summary (``2 * hidden``)."""
        return 2 * self.hidden


class SequenceEncoder(nn.Module):
    """``proj`` (per input width) + bidirectional ``lstm`` (transferable); ``(B, L, F) -> (B, 2H)``."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.proj = nn.Linear(config.n_features, config.d_model)
        self.lstm = nn.LSTM(config.d_model, config.hidden, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Window summary ``(B, 2H)`` of ``x (B, L, F)``."""
        tokens = self.proj(x)  # (B, L, D)
        _, (h_n, _) = self.lstm(tokens)  # h_n: (2, B, H) -- [forward final, backward final]
        return torch.cat([h_n[0], h_n[1]], dim=1)  # (B, 2H)


def transfer_weights(
    source: Mapping[str, torch.Tensor], target: SequenceEncoder, *, prefix: str = ""
) -> list[str]:
    """Copy each sub-module (``proj``, ``lstm``) of ``source`` whose tensors all match ``target``'s in name
    (after stripping ``prefix``) and shape.

    ``source`` is a pretrained encoder's state dict (``prefix`` e.g. ``"encoder."`` when it comes from a
    whole pretraining network). The LSTM always matches when ``d_model`` and ``hidden`` agree; the
    projection only when the input widths agree too. Returns the copied keys (sorted); raises
    ``ValueError`` if nothing of the LSTM could be copied (incompatible sizes: a silent no-op transfer
    would train from scratch while claiming to be pretrained).
    """
    own = target.state_dict()
    incoming = {k[len(prefix) :]: v for k, v in source.items() if k.startswith(prefix)}
    copied: list[str] = []
    with torch.no_grad():
        for module in ("proj.", "lstm."):  # a module transfers whole or not at all (no lone bias)
            names = [n for n in own if n.startswith(module)]
            if all(n in incoming and tuple(incoming[n].shape) == tuple(own[n].shape) for n in names):
                for n in names:
                    own[n].copy_(incoming[n])
                copied.extend(names)
    if not any(name.startswith("lstm.") for name in copied):
        raise ValueError(
            "pretrained encoder weights do not fit this encoder (no LSTM tensor matched in shape): "
            f"target d_model={target.config.d_model}, hidden={target.config.hidden}"
        )
    return sorted(copied)
