"""mlcore.train and mlcore.baseline: learning on soft labels, determinism, stopping rules, errors."""

import numpy as np
import pytest
import torch

from mlcore.baseline import FEATURE_NAMES, RandomForestBaseline, triplet_features
from mlcore.classifier import CnnClassifier, RealBogusClassifier
from mlcore.data import NpyTripletDataset
from mlcore.metrics import roc_auc
from mlcore.models import VGG6, ModelConfig
from mlcore.train import TrainConfig, TrainingError, train_classifier, validation_split


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny batches gain nothing from a second thread, and lose a lot when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SMALL = ModelConfig(conv_filters=(4, 8), dense_units=16)  # keeps CPU tests fast; same code paths


def separable(n=96, seed=0):
    """Noise triplets; 'real' ones carry a compact positive blob in the science and difference images."""
    rng = np.random.default_rng(seed)
    images = rng.normal(100, 5, size=(n, 3, 63, 63)).astype(np.float32)
    labels = (np.arange(n) % 2).astype(np.float64)
    yy, xx = np.mgrid[:63, :63]
    blob = 400 * np.exp(-((yy - 31) ** 2 + (xx - 31) ** 2) / (2 * 1.5**2))
    images[labels == 1, 0] += blob
    images[labels == 1, 2] += blob
    images[labels == 1, 2] -= 100  # difference images are background-subtracted
    images[labels == 0, 2] -= 100
    return images, labels


def quick(**overrides):
    return TrainConfig(**{"epochs": 6, "batch_size": 16, "learning_rate": 3e-3, "seed": 0, **overrides})


def test_training_lowers_the_loss_on_separable_data():
    images, labels = separable()
    result = train_classifier(images, labels, model_config=SMALL, train_config=quick(patience=10))
    losses = [r.train_loss for r in result.history]
    assert losses[-1] < 0.7 * losses[0]
    assert result.best.val_auc > 0.9
    assert result.epochs_run == 6 and result.stopped_reason == "max_epochs"
    assert result.n_train + result.n_val == len(labels) and result.n_val > 0
    assert len(result.training_data_hash) == 64
    assert result.device.startswith(("cpu", "cuda"))
    assert not result.model.training
    summary = result.summary()
    assert summary["epochs_run"] == 6 and len(summary["history"]) == 6


def test_training_is_deterministic_for_a_seed():
    images, labels = separable(48)
    a = train_classifier(images, labels, model_config=SMALL, train_config=quick(epochs=2))
    b = train_classifier(images, labels, model_config=SMALL, train_config=quick(epochs=2))
    c = train_classifier(images, labels, model_config=SMALL, train_config=quick(epochs=2, seed=1))
    for key, value in a.model.state_dict().items():
        torch.testing.assert_close(value, b.model.state_dict()[key], rtol=0, atol=0)
    assert any(not torch.equal(v, c.model.state_dict()[k]) for k, v in a.model.state_dict().items())
    assert [r.train_loss for r in a.history] == [r.train_loss for r in b.history]


def test_soft_labels_weights_and_datasets_are_accepted(tmp_path):
    images, labels = separable(48)
    soft = np.where(labels == 1, 0.9, 0.15)
    weights = np.linspace(0.5, 2.0, len(labels))
    path = tmp_path / "train.npy"
    np.save(path, images)
    result = train_classifier(
        NpyTripletDataset(path),
        soft,
        sample_weights=weights,
        model_config=SMALL,
        train_config=quick(epochs=1),
    )
    assert result.epochs_run == 1
    # Warm start: the given model is copied, never modified.
    before = {k: v.clone() for k, v in result.model.state_dict().items()}
    again = train_classifier(images, soft, init_model=result.model, train_config=quick(epochs=1))
    assert all(torch.equal(v, result.model.state_dict()[k]) for k, v in before.items())
    assert any(not torch.equal(v, again.model.state_dict()[k]) for k, v in before.items())


def test_bad_labels_are_rejected_with_clear_errors():
    images, labels = separable(16)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train_classifier(images, labels * 2, model_config=SMALL, train_config=quick(epochs=1))
    bad = labels.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train_classifier(images, bad, model_config=SMALL, train_config=quick(epochs=1))
    with pytest.raises(ValueError, match="16 triplets but 15 labels"):
        train_classifier(images, labels[:-1], model_config=SMALL, train_config=quick(epochs=1))
    with pytest.raises(ValueError, match="sample weights"):
        train_classifier(
            images, labels, sample_weights=-np.ones(16), model_config=SMALL, train_config=quick()
        )
    with pytest.raises(ValueError, match="early_stopping"):
        TrainConfig(early_stopping="accuracy")


def test_nan_loss_raises_training_error():
    images, labels = separable(16)
    broken = VGG6(SMALL)
    with torch.no_grad():
        broken.out.weight.fill_(float("nan"))
    with pytest.raises(TrainingError, match="loss became nan"):
        train_classifier(images, labels, init_model=broken, train_config=quick(epochs=1))


def test_nan_pixels_in_inputs_are_handled_by_preprocessing():
    images, labels = separable(32)
    images[::3, 2, 20:40, 20:40] = np.nan
    result = train_classifier(images, labels, model_config=SMALL, train_config=quick(epochs=1))
    assert np.isfinite(result.history[0].train_loss)


def test_early_stopping_time_budget_and_progress():
    images, labels = separable(48)
    # A learning rate of 0 cannot improve the validation loss: patience 1 stops after epoch 2.
    stalled = train_classifier(
        images, labels, model_config=SMALL, train_config=quick(epochs=10, learning_rate=0.0, patience=1)
    )
    assert stalled.stopped_reason == "early_stopping" and stalled.epochs_run == 2 and stalled.best_epoch == 1

    calls = []
    timed = train_classifier(
        images,
        labels,
        model_config=SMALL,
        train_config=quick(epochs=50, time_budget_s=0.01),
        progress=lambda fraction, message: calls.append((fraction, message)),
    )
    assert timed.stopped_reason == "time_budget" and timed.epochs_run == 1
    fractions = [f for f, _ in calls]
    assert all(0.0 <= f <= 1.0 for f in fractions) and fractions[-1] == 1.0
    assert all(isinstance(m, str) and m for _, m in calls)


def test_validation_split_is_stratified_and_seeded():
    targets = np.r_[np.zeros(80), np.ones(20)]
    train_a, val_a = validation_split(targets, 0.25, seed=3)
    train_b, val_b = validation_split(targets, 0.25, seed=3)
    np.testing.assert_array_equal(val_a, val_b)
    assert len(np.intersect1d(train_a, val_a)) == 0 and len(train_a) + len(val_a) == 100
    assert (targets[val_a] == 1).sum() == 5 and (targets[val_a] == 0).sum() == 20


def test_random_forest_baseline_trains_and_scores_through_the_common_interface():
    images, labels = separable(80)
    features = triplet_features(images)
    assert features.shape == (80, len(FEATURE_NAMES)) and np.all(np.isfinite(features))
    forest = RandomForestBaseline(n_estimators=30, seed=0)
    assert isinstance(forest, RealBogusClassifier)
    assert isinstance(CnnClassifier(), RealBogusClassifier)
    forest.fit(images[:60], np.where(labels[:60] == 1, 0.85, 0.1))  # soft labels
    p_real = forest.predict_proba(images[60:])
    assert p_real.shape == (20,) and np.all((p_real >= 0) & (p_real <= 1))
    assert roc_auc(labels[60:], p_real) > 0.9
    assert set(forest.feature_importances()) == set(FEATURE_NAMES)
    with pytest.raises(ValueError, match="both real and bogus"):
        RandomForestBaseline(n_estimators=5).fit(images[:10], np.zeros(10))


def test_cnn_classifier_wrapper_fits_and_predicts():
    images, labels = separable(48)
    clf = CnnClassifier(model_config=SMALL, train_config=quick(epochs=3)).fit(images, labels)
    p_real = clf.predict_proba(images)
    assert p_real.shape == (48,) and np.all((p_real >= 0) & (p_real <= 1))
