"""Model registry: checkpoints as plain state dicts plus a msgspec manifest, loaded fail-closed.

A checkpoint is a directory::

    <name>/
      weights.pt      torch.save of a dict[str, Tensor] (nothing else: no modules, no code)
      manifest.json   ModelManifest: architecture, feature-schema hash + names, training data, metrics,
                      version, created, sha256 of weights.pt (and of any sidecar files)
      <sidecar>       optional data files written with the weights (e.g. ``reference.json``: the training
                      distribution the drift monitors compare against), each checksummed in the manifest

Why fail-closed: a model fed features it was not trained on, or weights that do not match the
architecture it is built with, still produces numbers -- plausible-looking garbage that trades. And a
pickle can execute arbitrary code when it is loaded. So :func:`load_checkpoint` refuses anything it
cannot fully verify, with a :class:`ModelLoadError` subclass naming the problem:

============================  ===========================================================================
:class:`MissingCheckpointError`      no such directory, or ``manifest.json`` / ``weights.pt`` missing
:class:`CorruptCheckpointError`      manifest unreadable, weights truncated or not a valid archive, NaN/inf
:class:`IntegrityError`              ``sha256(weights.pt)`` differs from the manifest (tampered/replaced)
:class:`UnsafeCheckpointError`       the weights file is a pickle that references code (refused unread)
:class:`ForeignCheckpointError`      a different model kind, or a file that is not a tensor state dict
:class:`ArchitectureMismatchError`   state-dict keys / shapes / dtypes differ from the declared architecture
:class:`ModelSchemaMismatchError`    the caller's feature schema hash differs from the one trained on
============================  ===========================================================================

Loading order: manifest -> sha256 -> archive format -> ``torch.load(weights_only=True)`` -> tensor-only
check -> finiteness -> keys/shapes -> schema. The weights file is never unpickled by anything but
PyTorch's restricted ``weights_only`` unpickler, and only after it is known to be a torch zip archive,
so a raw pickle with a ``__reduce__`` payload is rejected before any byte of it is interpreted.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tempfile
import zipfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import torch

FORMAT_VERSION: int = 1
"""Version of the checkpoint layout; bumped when the manifest schema changes incompatibly."""

WEIGHTS_FILE: str = "weights.pt"
MANIFEST_FILE: str = "manifest.json"

ASSETS_DIR: Path = Path(__file__).resolve().parents[1] / "assets" / "models"
"""Where named models ship inside the package (``sage/assets/models/<name>/``)."""

ALIASES: dict[str, str] = {"default": "regime-default"}
"""Short names: ``load("default")`` is the shipped ``regime-default`` bundle."""


class ModelLoadError(Exception):
    """A checkpoint was refused; the message names the file and the problem."""


class MissingCheckpointError(ModelLoadError):
    """The checkpoint directory, its manifest or its weights file does not exist."""


class CorruptCheckpointError(ModelLoadError):
    """The manifest or weights cannot be parsed (truncated, not JSON, not an archive, non-finite values)."""


class IntegrityError(ModelLoadError):
    """The weights file's sha256 differs from the manifest's: it was modified or replaced."""


class UnsafeCheckpointError(ModelLoadError):
    """The weights file holds a pickle that references code; it was refused without being executed."""


class ForeignCheckpointError(ModelLoadError):
    """The checkpoint belongs to another model kind, or is not a plain tensor state dict."""


class ArchitectureMismatchError(ModelLoadError):
    """The state dict's keys or shapes differ from the architecture the manifest declares."""


class ModelSchemaMismatchError(ModelLoadError):
    """The features offered to the model differ from those it was trained on (schema hash mismatch)."""


class ModelManifest(msgspec.Struct, frozen=True, kw_only=True):
    """Everything needed to rebuild, verify and account for a checkpoint (``manifest.json``)."""

    name: str
    """Model name, e.g. ``regime-default``."""
    kind: str
    """Model family the loader builds, e.g. ``sage.regime-bundle``; a loader refuses other kinds."""
    version: str
    """Model version (semantic version string), bumped when retrained with a changed recipe."""
    created: str
    """UTC creation time, ISO-8601."""
    architecture: dict[str, Any]
    """The kind's architecture config with every size (``msgspec.to_builtins`` of its config struct)."""
    feature_schema_hash: str
    """``FeatureSchema.hash`` of the features the inputs are computed from."""
    input_hash: str
    """Hash of the exact model input (feature schema hash + matrix kind + columns + window)."""
    input_names: list[str]
    """Input feature names, in the order of the window's last axis."""
    feature_schema: str = ""
    """``FeatureSchema.to_json()``, so the exact features can be recomputed from the manifest alone."""
    training: dict[str, Any] = msgspec.field(default_factory=dict)
    """Training description: data (catalog, bar types, time ranges, seeds), config, command, wall time."""
    metrics: dict[str, Any] = msgspec.field(default_factory=dict)
    """Evaluation metrics at training time (held-out synthetic accuracy, forecaster coverage, ...)."""
    weights_file: str = WEIGHTS_FILE
    """File name of the state dict inside the checkpoint directory."""
    weights_sha256: str = ""
    """sha256 hex digest of the weights file; filled in by :func:`save_checkpoint`."""
    format_version: int = FORMAT_VERSION
    """Checkpoint layout version (see :data:`FORMAT_VERSION`)."""
    sidecars: dict[str, str] = msgspec.field(default_factory=dict)
    """Extra files of the checkpoint (plain file names) -> their sha256; verified on load like the
    weights (default none). Additive: checkpoints without sidecars read as before."""


def utc_now_iso() -> str:
    """Current UTC time as ISO-8601 with seconds precision (manifest ``created``)."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def resolve(name_or_path: str | os.PathLike[str]) -> Path:
    """Directory of a checkpoint: an existing path as given, else a shipped model name (or alias).

    ``"default"`` -> ``sage/assets/models/regime-default``; ``"my-model"`` ->
    ``sage/assets/models/my-model``; ``"./out/my-model"`` (exists) -> that directory.
    """
    path = Path(name_or_path)
    if path.exists():
        return path
    name = str(name_or_path)
    if os.sep in name or "/" in name:
        return path  # a path that does not exist: reported as missing by the loader
    return ASSETS_DIR / ALIASES.get(name, name)


def shipped_models() -> list[str]:
    """Names of the models shipped in :data:`ASSETS_DIR`."""
    if not ASSETS_DIR.exists():
        return []
    return sorted(p.name for p in ASSETS_DIR.iterdir() if (p / MANIFEST_FILE).exists())


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file + rename, with ordinary ``rw-r--r--`` permissions (``mkstemp`` makes 0600)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def state_dict_bytes(state_dict: Mapping[str, torch.Tensor]) -> bytes:
    """The exact bytes :func:`save_checkpoint` writes for ``state_dict``.

    Serialised through an in-memory buffer so the archive's internal record names do not depend on the
    destination file name: equal state dicts give byte-identical files (and equal sha256).
    """
    clean: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state dict entry {key!r} is a {type(value).__name__}, not a tensor")
        clean[str(key)] = value.detach().cpu().contiguous().clone()
    buffer = io.BytesIO()
    torch.save(clean, buffer)
    return buffer.getvalue()


def _check_sidecar_name(name: str, where: object) -> None:
    if Path(name).name != name or name in ("", ".", "..", WEIGHTS_FILE, MANIFEST_FILE):
        raise CorruptCheckpointError(f"{where}: sidecar must be a plain file name other than the weights/manifest, got {name!r}")


def save_checkpoint(
    directory: str | os.PathLike[str],
    state_dict: Mapping[str, torch.Tensor],
    manifest: ModelManifest,
    sidecars: Mapping[str, bytes] | None = None,
) -> ModelManifest:
    """Write ``weights.pt``, any ``sidecars`` (file name -> bytes) and ``manifest.json`` into ``directory``
    (created if needed).

    Returns the manifest as written, with ``weights_sha256`` (and ``weights_file``) and the sidecars'
    sha256 filled in. Each file is written atomically (temp file + rename), the manifest last, so a
    reader never sees a manifest that points at missing or half-written files.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = state_dict_bytes(state_dict)
    extra = dict(sidecars or {})
    for name in extra:
        _check_sidecar_name(name, directory)
    manifest = msgspec.structs.replace(
        manifest,
        weights_file=WEIGHTS_FILE,
        weights_sha256=_sha256(data),
        sidecars={name: _sha256(blob) for name, blob in sorted(extra.items())},
    )
    _atomic_write(directory / WEIGHTS_FILE, data)
    for name, blob in sorted(extra.items()):
        _atomic_write(directory / name, blob)
    _atomic_write(
        directory / MANIFEST_FILE, msgspec.json.format(msgspec.json.encode(manifest), indent=2) + b"\n"
    )
    return manifest


def read_manifest(directory: str | os.PathLike[str]) -> ModelManifest:
    """Parse and validate ``<directory>/manifest.json`` (raises :class:`ModelLoadError` subclasses)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MissingCheckpointError(f"no model checkpoint at {directory} (directory does not exist)")
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise MissingCheckpointError(f"model checkpoint {directory} has no {MANIFEST_FILE}")
    try:
        manifest = msgspec.json.decode(path.read_bytes(), type=ModelManifest)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise CorruptCheckpointError(f"{path} is not a valid model manifest: {exc}") from exc
    if manifest.format_version != FORMAT_VERSION:
        raise ForeignCheckpointError(
            f"{path} has checkpoint format version {manifest.format_version}; this sage reads version "
            f"{FORMAT_VERSION}"
        )
    if Path(manifest.weights_file).name != manifest.weights_file or manifest.weights_file in ("", ".", ".."):
        raise CorruptCheckpointError(
            f"{path}: weights_file must be a plain file name, got {manifest.weights_file!r}"
        )
    return manifest


def read_sidecar(name_or_path: str | os.PathLike[str], manifest: ModelManifest, name: str) -> bytes:
    """Bytes of the checkpoint's sidecar ``name``, verified against the manifest's sha256.

    Raises :class:`MissingCheckpointError` when the manifest lists no such sidecar or the file is gone,
    :class:`IntegrityError` when its sha256 differs (modified, replaced or truncated).
    """
    directory = resolve(name_or_path)
    _check_sidecar_name(name, directory)
    expected = manifest.sidecars.get(name)
    path = directory / name
    if expected is None:
        raise MissingCheckpointError(f"model checkpoint {directory} lists no sidecar {name!r}")
    if not path.is_file():
        raise MissingCheckpointError(f"model checkpoint {directory} has no sidecar file {name}")
    data = path.read_bytes()
    digest = _sha256(data)
    if digest != expected:
        raise IntegrityError(
            f"{path}: sha256 {digest[:16]}... does not match the manifest's {expected[:16]}... "
            "(the file was modified, replaced or truncated)"
        )
    return data


def _load_tensors(path: Path, data: bytes) -> dict[str, torch.Tensor]:
    """Unpickle ``data`` with PyTorch's restricted unpickler; anything but ``dict[str, Tensor]`` is refused."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        if data[:1] == b"\x80" or data[:2] in (
            b"(d",
            b"}q",
            b"(l",
        ):  # pickle protocol header / legacy opcodes
            raise UnsafeCheckpointError(
                f"{path} is a raw pickle, not a torch state-dict archive; refused without unpickling "
                "(a pickle can run arbitrary code when loaded)"
            )
        raise CorruptCheckpointError(f"{path} is not a torch state-dict archive (truncated or foreign file)")
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(
            f"{path} references objects outside the tensor allow-list (possibly code); refused by the "
            f"weights_only unpickler: {str(exc).splitlines()[0]}"
        ) from exc
    except (RuntimeError, EOFError, ValueError, KeyError, zipfile.BadZipFile, OSError) as exc:
        raise CorruptCheckpointError(
            f"{path} could not be read as a state dict (truncated or corrupt): {exc}"
        ) from exc
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise ForeignCheckpointError(
            f"{path} does not hold a plain dict of named tensors (got {type(obj).__name__})"
        )
    return obj


def check_state_dict(
    state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor | tuple[int, ...]], where: str
) -> None:
    """Raise :class:`ArchitectureMismatchError` unless keys, shapes (and, for tensors, dtypes) match."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    problems: list[str] = []
    if missing:
        problems.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
    for key in sorted(set(expected) & set(state_dict)):
        want = expected[key]
        shape = tuple(want.shape) if isinstance(want, torch.Tensor) else tuple(want)
        got = state_dict[key]
        if tuple(got.shape) != shape:
            problems.append(f"{key}: shape {tuple(got.shape)} != expected {shape}")
        elif isinstance(want, torch.Tensor) and got.dtype != want.dtype:
            problems.append(f"{key}: dtype {got.dtype} != expected {want.dtype}")
    if problems:
        raise ArchitectureMismatchError(
            f"{where}: weights do not match the declared architecture: " + "; ".join(problems[:10])
        )


def load_checkpoint(
    name_or_path: str | os.PathLike[str],
    *,
    kind: str,
    expected: Mapping[str, torch.Tensor | tuple[int, ...]] | None = None,
    expected_for: Any = None,
    schema_hash: str | None = None,
) -> tuple[ModelManifest, dict[str, torch.Tensor]]:
    """Load and verify a checkpoint; return ``(manifest, state_dict)``.

    ``kind``: the model family the caller builds; another kind is a :class:`ForeignCheckpointError`.
    ``expected``: the reference state dict (or key -> shape) of the architecture the caller will load the
    weights into; or ``expected_for(manifest) -> expected`` to derive it from the manifest's declared
    architecture (what bundles do: build the module from ``manifest.architecture``, compare).
    ``schema_hash``: if given, must equal ``manifest.input_hash`` or ``manifest.feature_schema_hash``.
    """
    directory = resolve(name_or_path)
    manifest = read_manifest(directory)
    if manifest.kind != kind:
        raise ForeignCheckpointError(f"{directory} holds a {manifest.kind!r} model, not a {kind!r} model")
    path = directory / manifest.weights_file
    if not path.is_file():
        raise MissingCheckpointError(
            f"model checkpoint {directory} has no weights file {manifest.weights_file}"
        )
    data = path.read_bytes()
    digest = _sha256(data)
    if digest != manifest.weights_sha256:
        raise IntegrityError(
            f"{path}: sha256 {digest[:16]}... does not match the manifest's {manifest.weights_sha256[:16]}... "
            "(the weights were modified, replaced or truncated)"
        )
    for name in manifest.sidecars:
        read_sidecar(directory, manifest, name)
    state_dict = _load_tensors(path, data)
    for key, tensor in state_dict.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CorruptCheckpointError(f"{path}: tensor {key!r} contains NaN or inf")
    if expected_for is not None:
        try:
            expected = expected_for(manifest)
        except ModelLoadError:
            raise
        except (msgspec.ValidationError, ValueError, TypeError, KeyError) as exc:
            raise ArchitectureMismatchError(
                f"{directory}: invalid architecture in the manifest: {exc}"
            ) from exc
    if expected is not None:
        check_state_dict(state_dict, expected, str(path))
    if schema_hash is not None and schema_hash not in (manifest.input_hash, manifest.feature_schema_hash):
        raise ModelSchemaMismatchError(
            f"{directory}: feature schema hash {schema_hash[:16]}... does not match the model's "
            f"(input {manifest.input_hash[:16]}..., features {manifest.feature_schema_hash[:16]}...); the model "
            "was trained on different features -- recompute them with the model's schema or retrain"
        )
    return manifest, state_dict
