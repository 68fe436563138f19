"""sage.features: every model's and agent's features, in two forms that agree bitwise.

* ``compute(bars, schema=None)`` -- batch over a whole history (a DataFrame with
  open/high/low/close/volume and a UTC DatetimeIndex, or a list of Nautilus ``Bar``s);
  returns a DataFrame indexed like the input, columns ``schema.names``.
* ``FeatureStream(schema=None).update(bar)`` -- one bar (Nautilus ``Bar`` or a mapping with
  ts/open/high/low/close/volume) at a time with preallocated state; returns that bar's row
  as a 1-D float64 array in schema order.
* ``FeatureSchema`` -- names, order and parameters, with a stable ``hash`` models check.
* Matrix assemblers (``tactical_rows``, ``strategic_rows``, ``windows``, ``MatrixStream``) build
  the 60 x 7 tactical and 48 x 13 strategic model inputs.

Both forms run the same numba kernel, so streaming row ``t`` equals batch row ``t`` bitwise.
``schema=None`` means the default full schema. See ``docs/features.md`` for every column.
"""

from sage.features.matrices import (
    STRATEGIC_COLUMNS,
    TACTICAL_COLUMNS,
    MatrixStream,
    matrix_warmup,
    strategic_rows,
    tactical_rows,
    window_at,
    windows,
)
from sage.features.pipeline import FeatureStream, compute, warmup_bars
from sage.features.schema import DEFAULT_SCHEMA, FeatureSchema, SchemaMismatchError

__all__ = [
    "DEFAULT_SCHEMA",
    "STRATEGIC_COLUMNS",
    "TACTICAL_COLUMNS",
    "FeatureSchema",
    "FeatureStream",
    "MatrixStream",
    "SchemaMismatchError",
    "compute",
    "matrix_warmup",
    "strategic_rows",
    "tactical_rows",
    "warmup_bars",
    "window_at",
    "windows",
]
