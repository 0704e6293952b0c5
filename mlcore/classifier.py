"""One small interface for every real/bogus classifier, so the CNN and the baseline are interchangeable.

    clf.fit(images, targets, sample_weights=None) -> clf
    clf.predict_proba(images) -> P(real), shape (N,)

images are raw triplets (N, 3, H, W) or a mlcore.data Dataset; targets are P(real) in [0, 1].
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["RealBogusClassifier", "CnnClassifier"]


@runtime_checkable
class RealBogusClassifier(Protocol):
    def fit(self, images, targets, sample_weights=None) -> RealBogusClassifier: ...

    def predict_proba(self, images) -> np.ndarray: ...


class CnnClassifier:
    """The VGG6 behind the common interface (thin wrapper over train_classifier and score)."""

    def __init__(self, model_config=None, train_config=None, batch_size: int = 256):
        self.model_config = model_config
        self.train_config = train_config
        self.batch_size = batch_size
        self.result = None

    def fit(self, images, targets, sample_weights=None) -> CnnClassifier:
        from mlcore.train import train_classifier

        self.result = train_classifier(
            images,
            targets,
            sample_weights=sample_weights,
            model_config=self.model_config,
            train_config=self.train_config,
        )
        return self

    @property
    def model(self):
        if self.result is None:
            raise RuntimeError("call fit() first")
        return self.result.model

    def predict_proba(self, images) -> np.ndarray:
        from mlcore.score import score

        return score(self.model, images, self.batch_size, features=False).p_real
