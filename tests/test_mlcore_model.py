"""mlcore.models, mlcore.checkpoint, mlcore.score, mlcore.device: shapes, MC dropout, safe checkpoints."""

import io
import pickle

import numpy as np
import pytest
import torch

from mlcore import PREPROCESSING_VERSION
from mlcore.checkpoint import (
    FORMAT_MARKER,
    CheckpointError,
    _state_sha256,
    file_sha256,
    load_checkpoint,
    save_checkpoint,
)
from mlcore.device import pick_device
from mlcore.models import VGG6, ModelConfig
from mlcore.prep import preprocess_batch
from mlcore.score import bald_from_probs, binary_entropy, score


def _model(seed=0, **config):
    torch.manual_seed(seed)
    return VGG6(ModelConfig(**config)).eval()


def _raw(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(100, 10, size=(n, 3, 63, 63)).astype(np.float32)


def test_vgg6_shapes_and_split_into_features_and_head():
    model = _model()
    x = torch.from_numpy(preprocess_batch(_raw(5)))
    features = model.features(x)
    assert features.shape == (5, 32 * 12 * 12) == (5, model.config.n_features())
    assert model.embed(features).shape == (5, 256)
    logits = model(x)
    assert logits.shape == (5,)
    torch.testing.assert_close(model.head(features), logits)
    # 16 then 32 filters, 3×3 kernels, one logit.
    convs = [m for m in model.conv if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 16, 32, 32]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert model.out.out_features == 1 and model.fc.out_features == 256


def test_model_config_validation_and_round_trip():
    config = ModelConfig(conv_filters=(8, 16), dense_units=32)
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="architecture"):
        ModelConfig(architecture="resnet")
    with pytest.raises(ValueError, match="dropout"):
        ModelConfig(dense_dropout=1.5)
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"nonsense": 1})


def test_mc_logits_match_reference_dropout_in_distribution():
    """The cheap path (conv once, masks on the 256 activations) samples the same distribution as
    running the head with nn.Dropout in training mode."""
    model = _model(1, conv_filters=(4, 8))  # small conv part; the 256-unit head is the real one
    x = torch.from_numpy(preprocess_batch(_raw(3, seed=2)))
    samples = 4000
    with torch.no_grad():
        model.out.weight *= 40  # a freshly initialised head is nearly constant; make dropout matter
        model.out.bias.fill_(0.5)
        h = model.embed(model.features(x))
        cheap = torch.sigmoid(model.mc_logits(h, samples, torch.Generator().manual_seed(0)))
        model.head_dropout.train()  # reference: dropout on, conv part still deterministic
        torch.manual_seed(0)
        f = model.features(x)
        # One head pass per sample (rows repeated), exactly as nn.Dropout does in training.
        reference = torch.sigmoid(model.head(f.repeat(samples, 1))).reshape(samples, 3)
        model.eval()
    assert cheap.shape == reference.shape == (samples, 3)
    assert torch.all(cheap.std(0) > 0.05)  # the comparison below is not vacuous
    torch.testing.assert_close(cheap.mean(0), reference.mean(0), atol=0.01, rtol=0)
    torch.testing.assert_close(cheap.std(0), reference.std(0), atol=0, rtol=0.12)
    # Same BALD value (a function of the distribution) within Monte-Carlo error.
    np.testing.assert_allclose(bald_from_probs(cheap.numpy()), bald_from_probs(reference.numpy()), atol=0.02)
    # Without dropout the samples collapse to the deterministic logit.
    plain = _model(1, conv_filters=(4, 8), dense_dropout=0.0)
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        h = plain.embed(plain.features(x))
        torch.testing.assert_close(plain.mc_logits(h, 4)[2], plain(x))


def test_score_outputs_and_uncertainty():
    model = _model()
    raw = _raw(7)
    result = score(model, raw, batch_size=3, mc_samples=20, keep_mc=True)
    with torch.no_grad():
        expected = torch.sigmoid(model(torch.from_numpy(preprocess_batch(raw)))).numpy()
    np.testing.assert_allclose(result.p_real, expected, atol=1e-5)
    assert result.features.shape == (7, 256) and result.mc_probs.shape == (20, 7)
    assert result.bald.shape == result.entropy.shape == (7,)
    np.testing.assert_allclose(result.bald, bald_from_probs(result.mc_probs), atol=1e-6)
    np.testing.assert_allclose(result.entropy, binary_entropy(result.mc_probs.mean(0)), atol=1e-6)
    assert np.all(result.bald >= 0) and np.all(result.entropy <= 1.0 + 1e-9)
    again = score(model, raw, batch_size=5, mc_samples=20, keep_mc=True)
    # Seeded, and the same dropout masks per triplet whatever the batch size.
    np.testing.assert_allclose(again.mc_probs, result.mc_probs, atol=1e-6)
    plain = score(model, raw, features=False)
    assert plain.bald is None and plain.features is None
    bf16 = score(model, raw, precision="bfloat16")
    np.testing.assert_allclose(bf16.p_real, expected, atol=0.02)
    assert model.training is False and next(model.parameters()).is_contiguous()  # caller's model untouched


def test_binary_entropy_and_bald_known_values():
    np.testing.assert_allclose(binary_entropy([0.5, 0.0, 1.0]), [1.0, 0.0, 0.0], atol=1e-9)
    disagree = np.array([[0.0, 0.5], [1.0, 0.5]])  # item 0: samples disagree; item 1: all unsure
    np.testing.assert_allclose(bald_from_probs(disagree), [1.0, 0.0], atol=1e-6)


def test_pick_device_is_automatic(monkeypatch):
    monkeypatch.delenv("MLCORE_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device().type == expected
    assert pick_device("cpu").type == "cpu"
    monkeypatch.setenv("MLCORE_DEVICE", "cpu")
    assert pick_device(None).type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device("cuda")
    with pytest.raises(ValueError):
        pick_device("tpu")


def test_checkpoint_round_trip(tmp_path):
    model = _model(3, dense_units=64)
    path = tmp_path / "model.pt"
    sha = save_checkpoint(path, model, training_data_hash="abc123", metadata={"val_auc": 0.97, "tags": ["x"]})
    loaded = load_checkpoint(path)
    assert loaded.state_sha256 == sha
    assert loaded.config == model.config
    assert loaded.preprocessing_version == PREPROCESSING_VERSION
    assert loaded.class_names == ["bogus", "real"]
    assert loaded.training_data_hash == "abc123"
    assert loaded.metadata == {"val_auc": 0.97, "tags": ["x"]}
    x = torch.from_numpy(preprocess_batch(_raw(4)))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x))
    assert not loaded.model.training
    assert len(file_sha256(path)) == 64
    # File objects work as well as paths (e.g. Django storage).
    buffer = io.BytesIO()
    save_checkpoint(buffer, model)
    buffer.seek(0)
    assert load_checkpoint(buffer).config == model.config
    # Metadata must be plain data, or loading with weights_only would fail later.
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "bad.pt", model, metadata={"when": object()})


def _payload(tmp_path, model=None):
    path = tmp_path / "m.pt"
    save_checkpoint(path, model or _model())
    return torch.load(path, weights_only=True)


def test_tampered_weights_are_refused(tmp_path):
    payload = _payload(tmp_path)
    payload["state_dict"]["out.bias"] += 1.0
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(CheckpointError, match="SHA-256 mismatch"):
        load_checkpoint(tmp_path / "tampered.pt")


def test_tampered_metadata_is_refused(tmp_path):
    payload = _payload(tmp_path)
    payload["training_data_hash"] = "something else"
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(CheckpointError, match="SHA-256 mismatch"):
        load_checkpoint(tmp_path / "tampered.pt")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_foreign_and_malicious_files_are_refused(tmp_path):
    (tmp_path / "text.pt").write_text("definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "text.pt")

    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="format marker"):
        load_checkpoint(tmp_path / "other.pt")

    torch.save(_model().state_dict(), tmp_path / "bare_state_dict.pt")
    with pytest.raises(CheckpointError, match="format marker"):
        load_checkpoint(tmp_path / "bare_state_dict.pt")

    # A pickle that would run code on load: weights_only refuses it.
    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump({"format": FORMAT_MARKER, "payload": Exploit()}, handle)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(tmp_path / "evil.pt")
    torch.save({"format": FORMAT_MARKER, "payload": Exploit()}, tmp_path / "evil_zip.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(tmp_path / "evil_zip.pt")

    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def _resigned(payload):
    payload["state_sha256"] = _state_sha256(payload)  # as if someone re-computed the hash
    return payload


def test_wrong_format_version_keys_shapes_and_preprocessing_are_refused(tmp_path):
    cases = []
    payload = _payload(tmp_path)
    payload["format_version"] = 99
    cases.append((payload, "format_version"))

    payload = _payload(tmp_path)
    del payload["class_names"]
    cases.append((payload, "missing keys"))

    payload = _payload(tmp_path)
    payload["preprocessing_version"] = "mystery-v0"
    cases.append((_resigned(payload), "unknown preprocessing version"))

    payload = _payload(tmp_path)
    payload["state_dict"]["fc.weight"] = torch.zeros(10, 10)
    cases.append((_resigned(payload), "weight shapes do not match"))

    payload = _payload(tmp_path)
    payload["state_dict"]["extra.weight"] = torch.zeros(1)
    cases.append((_resigned(payload), "unexpected"))

    payload = _payload(tmp_path)
    payload["model_config"]["dense_units"] = 128  # config no longer matches the tensors
    cases.append((_resigned(payload), "weight shapes do not match"))

    for i, (bad, message) in enumerate(cases):
        path = tmp_path / f"bad{i}.pt"
        torch.save(bad, path)
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(path)
