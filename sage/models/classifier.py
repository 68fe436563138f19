"""Regime classifier: BULL / BEAR / SIDEWAYS / VOLATILE probabilities from the regime vector and features.

How it learns without labels on real data (the decision, see ``docs/regime_models.md``): real bars come
with no regime truth, so the classifier is trained **only on the seeded synthetic market**, where the
generator's true regime is known for every bar, with inputs that are scale-free (every strategic column
is a ratio of like quantities bounded in [-1, 1], and the regime vector is computed from those). A
"BULL" on real data therefore means "looks like the synthetic market's persistent up-drift regime in
volatility units", nothing more; the synthetic market's durations and drift/vol ratios define the
semantics. Real data still shapes the shared encoder (through the VAE and forecasting losses), so the
regime vector is fitted to real feature distributions too. Accuracy is proven on a held-out synthetic
seed against truth (``benchmarks/bench_regime_models.py``).

Shapes: ``vector (B, Z)`` + ``last_row (B, F)`` -> concatenated ``(B, Z + F)`` -> MLP -> ``logits (B, 4)``,
ordered like :class:`sage.data.regimes.Regime`.
"""

from __future__ import annotations

import msgspec
import torch
from torch import nn

from sage.data.regimes import N_REGIMES


class ClassifierConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Architecture of the regime classifier head."""

    latent_dim: int = 8
    """Regime-vector size (default 8; must equal the encoder's ``latent_dim``)."""
    n_features: int = 11
    """Per-bar features of the window's newest row fed alongside the vector (default 11)."""
    hidden: int = 32
    """Hidden width of the two-layer MLP (default 32)."""
    n_regimes: int = N_REGIMES
    """Output classes (default 4, the :class:`~sage.data.regimes.Regime` codes in order)."""

    def __post_init__(self) -> None:
        for name in ("latent_dim", "n_features", "hidden", "n_regimes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ClassifierConfig.{name} must be an int >= 1, got {value!r}")


class RegimeClassifier(nn.Module):
    """Two-layer MLP over ``[regime vector, newest feature row]`` -> 4 regime logits.

    Why the newest row as well as the vector: the vector is a compressed summary of the whole window;
    the newest row carries the freshest evidence (e.g. a volatility burst on the last bar) at full
    resolution, which matters for a *causal* label that should react quickly after a regime switch.
    """

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.net = nn.Sequential(
            nn.Linear(config.latent_dim + config.n_features, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, config.n_regimes),
        )

    def forward(self, vector: torch.Tensor, last_row: torch.Tensor) -> torch.Tensor:
        """``vector (B, Z)``, ``last_row (B, F)`` -> ``logits (B, n_regimes)``."""
        return self.net(torch.cat([vector, last_row], dim=1))
