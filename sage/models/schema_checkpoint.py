"""Manifest fields that tie a checkpoint to its feature schema: written and verified in one place.

Why: every learned sage model (regime bundle, MARL agents) reads features computed by
``sage.features``; its checkpoint must carry the exact feature schema, its hash and the hash of the
model input derived from it, and a loader must refuse a manifest whose parts disagree (a hand-edited or
foreign manifest) before any weight is used. The save and load sides of that contract used to be
written out in each model class; they live here so the models cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from sage.features.schema import FeatureSchema
from sage.models.registry import CorruptCheckpointError, ModelManifest, utc_now_iso


def schema_manifest(
    *,
    name: str,
    kind: str,
    version: str,
    config: msgspec.Struct,
    feature_schema: FeatureSchema,
    input_hash: str,
    input_names: Sequence[str],
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    created: str | None = None,
) -> ModelManifest:
    """A manifest for a model of ``kind`` built from ``config`` over ``feature_schema``."""
    return ModelManifest(
        name=name,
        kind=kind,
        version=version,
        created=created or utc_now_iso(),
        architecture=msgspec.to_builtins(config),
        feature_schema=feature_schema.to_json(),
        feature_schema_hash=feature_schema.hash,
        input_hash=input_hash,
        input_names=list(input_names),
        training=training or {},
        metrics=metrics or {},
    )


def verified_feature_schema(
    where: object,
    manifest: ModelManifest,
    *,
    input_hash_of: Callable[[FeatureSchema], str],
    input_names: Sequence[str],
) -> FeatureSchema:
    """The manifest's feature schema, after checking that schema, hashes and input names agree.

    ``input_hash_of`` computes the input hash the loaded architecture would have over a schema;
    ``input_names`` are the architecture's input columns. Raises ``CorruptCheckpointError`` listing every
    disagreement.
    """
    try:
        feature_schema = FeatureSchema.from_json(manifest.feature_schema)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        raise CorruptCheckpointError(f"{where}: manifest feature_schema is invalid: {exc}") from exc
    problems = []
    if feature_schema.hash != manifest.feature_schema_hash:
        problems.append("feature_schema does not hash to feature_schema_hash")
    if input_hash_of(feature_schema) != manifest.input_hash:
        problems.append("the architecture and feature schema do not hash to input_hash")
    if list(input_names) != list(manifest.input_names):
        problems.append("input_names differ from the architecture's inputs")
    if problems:
        raise CorruptCheckpointError(f"{where}: inconsistent manifest: {'; '.join(problems)}")
    return feature_schema
