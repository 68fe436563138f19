"""sage's Nautilus execution algorithms: TWAP, VWAP, Iceberg, Stealth, Immediate (see ``docs/execution.md``).

Each is an ``ExecAlgorithm`` with a frozen config; strategies route a primary order to one by setting
``exec_algorithm_id`` to the module constant (``TWAP_ID`` = ``"TWAP"``, ...) and per-order parameters in
``exec_algorithm_params``. The shared parent bookkeeping lives in :mod:`sage.execution.algorithms.base`,
:mod:`sage.execution.algorithms.parent` holds the parent state/report types;
:mod:`sage.execution.algorithms.flatten` closes a position without racing running slices.
"""

from sage.execution.algorithms.base import PARENT_TOPIC, SageExecAlgorithm, SageExecAlgorithmConfig
from sage.execution.algorithms.flatten import Flattener, flatten_position
from sage.execution.algorithms.iceberg import ICEBERG_ID, ICEBERG_PARAMS, IcebergConfig, IcebergExecAlgorithm
from sage.execution.algorithms.immediate import (
    IMMEDIATE_ID,
    IMMEDIATE_PARAMS,
    ImmediateConfig,
    ImmediateExecAlgorithm,
)
from sage.execution.algorithms.params import Param, ParamError, parse_params
from sage.execution.algorithms.parent import Parent, ParentReport, ParentStatus
from sage.execution.algorithms.stealth import STEALTH_ID, STEALTH_PARAMS, StealthConfig, StealthExecAlgorithm
from sage.execution.algorithms.twap import TWAP_ID, TWAP_PARAMS, TWAPConfig, TWAPExecAlgorithm
from sage.execution.algorithms.vwap import VWAP_ID, VWAP_PARAMS, VWAPConfig, VWAPExecAlgorithm

__all__ = [
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
    "Parent",
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
    "flatten_position",
    "parse_params",
]
