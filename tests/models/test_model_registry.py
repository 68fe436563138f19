"""The model registry loads verified checkpoints and refuses everything else, fail-closed."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import zipfile
from pathlib import Path

import msgspec
import numpy as np
import pytest
import torch

from sage.features.basic import BasicParams
from sage.features.schema import DEFAULT_SCHEMA, FeatureSchema
from sage.models.bundle import KIND, RegimeModelBundle, bundle_config
from sage.models.rde import RDEConfig
from sage.models.registry import (
    ArchitectureMismatchError,
    CorruptCheckpointError,
    ForeignCheckpointError,
    IntegrityError,
    MissingCheckpointError,
    ModelLoadError,
    ModelSchemaMismatchError,
    UnsafeCheckpointError,
    load_checkpoint,
    read_manifest,
    resolve,
    state_dict_bytes,
)

TINY = bundle_config(RDEConfig(d_model=8, n_heads=2, n_layers=1, d_ff=16, decoder_hidden=16), hidden=8)


@pytest.fixture()
def ckpt(tmp_path: Path) -> Path:
    bundle = RegimeModelBundle.from_config(TINY, seed=3)
    bundle.save(tmp_path / "tiny", name="tiny", training={"note": "test"}, metrics={"x": 1.0})
    return tmp_path / "tiny"


def _rewrite_weights(directory: Path, data: bytes, fix_sha: bool = True) -> None:
    """Replace weights.pt; with ``fix_sha`` also update the manifest (an attacker controlling both)."""
    (directory / "weights.pt").write_bytes(data)
    if fix_sha:
        _edit_manifest(directory, weights_sha256=hashlib.sha256(data).hexdigest())


def _edit_manifest(directory: Path, **changes: object) -> None:
    path = directory / "manifest.json"
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))


def test_roundtrip_preserves_outputs_and_manifest(ckpt: Path) -> None:
    original = RegimeModelBundle.from_config(TINY, seed=3)
    loaded = RegimeModelBundle.load(ckpt)
    windows = np.random.default_rng(0).uniform(-1, 1, (20, 48, 11))
    a, b = original.infer_batch(windows), loaded.infer_batch(windows)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    m = loaded.manifest
    assert m is not None and m.name == "tiny" and m.kind == KIND and m.version == "1.0.0"
    assert m.weights_sha256 == hashlib.sha256((ckpt / "weights.pt").read_bytes()).hexdigest()
    assert m.feature_schema_hash == DEFAULT_SCHEMA.hash
    assert m.input_hash == loaded.schema_hash and m.input_names == list(loaded.input_names)
    assert m.architecture["rde"]["d_model"] == 8 and m.metrics == {"x": 1.0}
    assert m.created.endswith("+00:00")


def test_equal_state_dicts_serialise_to_identical_bytes() -> None:
    sd = RegimeModelBundle.from_config(TINY, seed=1).net.state_dict()
    assert state_dict_bytes(sd) == state_dict_bytes({k: v.clone() for k, v in sd.items()})


def test_missing_checkpoint(tmp_path: Path, ckpt: Path) -> None:
    with pytest.raises(MissingCheckpointError, match="does not exist"):
        RegimeModelBundle.load(tmp_path / "nope")
    with pytest.raises(MissingCheckpointError):
        RegimeModelBundle.load("no-such-shipped-model")
    (ckpt / "weights.pt").unlink()
    with pytest.raises(MissingCheckpointError, match="weights"):
        RegimeModelBundle.load(ckpt)
    (ckpt / "manifest.json").unlink()
    with pytest.raises(MissingCheckpointError, match="manifest"):
        RegimeModelBundle.load(ckpt)


class _Payload:
    """Unpickling this runs code: ``__reduce__`` asks pickle to call ``exec`` with a marker-writing script."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_raw_malicious_pickle_is_refused_without_running(tmp_path: Path, ckpt: Path) -> None:
    marker = tmp_path / "pwned.txt"
    payload = pickle.dumps({"rde.pos": _Payload(marker)})
    # Sanity: the payload really does execute when unpickled by a plain unpickler.
    pickle.loads(payload)
    assert marker.exists()
    marker.unlink()

    _rewrite_weights(ckpt, payload)
    with pytest.raises(UnsafeCheckpointError, match="raw pickle"):
        RegimeModelBundle.load(ckpt)
    assert not marker.exists()


def test_malicious_torch_archive_is_refused_without_running(tmp_path: Path, ckpt: Path) -> None:
    marker = tmp_path / "pwned.txt"
    buffer = io.BytesIO()
    torch.save({"rde.pos": _Payload(marker)}, buffer)  # a genuine torch zip archive carrying code
    assert zipfile.is_zipfile(io.BytesIO(buffer.getvalue()))
    _rewrite_weights(ckpt, buffer.getvalue())
    with pytest.raises(UnsafeCheckpointError, match="allow-list"):
        RegimeModelBundle.load(ckpt)
    assert not marker.exists()


def test_truncated_weights(ckpt: Path) -> None:
    data = (ckpt / "weights.pt").read_bytes()
    _rewrite_weights(ckpt, data[: len(data) // 2], fix_sha=False)
    with pytest.raises(IntegrityError, match="sha256"):
        RegimeModelBundle.load(ckpt)
    _rewrite_weights(ckpt, data[: len(data) // 2], fix_sha=True)  # even with a matching hash
    with pytest.raises(CorruptCheckpointError):
        RegimeModelBundle.load(ckpt)
    _rewrite_weights(ckpt, data[:-7], fix_sha=True)  # archive intact up to its last bytes
    with pytest.raises(CorruptCheckpointError):
        RegimeModelBundle.load(ckpt)


def test_foreign_state_dict(ckpt: Path) -> None:
    _rewrite_weights(ckpt, state_dict_bytes(torch.nn.Linear(3, 2).state_dict()))
    with pytest.raises(ArchitectureMismatchError, match="missing keys"):
        RegimeModelBundle.load(ckpt)


def test_other_architecture_weights(tmp_path: Path, ckpt: Path) -> None:
    bigger = bundle_config(RDEConfig(d_model=16, n_heads=2, n_layers=1, d_ff=16, decoder_hidden=16), hidden=8)
    _rewrite_weights(ckpt, state_dict_bytes(RegimeModelBundle.from_config(bigger).net.state_dict()))
    with pytest.raises(ArchitectureMismatchError, match="shape"):
        RegimeModelBundle.load(ckpt)


def test_not_a_state_dict(ckpt: Path) -> None:
    buffer = io.BytesIO()
    torch.save([torch.zeros(3)], buffer)  # allowed by weights_only, but not a named state dict
    _rewrite_weights(ckpt, buffer.getvalue())
    with pytest.raises(ForeignCheckpointError, match="plain dict"):
        RegimeModelBundle.load(ckpt)
    _rewrite_weights(ckpt, b"just some text, not a checkpoint")
    with pytest.raises(CorruptCheckpointError, match="not a torch state-dict archive"):
        RegimeModelBundle.load(ckpt)


def test_non_finite_weights(ckpt: Path) -> None:
    sd = RegimeModelBundle.load(ckpt).net.state_dict()
    sd["rde.pos"][0, 0] = float("nan")
    _rewrite_weights(ckpt, state_dict_bytes(sd))
    with pytest.raises(CorruptCheckpointError, match="NaN"):
        RegimeModelBundle.load(ckpt)


def test_tampered_manifest_architecture(ckpt: Path) -> None:
    arch = json.loads((ckpt / "manifest.json").read_text())["architecture"]
    arch["rde"]["d_ff"] = 32
    _edit_manifest(ckpt, architecture=arch)
    with pytest.raises(ArchitectureMismatchError, match="ff_in"):
        RegimeModelBundle.load(ckpt)
    arch["rde"]["d_ff"] = -1  # not even a valid config
    _edit_manifest(ckpt, architecture=arch)
    with pytest.raises(ArchitectureMismatchError, match="invalid architecture"):
        RegimeModelBundle.load(ckpt)


def test_tampered_manifest_fields(ckpt: Path) -> None:
    good = (ckpt / "manifest.json").read_text()
    _edit_manifest(ckpt, weights_sha256="0" * 64)
    with pytest.raises(IntegrityError):
        RegimeModelBundle.load(ckpt)
    (ckpt / "manifest.json").write_text(good)
    _edit_manifest(ckpt, input_names=["s_rsi"] * 11)
    with pytest.raises(CorruptCheckpointError, match="input_names"):
        RegimeModelBundle.load(ckpt)
    (ckpt / "manifest.json").write_text(good)
    _edit_manifest(ckpt, feature_schema_hash="f" * 64)
    with pytest.raises(CorruptCheckpointError, match="feature_schema"):
        RegimeModelBundle.load(ckpt)
    (ckpt / "manifest.json").write_text(good)
    _edit_manifest(ckpt, kind="sage.some-other-model")
    with pytest.raises(ForeignCheckpointError, match="sage.some-other-model"):
        RegimeModelBundle.load(ckpt)
    (ckpt / "manifest.json").write_text(good)
    _edit_manifest(ckpt, weights_file="../elsewhere.pt")
    with pytest.raises(CorruptCheckpointError, match="plain file name"):
        RegimeModelBundle.load(ckpt)
    (ckpt / "manifest.json").write_text(good[: len(good) // 2])
    with pytest.raises(CorruptCheckpointError, match="not a valid model manifest"):
        RegimeModelBundle.load(ckpt)
    (ckpt / "manifest.json").write_text(good)
    RegimeModelBundle.load(ckpt)  # restored: loads again


def test_schema_mismatch_fails_closed(ckpt: Path) -> None:
    other = FeatureSchema(basic=BasicParams(rsi_period=10))
    with pytest.raises(ModelSchemaMismatchError, match="basic"):
        RegimeModelBundle.load(ckpt, schema=other)
    with pytest.raises(ModelSchemaMismatchError):
        RegimeModelBundle.load(ckpt, schema=other.hash)
    bundle = RegimeModelBundle.load(ckpt, schema=FeatureSchema())
    bundle.check_schema(DEFAULT_SCHEMA.hash)
    bundle.check_schema(bundle.schema_hash)
    with pytest.raises(ModelSchemaMismatchError):
        bundle.check_schema(other)
    # The registry-level check, without building a bundle.
    with pytest.raises(ModelSchemaMismatchError):
        load_checkpoint(ckpt, kind=KIND, schema_hash=other.hash)
    assert issubclass(ModelSchemaMismatchError, ModelLoadError)


def test_resolve_names_and_paths(ckpt: Path) -> None:
    assert resolve(ckpt) == ckpt
    assert resolve("default").name == "regime-default"
    assert resolve("my-model").parent.name == "models"
    assert read_manifest(ckpt).name == "tiny"
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"name": 1}', type=type(read_manifest(ckpt)))
