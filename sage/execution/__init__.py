"""Execution: Nautilus execution algorithms, their volume profile, and race-free flattening.

Public API (details and parameter tables in ``docs/execution.md``):

* algorithm ids ``TWAP_ID``, ``VWAP_ID``, ``ICEBERG_ID``, ``STEALTH_ID``, ``IMMEDIATE_ID`` and the
  algorithms/configs ``TWAPExecAlgorithm``/``TWAPConfig``, ``VWAPExecAlgorithm``/``VWAPConfig``,
  ``IcebergExecAlgorithm``/``IcebergConfig``, ``StealthExecAlgorithm``/``StealthConfig``,
  ``ImmediateExecAlgorithm``/``ImmediateConfig``; each algorithm's accepted ``exec_algorithm_params``
  as ``*_PARAMS`` tables of :class:`Param`;
* :class:`ParentReport`/:class:`ParentStatus`: the terminal account of every parent order, published on
  ``PARENT_TOPIC + "." + strategy_id`` and kept in ``algorithm.reports``;
* :class:`VolumeProfile`: intraday volume profile for VWAP;
* :func:`flatten_position`/:class:`Flattener`: close a position without racing running slices.

Market-impact models, algorithm selection and TCA live in ``sage.execution.impact``, ``.selector`` and
``.tca`` (``docs/execution_costs.md``); they are not imported here.
"""

from sage.execution.algorithms import (
    ICEBERG_ID,
    ICEBERG_PARAMS,
    IMMEDIATE_ID,
    IMMEDIATE_PARAMS,
    PARENT_TOPIC,
    STEALTH_ID,
    STEALTH_PARAMS,
    TWAP_ID,
    TWAP_PARAMS,
    VWAP_ID,
    VWAP_PARAMS,
    Flattener,
    IcebergConfig,
    IcebergExecAlgorithm,
    ImmediateConfig,
    ImmediateExecAlgorithm,
    Param,
    ParamError,
    ParentReport,
    ParentStatus,
    SageExecAlgorithm,
    SageExecAlgorithmConfig,
    StealthConfig,
    StealthExecAlgorithm,
    TWAPConfig,
    TWAPExecAlgorithm,
    VWAPConfig,
    VWAPExecAlgorithm,
    flatten_position,
    parse_params,
)
from sage.execution.volume_profile import VolumeProfile

#: All algorithm ids, in the order the docs list them.
ALGORITHM_IDS: tuple[str, ...] = (TWAP_ID, VWAP_ID, ICEBERG_ID, STEALTH_ID, IMMEDIATE_ID)

__all__ = [
    "ALGORITHM_IDS",
    "ICEBERG_ID",
    "ICEBERG_PARAMS",
    "IMMEDIATE_ID",
    "IMMEDIATE_PARAMS",
    "PARENT_TOPIC",
    "STEALTH_ID",
    "STEALTH_PARAMS",
    "TWAP_ID",
    "TWAP_PARAMS",
    "VWAP_ID",
    "VWAP_PARAMS",
    "Flattener",
    "IcebergConfig",
    "IcebergExecAlgorithm",
    "ImmediateConfig",
    "ImmediateExecAlgorithm",
    "Param",
    "ParamError",
    "ParentReport",
    "ParentStatus",
    "SageExecAlgorithm",
    "SageExecAlgorithmConfig",
    "StealthConfig",
    "StealthExecAlgorithm",
    "TWAPConfig",
    "TWAPExecAlgorithm",
    "VWAPConfig",
    "VWAPExecAlgorithm",
    "VolumeProfile",
    "flatten_position",
    "parse_params",
]
