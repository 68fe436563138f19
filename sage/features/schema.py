"""Feature schema: which columns, in which order, computed with which parameters, and a stable hash.

Why: a model is only valid for the exact features it was trained on. A renamed,
reordered or re-parameterised column silently produces a model that "works"
and trades on garbage. The schema pins all of it, and its ``hash`` is what a
model stores; at load time ``schema.check(model_hash)`` refuses a mismatch with
a clear error.

The hash covers: the schema version (bumped whenever a kernel's *definition*
changes without a parameter change), the resolved per-bar column names in
order, and every parameter of every kernel family and of both matrix
assemblers. It is the sha256 of a canonical JSON (sorted keys, no whitespace,
Python float repr), so it is identical across processes, machines and
Python/msgspec versions.
"""

from __future__ import annotations

import hashlib
import json
from types import ModuleType
from typing import Any

import msgspec

from sage.features import basic, fvg, mmd, relative
from sage.features.basic import BasicParams
from sage.features.fvg import FvgParams
from sage.features.mmd import MmdParams
from sage.features.relative import RelativeParams

SCHEMA_VERSION: int = 1
"""Bump when any kernel's definition changes in a way its parameters do not capture."""

FAMILIES: tuple[tuple[str, ModuleType, str], ...] = (
    ("basic", basic, ""),
    ("relative", relative, ""),
    ("fvg", fvg, "fvg_"),
    ("mmd", mmd, "mmd_"),
)
"""Kernel families in canonical order: (schema field, module, column-name prefix).

The FVG kernel names its columns generically (``age``, ``gap_size`` ...), so
FVG schema names carry the ``fvg_`` prefix; a kernel column that already starts
with its family name (``mmd2_ref100``) is kept as is; basic and relative names
are already unambiguous.
"""


def _prefixed(prefix: str, name: str) -> str:
    return name if not prefix or name.startswith(prefix.rstrip("_")) else prefix + name


class TacticalParams(msgspec.Struct, frozen=True, kw_only=True):
    """Normalisation of the tactical matrix rows (see ``sage.features.matrices``)."""

    window: int = 60
    """Rows (bars) in one tactical matrix (60, per the issue)."""
    count_scale: float = 2.0
    """Active-gap counts enter as tanh(count / count_scale): 1 gap -> 0.46, 3 gaps -> 0.91."""
    level_scale: float = 3.0
    """Nearest-gap distance in ATRs enters as tanh(d / level_scale); 3 ATRs -> 0.76."""
    age_tau: float = 20.0
    """Age decay exp(-age / age_tau): a 20-bar-old gap weighs 1/e of a new one (default FVG expiry is 50)."""
    mom_scale: float = 2.0
    """Vol-normalised 5-bar momentum (a t-statistic) enters as tanh(t / mom_scale)."""

    def __post_init__(self) -> None:
        if not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"TacticalParams.window must be an int >= 1, got {self.window!r}")
        for name in ("count_scale", "level_scale", "age_tau", "mom_scale"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"TacticalParams.{name} must be > 0")


class StrategicParams(msgspec.Struct, frozen=True, kw_only=True):
    """Normalisation of the strategic matrix rows (see ``sage.features.matrices``)."""

    window: int = 48
    """Rows (bars) in one strategic matrix (48, per the issue: e.g. a day of 30-minute bars)."""
    trend_scale: float = 1.5
    """MACD/ATR and the 20-bar momentum t-statistic enter as tanh(x / trend_scale); their 90th
    percentiles on synthetic 1-minute bars are ~0.9 and ~1.3, i.e. tanh 0.56 and 0.71."""
    vol_z_window: int = 100
    """Trailing bars of the causal z-score of log EWMA volatility (volatility regime)."""
    z_clip: float = 4.0
    """Z-scores are clipped to +-z_clip and divided by it, so they lie in [-1, 1]."""
    vwap_window: int = 48
    """Trailing bars of the rolling VWAP (volume-weighted typical price), one strategic window."""
    vwap_scale: float = 4.0
    """Close-minus-VWAP in ATRs enters as tanh(d / vwap_scale); |d| is ~3.3 ATR at the 90th
    percentile on synthetic 1-minute bars, so 4 keeps the column out of saturation."""
    mmd_scale: float = 0.5
    """MMD^2 columns enter as tanh(sqrt(mmd2) / mmd_scale); on synthetic 1-minute data the median
    sqrt(mmd2) is ~0.2-0.3 and the 99th percentile ~0.85-0.9, so 0.5 uses the range of tanh."""

    def __post_init__(self) -> None:
        for name in ("window", "vol_z_window", "vwap_window"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (2 if name == "vol_z_window" else 1):
                raise ValueError(
                    f"StrategicParams.{name} must be an int >= 1 (vol_z_window >= 2), got {value!r}"
                )
        for name in ("trend_scale", "z_clip", "vwap_scale", "mmd_scale"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"StrategicParams.{name} must be > 0")


class SchemaMismatchError(ValueError):
    """Features offered to a model differ from the ones it was trained on."""


class FeatureSchema(msgspec.Struct, frozen=True, kw_only=True):
    """Ordered feature names plus every parameter that defines them.

    ``FeatureSchema()`` is the default full schema (all columns of all families,
    default parameters). Pass ``columns`` to select and order a subset.
    """

    basic: BasicParams = BasicParams()
    """Parameters of ``sage.features.basic`` (returns, ATR, RSI, MACD, Bollinger, vol, momentum, volume)."""
    relative: RelativeParams = RelativeParams()
    """Parameters of ``sage.features.relative`` (11 scale-invariant columns)."""
    fvg: FvgParams = FvgParams()
    """Parameters of ``sage.features.fvg`` (fair-value-gap detector, 9 columns)."""
    mmd: MmdParams = MmdParams()
    """Parameters of ``sage.features.mmd`` (MMD^2 of recent vs reference windows, one column per window)."""
    tactical: TacticalParams = TacticalParams()
    """Normalisation of the tactical (60 x 7) matrix."""
    strategic: StrategicParams = StrategicParams()
    """Normalisation of the strategic (48 x 13) matrix."""
    columns: tuple[str, ...] | None = None
    """Per-bar columns to output, in this order; None (default) = every family column in canonical order."""

    def __post_init__(self) -> None:
        available = self.all_names()
        if len(set(available)) != len(available):
            dupes = sorted({n for n in available if available.count(n) > 1})
            raise ValueError(f"feature families produce duplicate column names: {dupes}")
        if self.columns is not None:
            unknown = [n for n in self.columns if n not in available]
            if unknown:
                raise ValueError(f"unknown feature column(s) {unknown}; available: {list(available)}")
            if len(set(self.columns)) != len(self.columns):
                raise ValueError("FeatureSchema.columns contains duplicates")
            if not self.columns:
                raise ValueError("FeatureSchema.columns must not be empty (use None for all columns)")

    def family_params(self, family: str) -> Any:
        """The params struct of one family (``"basic"``, ``"relative"``, ``"fvg"``, ``"mmd"``)."""
        return getattr(self, family)

    def family_columns(self, family: str) -> tuple[str, ...]:
        """Schema names (prefixed) of every column a family produces, in kernel order."""
        for name, module, prefix in FAMILIES:
            if name == family:
                return tuple(_prefixed(prefix, c) for c in module.columns(self.family_params(name)))
        raise KeyError(family)

    def all_names(self) -> tuple[str, ...]:
        """Every available per-bar column in canonical order (the full row the pipeline computes)."""
        return tuple(n for family, _, _ in FAMILIES for n in self.family_columns(family))

    @property
    def names(self) -> tuple[str, ...]:
        """The output columns, in order."""
        return self.columns if self.columns is not None else self.all_names()

    def canonical(self) -> dict[str, Any]:
        """The JSON-able content the hash is computed over."""
        return {
            "schema_version": SCHEMA_VERSION,
            "names": list(self.names),
            "params": {
                **{family: msgspec.to_builtins(self.family_params(family)) for family, _, _ in FAMILIES},
                "tactical": msgspec.to_builtins(self.tactical),
                "strategic": msgspec.to_builtins(self.strategic),
            },
        }

    @property
    def hash(self) -> str:
        """Stable sha256 hex digest of :meth:`canonical` (sorted keys, compact separators)."""
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def check(self, expected: str | FeatureSchema) -> None:
        """Raise :class:`SchemaMismatchError` unless ``expected`` (a hash or schema) equals this schema.

        Call it where a model is loaded: ``schema.check(model.feature_hash)``.
        """
        other_hash = expected.hash if isinstance(expected, FeatureSchema) else str(expected)
        mine = self.hash
        if other_hash == mine:
            return
        detail = ""
        if isinstance(expected, FeatureSchema):
            mine_c, other_c = self.canonical(), expected.canonical()
            diffs = [k for k in mine_c["params"] if mine_c["params"][k] != other_c["params"].get(k)]
            if mine_c["names"] != other_c["names"]:
                diffs.insert(0, "names/order")
            detail = f" (differs in: {', '.join(diffs) or 'schema_version'})"
        raise SchemaMismatchError(
            f"feature schema mismatch: features have hash {mine[:16]}..., expected {other_hash[:16]}...{detail}. "
            "The model was trained on different features (names, order or parameters); recompute features "
            "with the model's schema or retrain."
        )

    def to_json(self) -> str:
        """JSON for storing next to a model (round-trips through :meth:`from_json`)."""
        return msgspec.json.encode(self).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> FeatureSchema:
        """Inverse of :meth:`to_json`; validates the parameters."""
        return msgspec.json.decode(text, type=cls)


DEFAULT_SCHEMA = FeatureSchema()
"""The default full schema (what ``schema=None`` means everywhere)."""
