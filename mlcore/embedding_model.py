"""The similarity embedding's network and its input preparation. No I/O here: see mlcore.checkpoint;
training is in mlcore.embedding_train.

* ``prepare_image`` / ``prepare_images`` — grey (colour images are averaged over channels), NaN →
  sky, robust normalisation (median sky → 0, 99.5th percentile → 1), asinh stretch (faint outskirts
  matter for "similar"), resized to ``input_size`` (64 px). ``PREPROCESSING_VERSION`` names this
  recipe; it is stored in every embedding checkpoint and checked on load.
* ``EmbeddingConfig`` / ``EmbeddingNet`` — a small CNN encoder with a SimCLR projection head.
* ``embed`` — prepared images → L2-normalised vectors (the dot product is the cosine similarity),
  averaged over the 8 right-angle orientations.

docs/similarity.md has the reasoning and the settings.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "PREPROCESSING_VERSION",
    "EmbeddingConfig",
    "EmbeddingNet",
    "prepare_image",
    "prepare_images",
    "embed",
]

PREPROCESSING_VERSION = "sim-asinh64-v1"
ASINH_SOFTENING = 8.0


# --------------------------------------------------------------------------------------------
# preprocessing


def _to_grey(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image, dtype=np.float32)
    if a.ndim == 3 and a.shape[2] in (3, 4):
        a = a[:, :, :3].mean(axis=2)
    elif a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"an image must have shape (H, W) or (H, W, 3), got {np.shape(image)}")
    if min(a.shape) < 4:
        raise ValueError(f"image is too small ({a.shape[0]}×{a.shape[1]} px)")
    return a


def _square(a: np.ndarray) -> np.ndarray:
    """Centre-crop the long side so objects keep their shape."""
    h, w = a.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return a[top : top + side, left : left + side]


def prepare_image(image: np.ndarray, size: int = 64) -> np.ndarray:
    """(H, W) or (H, W, 3) → (size, size) float32, sky ≈ 0, bright parts ≈ 1 after an asinh stretch."""
    a = _square(_to_grey(image))
    finite = np.isfinite(a)
    if not finite.any():
        return np.zeros((size, size), dtype=np.float32)
    values = a[finite]
    sky = float(np.median(values))
    scale = float(np.percentile(values, 99.5)) - sky
    if not math.isfinite(scale) or scale <= 0:
        scale = float(values.std()) or 1.0
    x = np.where(finite, (a - sky) / scale, 0.0).astype(np.float32)
    x = np.arcsinh(ASINH_SOFTENING * x) / np.arcsinh(ASINH_SOFTENING)
    if x.shape != (size, size):
        t = torch.from_numpy(np.ascontiguousarray(x))[None, None]
        mode = "area" if x.shape[0] > size else "bilinear"
        kwargs = {} if mode == "area" else {"align_corners": False}
        x = F.interpolate(t, size=(size, size), mode=mode, **kwargs)[0, 0].numpy()
    return np.clip(x, -2.0, 3.0).astype(np.float32)


def prepare_images(images: Iterable[np.ndarray], size: int = 64) -> np.ndarray:
    """Many images (any sizes) → (N, 1, size, size) float32."""
    prepared = [prepare_image(image, size) for image in images]
    if not prepared:
        return np.zeros((0, 1, size, size), dtype=np.float32)
    return np.stack(prepared)[:, None]


# --------------------------------------------------------------------------------------------
# model


@dataclass(frozen=True)
class EmbeddingConfig:
    """Architecture; saved inside every checkpoint and used to rebuild the network."""

    architecture: str = "skyvote-simcnn"
    input_size: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 128)
    embedding_dim: int = 128
    projection_dim: int = 64

    def __post_init__(self):
        if self.architecture != "skyvote-simcnn":
            raise ValueError(f"unknown architecture {self.architecture!r}")
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if not self.channels or min(self.channels) < 1:
            raise ValueError("channels must be positive integers")
        if self.input_size < 2 ** len(self.channels):
            raise ValueError(f"input_size {self.input_size} is too small for {len(self.channels)} blocks")
        if self.embedding_dim < 2 or self.projection_dim < 2:
            raise ValueError("embedding_dim and projection_dim must be at least 2")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> EmbeddingConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown embedding config keys {unknown}")
        return cls(**data)


class EmbeddingNet(nn.Module):
    """Conv(3×3)–BN–ReLU–MaxPool blocks, global average pooling, a linear embedding layer.

    Average pooling over positions makes the embedding nearly invariant to where the object sits
    and (with rotation augmentations) to its orientation. The projection head is used only by the
    SimCLR loss (as in Chen et al. 2020); searches and triplets use the embedding before it.
    """

    def __init__(self, config: EmbeddingConfig | None = None):
        super().__init__()
        self.config = config or EmbeddingConfig()
        layers: list[nn.Module] = []
        in_channels = 1
        for channels in self.config.channels:
            layers += [
                nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            in_channels = channels
        self.features = nn.Sequential(*layers)
        self.embedding = nn.Linear(in_channels, self.config.embedding_dim)
        self.projector = nn.Sequential(
            nn.Linear(self.config.embedding_dim, self.config.embedding_dim),
            nn.ReLU(inplace=True),
            nn.Linear(self.config.embedding_dim, self.config.projection_dim),
        )

    def raw_embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.features(x).mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, S, S) → (N, embedding_dim), unit length."""
        return F.normalize(self.raw_embedding(x), dim=1)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector(self.raw_embedding(x)), dim=1)


# --------------------------------------------------------------------------------------------
# inference


def _dihedral_views(x: torch.Tensor):
    """The 8 rotations/reflections of a batch by multiples of 90° (exact: no interpolation)."""
    for flipped in (x, torch.flip(x, dims=(3,))):
        for k in range(4):
            yield torch.rot90(flipped, k, dims=(2, 3))


@torch.inference_mode()
def embed(
    model: EmbeddingNet, images: np.ndarray, batch_size: int = 512, device=None, symmetrize: bool = True
) -> np.ndarray:
    """(N, 1, S, S) prepared images → (N, D) float32 unit vectors.

    symmetrize: average the embedding over the 8 right-angle rotations and flips, then
    re-normalise. The sky has no preferred orientation, so an object and its rotated or mirrored
    copy get exactly the same vector; search and agreement metrics use this form.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    out = np.zeros((len(images), model.config.embedding_dim), dtype=np.float32)
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size], dtype=np.float32)).to(
            device
        )
        if symmetrize:
            z = F.normalize(sum(model(view) for view in _dihedral_views(x)), dim=1)
        else:
            z = model(x)
        out[start : start + len(x)] = z.float().cpu().numpy()
    return out
