"""Saving and loading model checkpoints — the real/bogus classifier and the similarity embedding — safely.

A checkpoint is ``torch.save`` of one plain dict — only str/int/float/bool/None, lists, dicts and
tensors, never pickled classes — so it is loaded with ``torch.load(..., weights_only=True)``, which
refuses to execute code from a hostile file. Every checkpoint records its ``kind``
("classifier" or "embedding") and ``load_checkpoint(source, kind=...)`` refuses the other kind, so
an embedding can never be served as a classifier or the other way round. On top of that a file is
refused, with a CheckpointError that says why, when it

* is not a PyTorch file, or holds Python objects (weights_only refuses them);
* lacks our format marker or has an unsupported format version;
* misses keys or has tensors whose names/shapes/types do not match the architecture in its config;
* was made with a preprocessing version this code does not implement;
* does not match the SHA-256 recorded inside (computed over the header and all tensor bytes),
  i.e. it was edited or corrupted after saving.

The SHA-256 detects accidental or naive edits; it is not a signature (whoever can write the file
can recompute it). weights_only=True is what protects against code execution.

Layout (format_version 2)::

    {"format": "skyvote.mlcore.checkpoint", "format_version": 2, "kind": "classifier",
     "model_config": {...ModelConfig or EmbeddingConfig...}, "state_dict": {name: tensor},
     "preprocessing_version": "braai-l2-v1", "class_names": ["bogus", "real"],  # classifier only
     "training_data_hash": "<sha256 hex>", "metadata": {...plain values...},  # a classifier's
     # metadata may hold "calibration": {"method": "temperature+bias", "temperature": T, "bias": b}
     # (else T = 1, b = 0)
     "created_at": "<ISO 8601 UTC>", "state_sha256": "<sha256 hex>"}

Files written before checkpoints had a kind still load, since models registered then are still in
use: format_version 1 of this layout (no ``kind`` key; always a classifier) and the embedding's
former layout (marker ``skyvote.mlcore.embedding``, version 1, ``config`` instead of
``model_config``, no class names or training-data hash). In all three the SHA-256 covers every key
but ``state_dict`` and ``state_sha256`` as sorted JSON, then every tensor, so one routine verifies
them all.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import pickle
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from mlcore import CLASS_NAMES
from mlcore import PREPROCESSING_VERSION as CLASSIFIER_PREPROCESSING_VERSION
from mlcore.device import pick_device
from mlcore.embedding_model import PREPROCESSING_VERSION as EMBEDDING_PREPROCESSING_VERSION
from mlcore.embedding_model import EmbeddingConfig, EmbeddingNet
from mlcore.models import VGG6, ModelConfig, build_model

__all__ = [
    "FORMAT_MARKER",
    "FORMAT_VERSION",
    "KINDS",
    "CheckpointError",
    "LoadedCheckpoint",
    "save_checkpoint",
    "load_checkpoint",
    "file_sha256",
]

FORMAT_MARKER = "skyvote.mlcore.checkpoint"
FORMAT_VERSION = 2
KINDS = ("classifier", "embedding")
_LEGACY_EMBEDDING_MARKER = "skyvote.mlcore.embedding"


@dataclass(frozen=True)
class _Kind:
    model_class: type[nn.Module]
    config_from_dict: Callable[[dict], object]
    build: Callable[[object], nn.Module]
    preprocessing_version: str
    class_names: tuple[str, ...] | None  # stored and checked only where the output has classes


_KINDS = {
    "classifier": _Kind(
        VGG6, ModelConfig.from_dict, build_model, CLASSIFIER_PREPROCESSING_VERSION, tuple(CLASS_NAMES)
    ),
    "embedding": _Kind(
        EmbeddingNet, EmbeddingConfig.from_dict, EmbeddingNet, EMBEDDING_PREPROCESSING_VERSION, None
    ),
}

_COMMON_KEYS = {
    "format": str,
    "format_version": int,
    "kind": str,
    "model_config": dict,
    "state_dict": dict,
    "preprocessing_version": str,
    "training_data_hash": str,
    "metadata": dict,
    "created_at": str,
    "state_sha256": str,
}


def _required_keys(kind: str) -> dict[str, type]:
    keys = dict(_COMMON_KEYS)
    if _KINDS[kind].class_names is not None:
        keys["class_names"] = list
    return keys


_V1_CLASSIFIER_KEYS = {k: t for k, t in _required_keys("classifier").items() if k != "kind"}
_LEGACY_EMBEDDING_KEYS = {
    "format": str,
    "format_version": int,
    "config": dict,
    "state_dict": dict,
    "preprocessing_version": str,
    "metadata": dict,
    "created_at": str,
    "state_sha256": str,
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the reason."""


@dataclass
class LoadedCheckpoint:
    model: VGG6 | EmbeddingNet
    config: ModelConfig | EmbeddingConfig
    preprocessing_version: str
    class_names: list[str]  # empty for an embedding
    training_data_hash: str
    state_sha256: str
    created_at: str
    metadata: dict = field(default_factory=dict)
    kind: str = "classifier"
    temperature: float = 1.0  # P(real) = sigmoid(logit / temperature + bias); 1.0 and 0.0 when
    bias: float = 0.0  # never calibrated


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
    """SHA-256 of every key but the weights and the hash itself (sorted JSON), then each tensor's
    name, dtype, shape and bytes in name order."""
    header = {key: payload[key] for key in sorted(payload) if key not in {"state_dict", "state_sha256"}}
    digest = hashlib.sha256(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(payload["state_dict"]):
        tensor = payload["state_dict"][name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _kind_of(model: nn.Module) -> str:
    for kind, spec in _KINDS.items():
        if isinstance(model, spec.model_class):
            return kind
    names = ", ".join(spec.model_class.__name__ for spec in _KINDS.values())
    raise TypeError(f"cannot checkpoint a {type(model).__name__}: expected one of {names}")


def save_checkpoint(
    target,
    model: VGG6 | EmbeddingNet,
    *,
    training_data_hash: str = "",
    metadata: dict | None = None,
) -> str:
    """Write model + config + provenance to a path (atomically) or a binary file object; return
    state_sha256. The kind ("classifier" or "embedding") follows from the model."""
    kind = _kind_of(model)
    spec = _KINDS[kind]
    metadata = dict(metadata or {})
    temperature = getattr(model, "calibration_temperature", None)
    if kind == "classifier" and temperature is not None and "calibration" not in metadata:
        # The fitted calibration travels with the weights, so every scorer applies the same one.
        bias = float(getattr(model, "calibration_bias", 0.0) or 0.0)
        metadata["calibration"] = {
            "method": "temperature+bias",
            "temperature": float(temperature),
            "bias": bias,
        }
    _check_plain(metadata, "metadata")
    payload = {
        "format": FORMAT_MARKER,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "model_config": model.config.to_dict(),
        "state_dict": {name: t.detach().to("cpu").clone() for name, t in model.state_dict().items()},
        "preprocessing_version": spec.preprocessing_version,
        "training_data_hash": str(training_data_hash),
        "metadata": metadata,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if spec.class_names is not None:
        payload["class_names"] = list(spec.class_names)
    payload["state_sha256"] = _state_sha256(payload)
    _save_atomically(payload, target)
    return payload["state_sha256"]


def _save_atomically(payload: dict, target) -> None:
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
    if isinstance(source, bytes | bytearray):
        return "<bytes>"
    return getattr(source, "name", None) or "<file object>"


def _read(source, name: str) -> object:
    """torch.load with weights_only=True, every failure turned into a CheckpointError."""
    if isinstance(source, str | os.PathLike) and not os.path.exists(source):
        raise CheckpointError(f"checkpoint file not found: {name}")
    if isinstance(source, bytes | bytearray):
        source = io.BytesIO(source)
    if not _leading_bytes(source, 4).startswith((b"PK", b"\x80")):
        # torch.save writes a zip archive ("PK"); old-style files are a pickle (protocol byte 0x80).
        raise CheckpointError(f"{name}: not a readable PyTorch checkpoint (unknown file type)")
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{name}: refused — not a plain-data checkpoint; loading it would need arbitrary Python "
            f"objects ({first_line[:200]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{name}: not a readable PyTorch checkpoint ({type(exc).__name__})") from None


@dataclass(frozen=True)
class _Layout:
    kind: str
    keys: dict[str, type]
    config_key: str


def _layout(payload, name: str) -> _Layout:
    """Which of the readable layouts (current, or one of the two earlier ones) a payload has."""
    marker = payload.get("format") if isinstance(payload, dict) else None
    if marker not in (FORMAT_MARKER, _LEGACY_EMBEDDING_MARKER):
        raise CheckpointError(
            f"{name}: not a Skyvote mlcore checkpoint (format marker {FORMAT_MARKER!r} missing)"
        )
    version = payload.get("format_version")
    if marker == _LEGACY_EMBEDDING_MARKER:
        if version != 1:
            raise CheckpointError(
                f"{name}: unsupported embedding checkpoint format_version {version!r} (this code reads version 1)"
            )
        return _Layout("embedding", _LEGACY_EMBEDDING_KEYS, "config")
    if version == 1:
        return _Layout("classifier", _V1_CLASSIFIER_KEYS, "model_config")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{name}: unsupported checkpoint format_version {version!r} "
            f"(this code reads versions 1 and {FORMAT_VERSION})"
        )
    kind = payload.get("kind")
    if kind not in KINDS:
        raise CheckpointError(
            f"{name}: unknown checkpoint kind {kind!r} (this code reads {', '.join(KINDS)})"
        )
    return _Layout(kind, _required_keys(kind), "model_config")


def _check_keys(payload: dict, keys: dict[str, type], name: str) -> None:
    missing = sorted(set(keys) - set(payload))
    if missing:
        raise CheckpointError(f"{name}: checkpoint is missing keys {missing}")
    extra = sorted(set(payload) - set(keys))
    if extra:
        raise CheckpointError(f"{name}: checkpoint has unexpected keys {extra}")
    for key, expected_type in keys.items():
        if not isinstance(payload[key], expected_type):
            raise CheckpointError(
                f"{name}: {key!r} should be {expected_type.__name__}, got {type(payload[key]).__name__}"
            )
    for key, tensor in payload["state_dict"].items():
        if not isinstance(key, str) or not isinstance(tensor, torch.Tensor):
            raise CheckpointError(
                f"{name}: state_dict entry {key!r} is a {type(tensor).__name__}, not a named tensor"
            )


def _check_weights(model: nn.Module, state: dict, architecture: str, name: str) -> None:
    """The stored tensors must be exactly the network's: same names, shapes, and float vs integer
    (BatchNorm's step counter is an integer buffer; every weight is floating point)."""
    expected = model.state_dict()
    if set(expected) != set(state):
        raise CheckpointError(
            f"{name}: weights do not match the {architecture} architecture "
            f"(missing {sorted(set(expected) - set(state))}, unexpected {sorted(set(state) - set(expected))})"
        )
    wrong = [
        f"{k}: {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in sorted(expected)
        if state[k].shape != expected[k].shape
    ]
    if wrong:
        raise CheckpointError(f"{name}: weight shapes do not match the config ({'; '.join(wrong[:3])})")
    wrong = [
        f"{k}: {state[k].dtype} where the network has {expected[k].dtype}"
        for k in sorted(expected)
        if state[k].is_floating_point() != expected[k].is_floating_point()
    ]
    if wrong:
        raise CheckpointError(f"{name}: tensor types do not match the network ({'; '.join(wrong[:3])})")


def load_checkpoint(
    source, kind: str = "classifier", device: str | torch.device | None = None
) -> LoadedCheckpoint:
    """Load and verify a checkpoint of the given kind (path, bytes or binary file object); the model
    is returned in eval mode on ``device`` (default: CUDA when available, else CPU)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    name = _describe(source)
    payload = _read(source, name)
    layout = _layout(payload, name)
    _check_keys(payload, layout.keys, name)
    if layout.kind != kind:
        raise CheckpointError(f"{name}: holds a model of kind {layout.kind!r}, not {kind!r}")
    spec = _KINDS[kind]
    if payload["preprocessing_version"] != spec.preprocessing_version:
        raise CheckpointError(
            f"{name}: unknown preprocessing version {payload['preprocessing_version']!r} "
            f"(this code implements {spec.preprocessing_version!r})"
        )
    if spec.class_names is not None and payload["class_names"] != list(spec.class_names):
        raise CheckpointError(
            f"{name}: class names {payload['class_names']} are not {list(spec.class_names)}"
        )
    if _state_sha256(payload) != payload["state_sha256"]:
        raise CheckpointError(
            f"{name}: SHA-256 mismatch — the checkpoint was modified or corrupted after saving"
        )

    try:
        config = spec.config_from_dict(payload[layout.config_key])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{name}: invalid model_config ({exc})") from None
    model = spec.build(config)
    _check_weights(model, payload["state_dict"], config.architecture, name)
    model.load_state_dict(payload["state_dict"], strict=True)
    model.to(pick_device(device)).eval()
    temperature, bias = _calibration(payload["metadata"], name) if kind == "classifier" else (1.0, 0.0)
    if kind == "classifier":
        model.calibration_temperature, model.calibration_bias = temperature, bias
    return LoadedCheckpoint(
        model=model,
        config=config,
        preprocessing_version=payload["preprocessing_version"],
        class_names=payload.get("class_names", []),
        training_data_hash=payload.get("training_data_hash", ""),
        state_sha256=payload["state_sha256"],
        created_at=payload["created_at"],
        metadata=payload["metadata"],
        kind=kind,
        temperature=temperature,
        bias=bias,
    )


def _calibration(metadata: dict, name: str) -> tuple[float, float]:
    """The calibration (temperature, bias) recorded in a classifier's metadata (mlcore.calibration);
    (1.0, 0.0) for checkpoints saved before calibration existed."""
    calibration = metadata.get("calibration")
    if calibration is None:
        return 1.0, 0.0
    value = calibration.get("temperature") if isinstance(calibration, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not (0 < value < float("inf")):
        raise CheckpointError(f"{name}: invalid calibration temperature {value!r} (a positive number)")
    bias = calibration.get("bias", 0.0)
    if isinstance(bias, bool) or not isinstance(bias, int | float) or not abs(bias) < float("inf"):
        raise CheckpointError(f"{name}: invalid calibration bias {bias!r} (a finite number)")
    return float(value), float(bias)


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
