"""sage.models: the regime models (torch) and the checkpoint registry.

* :mod:`sage.models.rde` -- Regime Dynamics Encoder: transformer encoder + beta-VAE head; its posterior
  mean is the 8-D regime vector.
* :mod:`sage.models.classifier` -- BULL/BEAR/SIDEWAYS/VOLATILE probabilities from the vector + features.
* :mod:`sage.models.forecaster` -- 9 quantiles of the next-h standardised log return.
* :mod:`sage.models.bundle` -- the three behind one ``RegimeModelBundle.load(...).infer(window)``
  interface (what ``sage.regime`` uses), bitwise-equal streaming and batch outputs.
* :mod:`sage.models.registry` -- checkpoints (state dict + msgspec manifest) loaded fail-closed.

See ``docs/regime_models.md``.
"""

from sage.models.bundle import (
    DEFAULT_BUNDLE,
    REFERENCE_BUNDLE,
    BundleConfig,
    InputSpec,
    RegimeBatch,
    RegimeInference,
    RegimeModelBundle,
    RegimeNet,
)
from sage.models.classifier import ClassifierConfig, RegimeClassifier
from sage.models.forecaster import QUANTILE_LEVELS, ForecasterConfig, QuantileForecaster
from sage.models.rde import REFERENCE_RDE, RDEConfig, RegimeDynamicsEncoder
from sage.models.registry import (
    ArchitectureMismatchError,
    CorruptCheckpointError,
    ForeignCheckpointError,
    IntegrityError,
    MissingCheckpointError,
    ModelLoadError,
    ModelManifest,
    ModelSchemaMismatchError,
    UnsafeCheckpointError,
)

__all__ = [
    "DEFAULT_BUNDLE",
    "QUANTILE_LEVELS",
    "REFERENCE_BUNDLE",
    "REFERENCE_RDE",
    "ArchitectureMismatchError",
    "BundleConfig",
    "ClassifierConfig",
    "CorruptCheckpointError",
    "ForecasterConfig",
    "ForeignCheckpointError",
    "InputSpec",
    "IntegrityError",
    "MissingCheckpointError",
    "ModelLoadError",
    "ModelManifest",
    "ModelSchemaMismatchError",
    "QuantileForecaster",
    "RDEConfig",
    "RegimeBatch",
    "RegimeClassifier",
    "RegimeDynamicsEncoder",
    "RegimeInference",
    "RegimeModelBundle",
    "RegimeNet",
    "UnsafeCheckpointError",
]
