"""The similarity embedding: a small CNN encoder, SimCLR pretraining, triplet fine-tuning from
volunteers' answers, and evaluation on held-out answers. No Django, no database.

Pipeline (docs/similarity.md has the reasoning and the settings):

1. ``prepare_images`` — grey (colour images are averaged over channels), NaN → sky, robust
   normalisation (median sky → 0, 99.5th percentile → 1), asinh stretch (faint outskirts matter
   for "similar"), resized to ``input_size`` (64 px).
2. ``pretrain_simclr`` — self-supervised on every cutout: two random views of each image must be
   each other's nearest neighbour in the batch (NT-Xent). Views use augmentations that do not change
   what a sky object *is*: any rotation, flips, crops/zoom and shifts, stretch (gamma and gain)
   changes, extra noise and extra blur (seeing).
3. ``extract_triplets`` + ``finetune_triplets`` — an answer with k of 15 chosen gives k×(15−k)
   triplets (comparison, chosen, not chosen): cos(comparison, chosen) must beat
   cos(comparison, not chosen) by a margin. A "no images are similar" answer gives 15 negatives
   (comparison, candidate); each is trained as a triplet whose positive is another augmented view of
   the comparison itself, i.e. "every candidate must be further away than a re-observation of the
   comparison, by the margin". A little SimCLR loss is kept while fine-tuning, so a few hundred
   answers cannot collapse the space.
4. ``pairwise_agreement`` / ``recall_at_k`` — on held-out answers: the share of (chosen, not chosen)
   pairs the model orders correctly (random = 0.5), and the share of chosen candidates found among
   the model's top k of the 15 (random = k/15).

Embeddings are L2-normalised, so the dot product is the cosine similarity.
Checkpoints are plain dicts loaded with ``torch.load(weights_only=True)`` and verified by SHA-256.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import json
import math
import pickle
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mlcore.checkpoint import save_atomically
from mlcore.device import describe_device, pick_device

__all__ = [
    "PREPROCESSING_VERSION",
    "EmbeddingConfig",
    "TrainSettings",
    "EmbeddingNet",
    "Answer",
    "TripletSet",
    "EmbeddingResult",
    "EmbeddingCheckpointError",
    "prepare_image",
    "prepare_images",
    "augment",
    "nt_xent_loss",
    "extract_triplets",
    "pretrain_simclr",
    "finetune_triplets",
    "embed",
    "pairwise_agreement",
    "recall_at_k",
    "evaluate",
    "train_embedding",
    "save_embedding_checkpoint",
    "load_embedding_checkpoint",
]

PREPROCESSING_VERSION = "sim-asinh64-v1"
ASINH_SOFTENING = 8.0
FORMAT_MARKER = "skyvote.mlcore.embedding"
FORMAT_VERSION = 1

ProgressFn = Callable[[float, str], None]


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
# augmentation and losses


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random sky-safe views of a batch (N, 1, S, S): rotation by any angle, flip, zoom/crop
    (0.8–1.05), shift (±8 %), gamma 0.75–1.3 and gain 0.8–1.2, extra blur (seeing) and noise."""
    n = x.shape[0]
    device = x.device

    def uniform(low, high):
        return torch.rand(n, generator=generator, device="cpu").to(device) * (high - low) + low

    angle = uniform(0.0, 2 * math.pi)
    flip = torch.where(uniform(0, 1) < 0.5, -1.0, 1.0)
    zoom = uniform(0.8, 1.05)
    shift_x, shift_y = uniform(-0.08, 0.08), uniform(-0.08, 0.08)
    cos, sin = torch.cos(angle) * zoom, torch.sin(angle) * zoom
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, shift_x], dim=1), torch.stack([sin * flip, cos, shift_y], dim=1)],
        dim=1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gamma = uniform(0.75, 1.3).view(n, 1, 1, 1)
    gain = uniform(0.8, 1.2).view(n, 1, 1, 1)
    out = torch.sign(out) * out.abs().clamp_min(1e-6) ** gamma * gain
    blur = uniform(0.0, 0.6).view(n, 1, 1, 1)
    out = (1 - blur) * out + blur * F.avg_pool2d(out, 3, stride=1, padding=1, count_include_pad=False)
    noise = uniform(0.0, 0.08).view(n, 1, 1, 1)
    out = out + noise * torch.randn(out.shape, generator=generator, device="cpu").to(device)
    return out


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """SimCLR's normalised temperature-scaled cross entropy for two batches of unit vectors."""
    n = z1.shape[0]
    z = torch.cat([z1, z2], dim=0)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


# --------------------------------------------------------------------------------------------
# answers → triplets


@dataclass(frozen=True)
class Answer:
    """One volunteer's answer: ids of the comparison and the candidates shown, and those chosen
    (empty = "no images are similar")."""

    comparison: int
    candidates: tuple[int, ...]
    chosen: frozenset[int]

    def __post_init__(self):
        object.__setattr__(self, "candidates", tuple(int(c) for c in self.candidates))
        object.__setattr__(self, "chosen", frozenset(int(c) for c in self.chosen))
        stray = self.chosen - set(self.candidates)
        if stray:
            raise ValueError(f"chosen ids {sorted(stray)} were not among the candidates")

    @property
    def none_similar(self) -> bool:
        return not self.chosen


@dataclass
class TripletSet:
    triplets: np.ndarray  # (M, 3) int64 subject ids: comparison, chosen, not chosen
    none_pairs: np.ndarray  # (L, 2) int64 subject ids: comparison, candidate (from "none similar")

    def __len__(self) -> int:
        return len(self.triplets) + len(self.none_pairs)


def extract_triplets(answers: Iterable[Answer]) -> TripletSet:
    """k chosen of n → k×(n−k) triplets; "none similar" → n (comparison, candidate) negatives.

    All-chosen answers give no triplet (nothing was judged dissimilar). The comparison itself,
    should it appear among its candidates, is ignored.
    """
    triplets: list[tuple[int, int, int]] = []
    none_pairs: list[tuple[int, int]] = []
    for answer in answers:
        shown = [c for c in answer.candidates if c != answer.comparison]
        if answer.none_similar:
            none_pairs.extend((answer.comparison, c) for c in shown)
            continue
        chosen = [c for c in shown if c in answer.chosen]
        rejected = [c for c in shown if c not in answer.chosen]
        triplets.extend((answer.comparison, p, n) for p in chosen for n in rejected)
    return TripletSet(
        triplets=np.asarray(triplets, dtype=np.int64).reshape(-1, 3),
        none_pairs=np.asarray(none_pairs, dtype=np.int64).reshape(-1, 2),
    )


# --------------------------------------------------------------------------------------------
# evaluation


def _similarities(embeddings: np.ndarray, row_of: dict[int, int], answer: Answer):
    if answer.comparison not in row_of:
        return None
    rows = [row_of.get(c) for c in answer.candidates]
    if any(r is None for r in rows):
        return None
    e = np.asarray(embeddings, dtype=np.float32)
    return e[rows] @ e[row_of[answer.comparison]]


def pairwise_agreement(
    embeddings: np.ndarray, row_of: dict[int, int], answers: Iterable[Answer]
) -> tuple[float, int]:
    """Share of (chosen, not chosen) pairs where the model ranks the chosen one closer to the
    comparison (ties count half). Returns (agreement, number of pairs); NaN when there are no pairs."""
    agree = 0.0
    pairs = 0
    for answer in answers:
        if answer.none_similar:
            continue
        sims = _similarities(embeddings, row_of, answer)
        if sims is None:
            continue
        chosen_mask = np.array([c in answer.chosen for c in answer.candidates])
        if chosen_mask.all():
            continue
        diff = sims[chosen_mask][:, None] - sims[~chosen_mask][None, :]
        agree += float((diff > 0).sum() + 0.5 * (diff == 0).sum())
        pairs += diff.size
    return (agree / pairs if pairs else float("nan")), pairs


def recall_at_k(
    embeddings: np.ndarray, row_of: dict[int, int], answers: Iterable[Answer], k: int = 5
) -> tuple[float, int]:
    """Mean over answers with ≥1 chosen of |chosen ∩ model's top k of the candidates| / |chosen|.
    Random ordering gives k / (number of candidates). Returns (recall, number of answers)."""
    total = 0.0
    n = 0
    for answer in answers:
        if answer.none_similar:
            continue
        sims = _similarities(embeddings, row_of, answer)
        if sims is None:
            continue
        order = np.argsort(-sims, kind="stable")[:k]
        top = {answer.candidates[i] for i in order}
        total += len(top & answer.chosen) / len(answer.chosen)
        n += 1
    return (total / n if n else float("nan")), n


def evaluate(embeddings: np.ndarray, row_of: dict[int, int], answers: Sequence[Answer], k: int = 5) -> dict:
    agreement, n_pairs = pairwise_agreement(embeddings, row_of, answers)
    recall, n_answers = recall_at_k(embeddings, row_of, answers, k)
    n_candidates = max((len(a.candidates) for a in answers), default=15)
    return {
        "pairwise_agreement": agreement,
        "n_pairs": n_pairs,
        f"recall_at_{k}": recall,
        "n_answers": n_answers,
        "agreement_baseline": 0.5,
        f"recall_at_{k}_baseline": k / n_candidates,
    }


# --------------------------------------------------------------------------------------------
# training


@dataclass
class TrainSettings:
    pretrain_epochs: int = 15
    finetune_epochs: int = 8
    batch_size: int = 128
    lr: float = 2e-3
    finetune_lr: float = 1e-3
    weight_decay: float = 1e-4
    temperature: float = 0.2
    margin: float = 0.2
    # Weight of the SimCLR loss kept during fine-tuning (keeps the space from collapsing on few answers).
    contrastive_weight: float = 0.5
    answers_per_step: int = 16
    recall_k: int = 5
    seed: int = 0
    time_budget_s: float = 900.0
    device: str = "auto"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class EmbeddingResult:
    model: EmbeddingNet
    embeddings: np.ndarray  # (N, D) float32, unit rows, same order as the input images
    history: dict
    metrics: dict
    device: str
    duration_s: float
    stopped_reason: str
    n_triplets: int = 0
    n_none_pairs: int = 0
    settings: dict = field(default_factory=dict)


class _Clock:
    def __init__(self, budget_s: float):
        self.start = time.monotonic()
        self.budget_s = budget_s

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    @property
    def expired(self) -> bool:
        return self.elapsed > self.budget_s


def _noop_progress(fraction: float, message: str) -> None:
    pass


def pretrain_simclr(
    model: EmbeddingNet,
    images: np.ndarray,
    *,
    epochs: int,
    settings: TrainSettings,
    device: torch.device,
    generator: torch.Generator,
    progress: ProgressFn = _noop_progress,
    clock: _Clock | None = None,
) -> list[float]:
    """Self-supervised SimCLR epochs over all images; returns the mean loss per epoch."""
    clock = clock or _Clock(settings.time_budget_s)
    n = len(images)
    if epochs <= 0 or n < 2:
        return []
    data = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, epochs))
    losses: list[float] = []
    batch_size = max(2, min(settings.batch_size, n))
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n, generator=generator)
        total, batches = 0.0, 0
        for start in range(0, n - 1, batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < 2:
                continue
            x = data[idx].to(device)
            loss = nt_xent_loss(
                model.project(augment(x, generator)),
                model.project(augment(x, generator)),
                settings.temperature,
            )
            if not torch.isfinite(loss):
                raise FloatingPointError("SimCLR loss became NaN/inf; lower the learning rate")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += loss.item()
            batches += 1
        scheduler.step()
        losses.append(total / max(1, batches))
        progress((epoch + 1) / epochs, f"pretraining epoch {epoch + 1}/{epochs}: loss {losses[-1]:.3f}")
        if clock.expired:
            break
    return losses


def finetune_triplets(
    model: EmbeddingNet,
    images: np.ndarray,
    row_of: dict[int, int],
    answers: Sequence[Answer],
    *,
    epochs: int,
    settings: TrainSettings,
    device: torch.device,
    generator: torch.Generator,
    progress: ProgressFn = _noop_progress,
    clock: _Clock | None = None,
    on_epoch: Callable[[int], dict] | None = None,
) -> list[dict]:
    """Triplet margin loss on cosine similarity (+ a little SimCLR), over the triplets of
    ``extract_triplets(answers)``.

    Triplets are grouped by answer: a step takes ``answers_per_step`` answers, embeds each image
    they mention once (one random view each, plus a second view of every comparison for the
    "none similar" triplets) and averages the hinge over all their triplets. That is the same loss
    as iterating over triplets, at 16 forward passes per answer instead of 3·k·(15−k).
    `on_epoch(epoch)` may return extra numbers (e.g. held-out agreement) for the history row.
    """
    clock = clock or _Clock(settings.time_budget_s)
    usable = [
        a
        for a in answers
        if a.comparison in row_of
        and all(c in row_of for c in a.candidates)
        and len(a.chosen) < len(a.candidates)
    ]
    history: list[dict] = []
    if epochs <= 0 or not usable:
        return history
    data = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=settings.finetune_lr, weight_decay=settings.weight_decay
    )
    per_step = max(1, settings.answers_per_step)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(usable), generator=generator).tolist()
        total, steps, violations, n_triplets = 0.0, 0, 0, 0
        for start in range(0, len(order), per_step):
            batch_answers = [usable[i] for i in order[start : start + per_step]]
            triplet_set = extract_triplets(batch_answers)
            comparisons = sorted({a.comparison for a in batch_answers})
            ids = sorted(
                {
                    int(i)
                    for i in np.concatenate([triplet_set.triplets.ravel(), triplet_set.none_pairs.ravel()])
                }
            )
            if not ids:
                continue
            local = {item: j for j, item in enumerate(ids)}
            x = data[torch.tensor([row_of[i] for i in ids])].to(device)
            z = model(augment(x, generator))
            # A second view of each comparison: the positive of "none similar" triplets.
            z_again = model(
                augment(data[torch.tensor([row_of[i] for i in comparisons])].to(device), generator)
            )
            again = {item: j for j, item in enumerate(comparisons)}
            parts = []
            if len(triplet_set.triplets):
                t = torch.tensor([[local[int(v)] for v in row] for row in triplet_set.triplets])
                anchor, positive, negative = z[t[:, 0]], z[t[:, 1]], z[t[:, 2]]
                parts.append(
                    F.relu(settings.margin - (anchor * positive).sum(1) + (anchor * negative).sum(1))
                )
            if len(triplet_set.none_pairs):
                pairs = triplet_set.none_pairs
                anchor = z[torch.tensor([local[int(c)] for c in pairs[:, 0]])]
                positive = z_again[torch.tensor([again[int(c)] for c in pairs[:, 0]])]
                negative = z[torch.tensor([local[int(c)] for c in pairs[:, 1]])]
                parts.append(
                    F.relu(settings.margin - (anchor * positive).sum(1) + (anchor * negative).sum(1))
                )
            hinge = torch.cat(parts)
            loss = hinge.mean()
            if settings.contrastive_weight > 0 and len(comparisons) >= 2:
                z_first = z[torch.tensor([local[c] for c in comparisons])]
                loss = loss + settings.contrastive_weight * nt_xent_loss(
                    F.normalize(model.projector(z_first), dim=1),
                    F.normalize(model.projector(z_again), dim=1),
                    settings.temperature,
                )
            if not torch.isfinite(loss):
                raise FloatingPointError("triplet loss became NaN/inf; lower the learning rate")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += loss.item()
            violations += int((hinge > 0).sum())
            n_triplets += len(hinge)
            steps += 1
        row = {
            "epoch": epoch + 1,
            "loss": total / max(1, steps),
            "violations": violations / max(1, n_triplets),
        }
        if on_epoch:
            row.update(on_epoch(epoch + 1))
        history.append(row)
        progress((epoch + 1) / epochs, f"fine-tuning epoch {epoch + 1}/{epochs}: loss {row['loss']:.3f}")
        if clock.expired:
            break
    return history


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


def _curve_epoch(epoch: int, epochs: int, points: int = 5) -> bool:
    """Held-out agreement is measured at about `points` epochs (and the last): embedding every image
    in 8 orientations each epoch would cost as much as the training itself."""
    return epoch == epochs or epoch % max(1, epochs // points) == 0


def train_embedding(
    images: np.ndarray,
    subject_ids: Sequence[int],
    train_answers: Sequence[Answer],
    heldout_answers: Sequence[Answer] = (),
    *,
    config: EmbeddingConfig | None = None,
    settings: TrainSettings | None = None,
    init_state: dict | None = None,
    progress: ProgressFn | None = None,
) -> EmbeddingResult:
    """Pretrain (SimCLR), fine-tune on triplets from `train_answers`, evaluate on `heldout_answers`.

    images: (N, 1, S, S) from ``prepare_images``, row i belonging to subject_ids[i].
    init_state: a previous version's state_dict to start from (then pretraining may be shorter).
    Progress: 0–0.6 pretraining, 0.6–0.95 fine-tuning, then embedding all images.
    """
    config = config or EmbeddingConfig(input_size=int(images.shape[-1]))
    settings = settings or TrainSettings()
    progress = progress or _noop_progress
    if images.ndim != 4 or images.shape[1] != 1 or images.shape[-1] != config.input_size:
        raise ValueError(
            f"images must be (N, 1, {config.input_size}, {config.input_size}), got {images.shape}"
        )
    if len(subject_ids) != len(images):
        raise ValueError("subject_ids and images differ in length")
    clock = _Clock(settings.time_budget_s)
    device = pick_device(settings.device)
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    model = EmbeddingNet(config)
    if init_state is not None:
        model.load_state_dict(init_state)
    model.to(device)
    row_of = {int(s): i for i, s in enumerate(subject_ids)}

    def heldout_metrics() -> dict:
        if not heldout_answers:
            return {}
        metrics = evaluate(embed(model, images, device=device), row_of, heldout_answers, settings.recall_k)
        return {
            "heldout_agreement": metrics["pairwise_agreement"],
            f"heldout_recall_at_{settings.recall_k}": metrics[f"recall_at_{settings.recall_k}"],
        }

    pretrain_losses = pretrain_simclr(
        model,
        images,
        epochs=settings.pretrain_epochs,
        settings=settings,
        device=device,
        generator=generator,
        progress=lambda f, m: progress(0.6 * f, m),
        clock=clock,
    )
    stopped = "time budget" if clock.expired else "completed"
    after_pretrain = heldout_metrics()
    triplet_set = extract_triplets(train_answers)
    finetune_history: list[dict] = []
    if not clock.expired:
        finetune_history = finetune_triplets(
            model,
            images,
            row_of,
            train_answers,
            epochs=settings.finetune_epochs,
            settings=settings,
            device=device,
            generator=generator,
            progress=lambda f, m: progress(0.6 + 0.35 * f, m),
            clock=clock,
            on_epoch=lambda epoch: heldout_metrics() if _curve_epoch(epoch, settings.finetune_epochs) else {},
        )
        if clock.expired:
            stopped = "time budget"
    progress(0.96, "embedding all images")
    embeddings = embed(model, images, device=device)
    metrics = evaluate(embeddings, row_of, heldout_answers, settings.recall_k) if heldout_answers else {}
    train_metrics = evaluate(embeddings, row_of, train_answers, settings.recall_k) if train_answers else {}
    metrics = {
        **({f"heldout_{k}": v for k, v in metrics.items()}),
        "train_pairwise_agreement": train_metrics.get("pairwise_agreement"),
        "agreement_after_pretraining": after_pretrain.get("heldout_agreement"),
        "n_train_answers": len(train_answers),
        "n_heldout_answers": len(heldout_answers),
    }
    for name, value in list(metrics.items()):
        if isinstance(value, float) and not math.isfinite(value):
            metrics[name] = None
    history = {
        "pretrain_loss": pretrain_losses,
        "finetune": [
            {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
            for row in finetune_history
        ],
        "after_pretraining": after_pretrain,
    }
    model.to("cpu").eval()
    progress(1.0, "done")
    return EmbeddingResult(
        model=model,
        embeddings=embeddings,
        history=history,
        metrics=metrics,
        device=describe_device(device),
        duration_s=clock.elapsed,
        stopped_reason=stopped,
        n_triplets=len(triplet_set.triplets),
        n_none_pairs=len(triplet_set.none_pairs),
        settings=settings.to_dict(),
    )


# --------------------------------------------------------------------------------------------
# checkpoints


class EmbeddingCheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says why."""


@dataclass
class LoadedEmbedding:
    model: EmbeddingNet
    config: EmbeddingConfig
    preprocessing_version: str
    state_sha256: str
    metadata: dict


def _state_sha256(header: dict, state: dict) -> str:
    digest = hashlib.sha256(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(state):
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor):
            raise EmbeddingCheckpointError(f"state_dict entry {name!r} is not a tensor")
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _header(payload: dict) -> dict:
    return {
        k: payload[k]
        for k in ("format", "format_version", "config", "preprocessing_version", "metadata", "created_at")
    }


def save_embedding_checkpoint(target, model: EmbeddingNet, *, metadata: dict | None = None) -> str:
    """Write config + weights (+ plain metadata) to a path (atomically) or a binary file; return the SHA-256."""
    payload = {
        "format": FORMAT_MARKER,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "preprocessing_version": PREPROCESSING_VERSION,
        "metadata": json.loads(json.dumps(metadata or {})),  # plain values only
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "state_dict": {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()},
    }
    payload["state_sha256"] = _state_sha256(_header(payload), payload["state_dict"])
    save_atomically(payload, target)
    return payload["state_sha256"]


def load_embedding_checkpoint(source) -> LoadedEmbedding:
    """Load and verify (path, bytes or binary file). Refuses foreign, edited or pickled-object files."""
    if isinstance(source, bytes | bytearray):
        source = io.BytesIO(source)
    try:
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise EmbeddingCheckpointError(
            "refused: not a readable plain-data checkpoint (not a PyTorch file, or it holds Python objects)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as exc:
        raise EmbeddingCheckpointError(f"not a readable PyTorch checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_MARKER:
        raise EmbeddingCheckpointError(
            f"not a Skyvote embedding checkpoint (format marker {FORMAT_MARKER!r} missing)"
        )
    if payload.get("format_version") != FORMAT_VERSION:
        raise EmbeddingCheckpointError(f"unsupported format_version {payload.get('format_version')!r}")
    if payload.get("preprocessing_version") != PREPROCESSING_VERSION:
        raise EmbeddingCheckpointError(
            f"preprocessing {payload.get('preprocessing_version')!r} is not {PREPROCESSING_VERSION!r}"
        )
    try:
        expected = _state_sha256(_header(payload), payload["state_dict"])
    except KeyError as exc:
        raise EmbeddingCheckpointError(f"checkpoint is missing {exc}") from None
    if expected != payload.get("state_sha256"):
        raise EmbeddingCheckpointError("SHA-256 mismatch: the checkpoint was modified after it was saved")
    try:
        config = EmbeddingConfig.from_dict(payload["config"])
        model = EmbeddingNet(config)
        model.load_state_dict(payload["state_dict"])
    except (ValueError, TypeError, RuntimeError) as exc:
        raise EmbeddingCheckpointError(f"weights do not match the architecture: {str(exc)[:200]}") from None
    model.eval()
    return LoadedEmbedding(
        model=model,
        config=config,
        preprocessing_version=payload["preprocessing_version"],
        state_sha256=payload["state_sha256"],
        metadata=payload["metadata"],
    )
