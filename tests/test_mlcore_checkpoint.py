"""mlcore.checkpoint for both kinds: embedding round trip, kind checks, and files in the layouts
written before checkpoints recorded their kind (they must keep loading)."""

import datetime as dt
import hashlib
import io
import json

import numpy as np
import pytest
import torch

from mlcore import CLASS_NAMES
from mlcore import PREPROCESSING_VERSION as CLASSIFIER_PREPROCESSING
from mlcore.checkpoint import (
    FORMAT_MARKER,
    FORMAT_VERSION,
    CheckpointError,
    _state_sha256,
    load_checkpoint,
    save_checkpoint,
)
from mlcore.embedding_model import PREPROCESSING_VERSION as EMBEDDING_PREPROCESSING
from mlcore.embedding_model import EmbeddingConfig, EmbeddingNet
from mlcore.models import VGG6, ModelConfig

TINY_EMBEDDING = EmbeddingConfig(input_size=16, channels=(4, 8), embedding_dim=8, projection_dim=4)
TINY_CLASSIFIER = ModelConfig(dense_units=16)


def _embedding(seed=0):
    torch.manual_seed(seed)
    model = EmbeddingNet(TINY_EMBEDDING)
    model.train()
    with torch.no_grad():  # move the BatchNorm running statistics off their initial values
        model(torch.randn(4, 1, 16, 16))
    return model.eval()


def _classifier(seed=0):
    torch.manual_seed(seed)
    return VGG6(TINY_CLASSIFIER).eval()


def _same_outputs(a, b, x):
    with torch.inference_mode():
        torch.testing.assert_close(a(x), b(x))


def test_embedding_round_trip_records_its_kind():
    model = _embedding()
    buffer = io.BytesIO()
    sha = save_checkpoint(buffer, model, metadata={"workflow": 3, "note": "test"})
    payload = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    assert payload["format"] == FORMAT_MARKER and payload["format_version"] == FORMAT_VERSION
    assert payload["kind"] == "embedding" and "class_names" not in payload
    assert payload["preprocessing_version"] == EMBEDDING_PREPROCESSING

    loaded = load_checkpoint(buffer.getvalue(), kind="embedding", device="cpu")
    assert loaded.kind == "embedding" and loaded.state_sha256 == sha
    assert loaded.config == TINY_EMBEDDING and isinstance(loaded.model, EmbeddingNet)
    assert loaded.metadata == {"workflow": 3, "note": "test"} and loaded.class_names == []
    assert not loaded.model.training
    _same_outputs(model, loaded.model, torch.randn(3, 1, 16, 16))
    # BatchNorm's integer step counter survives next to the float weights.
    assert loaded.model.state_dict()["features.1.num_batches_tracked"].item() == 1


def test_classifier_checkpoints_record_their_kind_too(tmp_path):
    save_checkpoint(tmp_path / "c.pt", _classifier())
    payload = torch.load(tmp_path / "c.pt", weights_only=True)
    assert payload["kind"] == "classifier" and payload["class_names"] == list(CLASS_NAMES)
    assert load_checkpoint(tmp_path / "c.pt", device="cpu").kind == "classifier"


def test_a_checkpoint_of_the_other_kind_is_refused(tmp_path):
    save_checkpoint(tmp_path / "e.pt", _embedding())
    save_checkpoint(tmp_path / "c.pt", _classifier())
    with pytest.raises(CheckpointError, match="kind 'embedding', not 'classifier'"):
        load_checkpoint(tmp_path / "e.pt")
    with pytest.raises(CheckpointError, match="kind 'classifier', not 'embedding'"):
        load_checkpoint(tmp_path / "c.pt", kind="embedding")
    with pytest.raises(ValueError, match="kind must be one of"):
        load_checkpoint(tmp_path / "c.pt", kind="detector")
    with pytest.raises(TypeError, match="cannot checkpoint"):
        save_checkpoint(tmp_path / "x.pt", torch.nn.Linear(2, 2))


def _resave(payload) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def test_embedding_tampering_and_mismatches_are_refused():
    buffer = io.BytesIO()
    save_checkpoint(buffer, _embedding())
    original = buffer.getvalue()

    payload = torch.load(io.BytesIO(original), weights_only=True)
    payload["state_dict"]["embedding.bias"] += 1.0
    with pytest.raises(CheckpointError, match="SHA-256 mismatch"):
        load_checkpoint(_resave(payload), kind="embedding")

    payload = torch.load(io.BytesIO(original), weights_only=True)
    payload["kind"] = "detector"
    with pytest.raises(CheckpointError, match="unknown checkpoint kind"):
        load_checkpoint(_resave(payload), kind="embedding")

    payload = torch.load(io.BytesIO(original), weights_only=True)
    payload["preprocessing_version"] = "braai-l2-v1"  # a classifier's preprocessing
    payload["state_sha256"] = _state_sha256(payload)
    with pytest.raises(CheckpointError, match="unknown preprocessing version"):
        load_checkpoint(_resave(payload), kind="embedding")

    payload = torch.load(io.BytesIO(original), weights_only=True)
    payload["state_dict"]["embedding.weight"] = payload["state_dict"]["embedding.weight"].to(torch.int64)
    payload["state_sha256"] = _state_sha256(payload)
    with pytest.raises(CheckpointError, match="tensor types do not match"):
        load_checkpoint(_resave(payload), kind="embedding")

    payload = torch.load(io.BytesIO(original), weights_only=True)
    payload["state_dict"]["embedding.weight"] = [1.0, 2.0]
    with pytest.raises(CheckpointError, match="not a named tensor"):
        load_checkpoint(_resave(payload), kind="embedding")

    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(b"not a checkpoint", kind="embedding")


# ---------------------------------------------------------------------------------------------
# Files in the earlier layouts, built byte for byte as the code of the time wrote them.


def _legacy_classifier_payload(model: VGG6) -> dict:
    """format_version 1: no kind; the SHA-256 over every other key, then the tensors."""
    payload = {
        "format": "skyvote.mlcore.checkpoint",
        "format_version": 1,
        "model_config": model.config.to_dict(),
        "state_dict": {name: t.detach().clone() for name, t in model.state_dict().items()},
        "preprocessing_version": CLASSIFIER_PREPROCESSING,
        "class_names": ["bogus", "real"],
        "training_data_hash": "abc123",
        "metadata": {"val_auc": 0.97, "tags": ["x"]},
        "created_at": "2024-05-01T12:00:00+00:00",
    }
    header = {key: payload[key] for key in sorted(payload) if key != "state_dict"}
    digest = hashlib.sha256(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(payload["state_dict"]):
        tensor = payload["state_dict"][name].contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    payload["state_sha256"] = digest.hexdigest()
    return payload


def _legacy_embedding_payload(model: EmbeddingNet) -> dict:
    """The embedding's own former layout: its marker, "config", and a hash over a fixed header."""
    payload = {
        "format": "skyvote.mlcore.embedding",
        "format_version": 1,
        "config": model.config.to_dict(),
        "preprocessing_version": "sim-asinh64-v1",
        "metadata": json.loads(json.dumps({"workflow": 7, "version": 2})),
        "created_at": dt.datetime(2024, 5, 1, tzinfo=dt.UTC).isoformat(timespec="seconds"),
        "state_dict": {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()},
    }
    header = {
        k: payload[k]
        for k in ("format", "format_version", "config", "preprocessing_version", "metadata", "created_at")
    }
    digest = hashlib.sha256(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    state = payload["state_dict"]
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    payload["state_sha256"] = digest.hexdigest()
    return payload


def test_a_classifier_checkpoint_without_a_kind_still_loads(tmp_path):
    model = _classifier(1)
    path = tmp_path / "v1.pt"
    torch.save(_legacy_classifier_payload(model), path)
    loaded = load_checkpoint(path, device="cpu")
    assert loaded.kind == "classifier" and loaded.config == TINY_CLASSIFIER
    assert loaded.training_data_hash == "abc123" and loaded.class_names == ["bogus", "real"]
    assert loaded.metadata == {"val_auc": 0.97, "tags": ["x"]}
    _same_outputs(model, loaded.model, torch.randn(2, 3, 63, 63) / 63)
    with pytest.raises(CheckpointError, match="kind 'classifier', not 'embedding'"):
        load_checkpoint(path, kind="embedding")

    tampered = _legacy_classifier_payload(model)
    tampered["training_data_hash"] = "something else"
    torch.save(tampered, path)
    with pytest.raises(CheckpointError, match="SHA-256 mismatch"):
        load_checkpoint(path)


def test_an_embedding_checkpoint_in_the_former_layout_still_loads():
    model = _embedding(2)
    data = _resave(_legacy_embedding_payload(model))
    loaded = load_checkpoint(data, kind="embedding", device="cpu")
    assert loaded.kind == "embedding" and loaded.config == TINY_EMBEDDING
    assert (
        loaded.metadata == {"workflow": 7, "version": 2} and loaded.preprocessing_version == "sim-asinh64-v1"
    )
    assert loaded.training_data_hash == "" and loaded.class_names == []
    _same_outputs(
        model, loaded.model, torch.from_numpy(np.random.default_rng(0).normal(size=(2, 1, 16, 16))).float()
    )
    with pytest.raises(CheckpointError, match="kind 'embedding', not 'classifier'"):
        load_checkpoint(data)

    tampered = _legacy_embedding_payload(model)
    tampered["state_dict"]["embedding.bias"] += 1.0
    with pytest.raises(CheckpointError, match="SHA-256 mismatch"):
        load_checkpoint(_resave(tampered), kind="embedding")
    tampered = _legacy_embedding_payload(model)
    tampered["format_version"] = 2
    with pytest.raises(CheckpointError, match="format_version"):
        load_checkpoint(_resave(tampered), kind="embedding")
