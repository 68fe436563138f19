"""Every shipped model refuses corrupted, truncated, foreign and malicious checkpoints, fail-closed.

Parametrised over whatever ``sage/assets/models/`` holds when the tests run, so a model added later is
covered without touching this file. Each case copies the shipped directory, damages the copy and
loads it with the model kind's own loader (architecture checks included); kinds without a known loader
still go through the registry's checks (manifest, sha256, archive, pickle safety, finiteness).
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from sage.models.registry import (
    ASSETS_DIR,
    ArchitectureMismatchError,
    CorruptCheckpointError,
    ForeignCheckpointError,
    IntegrityError,
    ModelLoadError,
    UnsafeCheckpointError,
    load_checkpoint,
    read_manifest,
    shipped_models,
    state_dict_bytes,
)

#: kind -> "module:attribute" of the loader that builds the model from a checkpoint directory.
LOADERS: dict[str, str] = {
    "sage.regime-bundle": "sage.models.bundle:RegimeModelBundle.load",
    "sage.agents-policy": "sage.agents.ensemble:AgentEnsemble.load",
    "sage.pretrained-encoder": "sage.training.encoder:load_pretrained",
    "sage.mrms": "sage.risk.models:MRMS.load",
}
MODELS = shipped_models()


def _loader(kind: str) -> Callable[[Path], object] | None:
    target = LOADERS.get(kind)
    if target is None:
        return None
    module, _, attr = target.partition(":")
    obj: object = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[return-value]


def _load(path: Path) -> object:
    kind = read_manifest(path).kind
    loader = _loader(kind)
    return loader(path) if loader is not None else load_checkpoint(path, kind=kind)


@pytest.fixture(params=MODELS)
def model_copy(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    target = tmp_path / request.param
    shutil.copytree(ASSETS_DIR / request.param, target)
    return target


def _weights(directory: Path) -> Path:
    return directory / read_manifest(directory).weights_file


def _replace_weights(directory: Path, data: bytes, fix_sha: bool = True) -> None:
    _weights(directory).write_bytes(data)
    if fix_sha:  # the attacker controls the manifest too
        path = directory / "manifest.json"
        doc = json.loads(path.read_text())
        doc["weights_sha256"] = hashlib.sha256(data).hexdigest()
        path.write_text(json.dumps(doc))


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_models_are_shipped() -> None:
    assert "regime-default" in MODELS


def test_intact_copy_loads(model_copy: Path) -> None:
    assert _load(model_copy) is not None


@pytest.mark.parametrize("cut", [0.0, 0.5, 0.99])
def test_truncated_weights_are_refused(model_copy: Path, cut: float) -> None:
    data = _weights(model_copy).read_bytes()
    _replace_weights(model_copy, data[: int(len(data) * cut)], fix_sha=False)
    with pytest.raises(IntegrityError, match="sha256"):
        _load(model_copy)
    _replace_weights(model_copy, data[: int(len(data) * cut)], fix_sha=True)
    with pytest.raises(CorruptCheckpointError):
        _load(model_copy)


def test_a_flipped_byte_is_caught_by_the_hash(model_copy: Path) -> None:
    data = bytearray(_weights(model_copy).read_bytes())
    data[len(data) // 2] ^= 0x01
    _replace_weights(model_copy, bytes(data), fix_sha=False)
    with pytest.raises(IntegrityError):
        _load(model_copy)


@pytest.mark.parametrize("form", ["raw pickle", "torch archive"])
def test_malicious_weights_never_execute(model_copy: Path, tmp_path: Path, form: str) -> None:
    marker = tmp_path / "pwned.txt"
    payload = {"w": _Payload(marker)}
    if form == "raw pickle":
        data = pickle.dumps(payload)
    else:
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        data = buffer.getvalue()
    _replace_weights(model_copy, data)
    with pytest.raises(UnsafeCheckpointError):
        _load(model_copy)
    assert not marker.exists()


def test_weights_of_another_architecture_are_refused(model_copy: Path) -> None:
    if _loader(read_manifest(model_copy).kind) is None:
        pytest.skip(f"no loader for kind {read_manifest(model_copy).kind} in LOADERS: architecture unchecked")
    _replace_weights(model_copy, state_dict_bytes(torch.nn.Linear(3, 2).state_dict()))
    with pytest.raises(ArchitectureMismatchError):
        _load(model_copy)


@pytest.mark.parametrize(("model", "other"), [(m, o) for m in MODELS for o in MODELS if m != o])
def test_another_shipped_model_in_its_place_is_refused(tmp_path: Path, model: str, other: str) -> None:
    """A different model's files under this model's loader: refused as foreign (or mismatched)."""
    loader = _loader(read_manifest(ASSETS_DIR / model).kind)
    if loader is None:
        pytest.skip(f"no loader for {model}'s kind in LOADERS")
    if read_manifest(ASSETS_DIR / other).kind == read_manifest(ASSETS_DIR / model).kind:
        pytest.skip("same kind: the other model is a valid checkpoint of this loader")
    with pytest.raises((ForeignCheckpointError, ArchitectureMismatchError)):
        loader(ASSETS_DIR / other)


def test_non_finite_weights_are_refused(model_copy: Path) -> None:
    _, state = load_checkpoint(model_copy, kind=read_manifest(model_copy).kind)
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel())
    state[key].view(-1)[0] = float("inf")
    _replace_weights(model_copy, state_dict_bytes(state))
    with pytest.raises(CorruptCheckpointError, match="NaN or inf"):
        _load(model_copy)


@pytest.mark.parametrize(
    "damage",
    ["truncate", "not json", "empty", "kind", "format_version", "weights_file path"],
)
def test_damaged_manifests_are_refused(model_copy: Path, damage: str) -> None:
    path = model_copy / "manifest.json"
    text = path.read_text()
    doc = json.loads(text)
    if damage == "truncate":
        path.write_text(text[: len(text) // 3])
    elif damage == "not json":
        path.write_bytes(b"\x00\xff garbage")
    elif damage == "empty":
        path.write_text("")
    elif damage == "kind":
        path.write_text(json.dumps({**doc, "kind": "someone.else"}))
    elif damage == "format_version":
        path.write_text(json.dumps({**doc, "format_version": 99}))
    else:
        path.write_text(json.dumps({**doc, "weights_file": "../../etc/passwd"}))
    kind = json.loads(text)["kind"]
    loader = _loader(kind) or (lambda p: load_checkpoint(p, kind=kind))
    with pytest.raises(ModelLoadError):
        loader(model_copy)
