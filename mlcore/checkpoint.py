"""Saving and loading classifier checkpoints, safely.

A checkpoint is ``torch.save`` of one plain dict — only str/int/float/bool/None, lists, dicts and
tensors, never pickled classes — so it is loaded with ``torch.load(..., weights_only=True)``, which
refuses to execute code from a hostile file. On top of that a file is refused, with a
CheckpointError that says why, when it

* is not a PyTorch file, or holds Python objects (weights_only refuses them);
* lacks our format marker or has an unsupported format version;
* misses keys or has tensors whose names/shapes do not match the architecture in its config;
* was made with a preprocessing version this code does not implement;
* does not match the SHA-256 recorded inside (computed over the header and all tensor bytes),
  i.e. it was edited or corrupted after saving.

The SHA-256 detects accidental or naive edits; it is not a signature (whoever can write the file
can recompute it). weights_only=True is what protects against code execution.

Layout (format_version 1)::

    {"format": "skyvote.mlcore.checkpoint", "format_version": 1,
     "model_config": {...ModelConfig...}, "state_dict": {name: tensor},
     "preprocessing_version": "braai-l2-v1", "class_names": ["bogus", "real"],
     "training_data_hash": "<sha256 hex>", "metadata": {...plain values...},
     "created_at": "<ISO 8601 UTC>", "state_sha256": "<sha256 hex>"}
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import pickle
import tempfile
from dataclasses import dataclass, field

import torch

from mlcore import CLASS_NAMES, PREPROCESSING_VERSION
from mlcore.device import pick_device
from mlcore.models import VGG6, ModelConfig, build_model

__all__ = [
    "FORMAT_MARKER",
    "FORMAT_VERSION",
    "SUPPORTED_PREPROCESSING_VERSIONS",
    "CheckpointError",
    "LoadedCheckpoint",
    "save_checkpoint",
    "load_checkpoint",
    "file_sha256",
]

FORMAT_MARKER = "skyvote.mlcore.checkpoint"
FORMAT_VERSION = 1
SUPPORTED_PREPROCESSING_VERSIONS = frozenset({PREPROCESSING_VERSION})
_REQUIRED_KEYS = {
    "format": str,
    "format_version": int,
    "model_config": dict,
    "state_dict": dict,
    "preprocessing_version": str,
    "class_names": list,
    "training_data_hash": str,
    "metadata": dict,
    "created_at": str,
    "state_sha256": str,
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the reason."""


@dataclass
class LoadedCheckpoint:
    model: VGG6
    config: ModelConfig
    preprocessing_version: str
    class_names: list[str]
    training_data_hash: str
    state_sha256: str
    created_at: str
    metadata: dict = field(default_factory=dict)


def _check_plain(value, where: str):
    """Metadata must survive weights_only loading: plain JSON-like values only."""
    if value is None or isinstance(value, bool | int | float | str):
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: keys must be strings, got {key!r}")
            _check_plain(item, f"{where}.{key}")
        return
    raise TypeError(
        f"{where}: {type(value).__name__} is not a plain value (str/int/float/bool/None/list/dict)"
    )


def _state_sha256(payload: dict) -> str:
    header = {key: payload[key] for key in sorted(payload) if key not in {"state_dict", "state_sha256"}}
    digest = hashlib.sha256(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(payload["state_dict"]):
        tensor = payload["state_dict"][name]
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"state_dict entry {name!r} is a {type(tensor).__name__}, not a tensor")
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(
    target,
    model: VGG6,
    *,
    training_data_hash: str = "",
    metadata: dict | None = None,
) -> str:
    """Write model + config + provenance to a path (atomically) or a binary file object; return state_sha256."""
    metadata = dict(metadata or {})
    _check_plain(metadata, "metadata")
    payload = {
        "format": FORMAT_MARKER,
        "format_version": FORMAT_VERSION,
        "model_config": model.config.to_dict(),
        "state_dict": {name: t.detach().to("cpu").clone() for name, t in model.state_dict().items()},
        "preprocessing_version": PREPROCESSING_VERSION,
        "class_names": list(CLASS_NAMES),
        "training_data_hash": str(training_data_hash),
        "metadata": metadata,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    payload["state_sha256"] = _state_sha256(payload)
    save_atomically(payload, target)
    return payload["state_sha256"]


def save_atomically(payload: dict, target) -> None:
    """torch.save to a path (or a binary file object). A path is written next to the target and
    renamed into place, so a crash never leaves a half-written checkpoint."""
    if not isinstance(target, str | os.PathLike):
        torch.save(payload, target)
        return
    path = os.fspath(target)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=".ckpt-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)
        raise


def _describe(source) -> str:
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    return getattr(source, "name", None) or "<file object>"


def load_checkpoint(source, device: str | torch.device | None = None) -> LoadedCheckpoint:
    """Load and verify a checkpoint (path or binary file object); the model is returned in eval mode."""
    name = _describe(source)
    if isinstance(source, str | os.PathLike) and not os.path.exists(source):
        raise CheckpointError(f"checkpoint file not found: {name}")
    if isinstance(source, bytes | bytearray):
        source = io.BytesIO(source)
    if not _leading_bytes(source, 4).startswith((b"PK", b"\x80")):
        # torch.save writes a zip archive ("PK"); old-style files are a pickle (protocol byte 0x80).
        raise CheckpointError(f"{name}: not a readable PyTorch checkpoint (unknown file type)")
    try:
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{name}: refused — not a plain-data checkpoint; loading it would need arbitrary Python "
            f"objects ({first_line[:200]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{name}: not a readable PyTorch checkpoint ({type(exc).__name__})") from None

    if not isinstance(payload, dict) or payload.get("format") != FORMAT_MARKER:
        raise CheckpointError(
            f"{name}: not a Skyvote mlcore checkpoint (format marker {FORMAT_MARKER!r} missing)"
        )
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{name}: unsupported checkpoint format_version {payload.get('format_version')!r} "
            f"(this code reads version {FORMAT_VERSION})"
        )
    missing = sorted(set(_REQUIRED_KEYS) - set(payload))
    if missing:
        raise CheckpointError(f"{name}: checkpoint is missing keys {missing}")
    extra = sorted(set(payload) - set(_REQUIRED_KEYS))
    if extra:
        raise CheckpointError(f"{name}: checkpoint has unexpected keys {extra}")
    for key, expected_type in _REQUIRED_KEYS.items():
        if not isinstance(payload[key], expected_type):
            raise CheckpointError(
                f"{name}: {key!r} should be {expected_type.__name__}, got {type(payload[key]).__name__}"
            )
    if payload["preprocessing_version"] not in SUPPORTED_PREPROCESSING_VERSIONS:
        raise CheckpointError(
            f"{name}: unknown preprocessing version {payload['preprocessing_version']!r} "
            f"(this code implements {sorted(SUPPORTED_PREPROCESSING_VERSIONS)})"
        )
    if payload["class_names"] != list(CLASS_NAMES):
        raise CheckpointError(f"{name}: class names {payload['class_names']} are not {list(CLASS_NAMES)}")
    if _state_sha256(payload) != payload["state_sha256"]:
        raise CheckpointError(
            f"{name}: SHA-256 mismatch — the checkpoint was modified or corrupted after saving"
        )

    try:
        config = ModelConfig.from_dict(payload["model_config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{name}: invalid model_config ({exc})") from None
    model = build_model(config)
    expected = {key: tuple(t.shape) for key, t in model.state_dict().items()}
    found = {key: tuple(t.shape) for key, t in payload["state_dict"].items()}
    if set(expected) != set(found):
        raise CheckpointError(
            f"{name}: weights do not match the {config.architecture} architecture "
            f"(missing {sorted(set(expected) - set(found))}, unexpected {sorted(set(found) - set(expected))})"
        )
    wrong = [f"{k}: {found[k]} != {expected[k]}" for k in sorted(expected) if found[k] != expected[k]]
    if wrong:
        raise CheckpointError(f"{name}: weight shapes do not match the config ({'; '.join(wrong[:3])})")
    if any(not t.is_floating_point() for t in payload["state_dict"].values()):
        raise CheckpointError(f"{name}: weights must be floating-point tensors")
    model.load_state_dict(payload["state_dict"], strict=True)
    model.to(pick_device(device)).eval()
    return LoadedCheckpoint(
        model=model,
        config=config,
        preprocessing_version=payload["preprocessing_version"],
        class_names=payload["class_names"],
        training_data_hash=payload["training_data_hash"],
        state_sha256=payload["state_sha256"],
        created_at=payload["created_at"],
        metadata=payload["metadata"],
    )


def _leading_bytes(source, n: int) -> bytes:
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as handle:
            return handle.read(n)
    position = source.tell()
    head = source.read(n)
    source.seek(position)
    return head


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (e.g. for ModelVersion.artifact_sha256)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()
