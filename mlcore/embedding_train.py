"""Learning the similarity embedding: SimCLR pretraining, triplet fine-tuning from volunteers'
answers, and evaluation on held-out answers. No Django, no database, no I/O (checkpoints:
mlcore.checkpoint; the network and its input preparation: mlcore.embedding_model).

Pipeline (docs/similarity.md has the reasoning and the settings):

1. ``prepare_images`` (mlcore.embedding_model) — every cutout to a normalised (1, 64, 64) array.
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
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from mlcore.device import describe_device, pick_device
from mlcore.embedding_model import EmbeddingConfig, EmbeddingNet, embed

__all__ = [
    "TrainSettings",
    "Answer",
    "TripletSet",
    "EmbeddingResult",
    "augment",
    "nt_xent_loss",
    "extract_triplets",
    "pretrain_simclr",
    "finetune_triplets",
    "pairwise_agreement",
    "recall_at_k",
    "agreement_counts",
    "bootstrap_agreement",
    "paired_bootstrap_difference",
    "evaluate",
    "train_embedding",
]

ProgressFn = Callable[[float, str], None]


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


def agreement_counts(
    embeddings: np.ndarray, row_of: dict[int, int], answers: Sequence[Answer]
) -> tuple[np.ndarray, np.ndarray]:
    """Per answer: (agreeing pairs, pairs) as in `pairwise_agreement`, in the order of `answers`.

    An answer the embedding cannot score (none similar, all chosen, or a subject missing from the
    index) has 0 pairs; sum(agree) / sum(pairs) is `pairwise_agreement`. Scoring answer by answer
    lets intervals resample answers (the pairs of one answer are not independent) and pair two
    embeddings on the same answers."""
    agree = np.zeros(len(answers))
    pairs = np.zeros(len(answers))
    for i, answer in enumerate(answers):
        if answer.none_similar:
            continue
        sims = _similarities(embeddings, row_of, answer)
        if sims is None:
            continue
        chosen_mask = np.array([c in answer.chosen for c in answer.candidates])
        if chosen_mask.all():
            continue
        diff = sims[chosen_mask][:, None] - sims[~chosen_mask][None, :]
        agree[i] = float((diff > 0).sum() + 0.5 * (diff == 0).sum())
        pairs[i] = diff.size
    return agree, pairs


def _bootstrap_weights(n: int, n_boot: int, seed: int):
    """Resampling weights (how often each of n answers is drawn), in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, 2_000_000 // max(1, n)))
    done = 0
    while done < n_boot:
        size = min(chunk, n_boot - done)
        yield rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64)
        done += size


def _by_group(used: np.ndarray, groups, *columns: np.ndarray) -> list[np.ndarray]:
    """The used rows of each column, summed per group (all rows their own group without `groups`)."""
    if groups is None:
        return [c[used] for c in columns]
    _, inverse = np.unique(np.asarray(groups)[used], return_inverse=True)
    return [np.bincount(inverse, weights=c[used]) for c in columns]


def bootstrap_agreement(
    agree: np.ndarray,
    pairs: np.ndarray,
    *,
    groups=None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Pairwise agreement with a percentile-bootstrap interval (seeded, reproducible).

    Resamples answers, or with `groups` (one key per answer, e.g. its task) whole groups: several
    volunteers' answers to the same task are not independent evidence. Returns {"agreement", "low",
    "high", "n_answers", "n_groups", "n_pairs"}; agreement and bounds are None when no answer has a
    pair. Only answers with pairs count and are resampled."""
    agree, pairs = np.asarray(agree, float), np.asarray(pairs, float)
    used = pairs > 0
    n = int(used.sum())
    agree, pairs = _by_group(used, groups, agree, pairs)
    out = {
        "agreement": None,
        "low": None,
        "high": None,
        "n_answers": n,
        "n_groups": len(pairs),
        "n_pairs": int(pairs.sum()),
    }
    if n == 0:
        return out
    stats = np.concatenate([(w @ agree) / (w @ pairs) for w in _bootstrap_weights(len(pairs), n_boot, seed)])
    tail = (1 - level) / 2
    out.update(
        agreement=float(agree.sum() / pairs.sum()),
        low=float(np.quantile(stats, tail)),
        high=float(np.quantile(stats, 1 - tail)),
    )
    return out


def paired_bootstrap_difference(
    agree_a: np.ndarray,
    pairs_a: np.ndarray,
    agree_b: np.ndarray,
    pairs_b: np.ndarray,
    *,
    groups=None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Agreement of a minus agreement of b on the same answers, with a paired bootstrap interval: each
    resample draws answers once and scores both embeddings on them, so what the two share (easy and
    hard answers) cancels out. Answers either embedding cannot score are left out of both; `groups`
    as in `bootstrap_agreement`.

    Returns {"difference", "low", "high", "n_answers"} (None values when no answer is shared)."""
    agree_a, pairs_a = np.asarray(agree_a, float), np.asarray(pairs_a, float)
    agree_b, pairs_b = np.asarray(agree_b, float), np.asarray(pairs_b, float)
    used = (pairs_a > 0) & (pairs_b > 0)
    n = int(used.sum())
    out = {"difference": None, "low": None, "high": None, "n_answers": n}
    if n == 0:
        return out
    agree_a, pairs_a, agree_b, pairs_b = _by_group(used, groups, agree_a, pairs_a, agree_b, pairs_b)
    stats = np.concatenate(
        [
            (w @ agree_a) / (w @ pairs_a) - (w @ agree_b) / (w @ pairs_b)
            for w in _bootstrap_weights(len(pairs_a), n_boot, seed)
        ]
    )
    tail = (1 - level) / 2
    out.update(
        difference=float(agree_a.sum() / pairs_a.sum() - agree_b.sum() / pairs_b.sum()),
        low=float(np.quantile(stats, tail)),
        high=float(np.quantile(stats, 1 - tail)),
    )
    return out


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
            # Checked per batch, not per epoch: on a busy 2-core laptop one epoch can take longer
            # than a short budget (the demo's quick first round) on its own.
            if clock.expired:
                break
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
