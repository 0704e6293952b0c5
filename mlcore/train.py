"""Training the VGG6 real/bogus classifier on soft labels.

``train_classifier(images_or_dataset, targets, sample_weights=...)`` is what the learning loop calls:

* targets are P(real) in [0, 1] from vote aggregation (hard 0/1 labels are a special case);
* sample weights express label confidence (e.g. number of votes, agreement);
* loss: binary cross-entropy with logits on the soft targets, per-class weights (balanced by
  default, from the soft label mass), weighted by sample weights;
* a stratified validation split drawn with a fixed seed; early stopping on validation loss or
  AUC with the best weights restored; an optional time budget in seconds;
* progress(fraction, message) callbacks (tqdm on the CLI, the job progress bar on the web);
* deterministic on CPU for a fixed seed: seeded RNGs forked from the global ones (the caller's
  random state is left alone), deterministic algorithms, data read in the main process;
* a NaN/inf loss raises TrainingError instead of silently producing a broken model;
* with a type head (ModelConfig.type_classes) and ``type_targets`` (a type index per item, -1 for
  none), a cross-entropy on the typed items only is added to the BCE, times
  TrainConfig.type_loss_weight; untyped items still train the real/bogus output. Early stopping and
  the validation loss stay real/bogus only, so a head never changes which epoch is kept for a reason
  other than real/bogus; the validation type accuracy is recorded per epoch.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from mlcore.data import TripletArrayDataset, as_dataset, iter_batches
from mlcore.device import describe_device, pick_device
from mlcore.metrics import roc_auc
from mlcore.models import VGG6, ModelConfig, build_model
from mlcore.prep import DIHEDRAL_TRANSFORMS, preprocess_batch

__all__ = [
    "TrainConfig",
    "EpochRecord",
    "TrainingResult",
    "TrainingError",
    "train_classifier",
    "training_data_hash",
    "validation_split",
    "masked_type_loss",
]

ProgressCallback = Callable[[float, str], None]


class TrainingError(RuntimeError):
    """Training could not produce a usable model (NaN loss, unusable labels); the message says why."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.2
    seed: int = 0
    early_stopping: str = "val_loss"  # or "val_auc"; falls back to train loss without a validation set
    patience: int = 5
    min_delta: float = 1e-4
    time_budget_s: float | None = None
    class_weighting: bool = True
    augment: bool = True
    max_grad_norm: float | None = 5.0
    restore_best: bool = True  # load the weights of the best epoch at the end (early-stopping style)
    precision: str = "float32"  # or "bfloat16": autocast forward passes (faster on CPUs with AVX512-BF16)
    device: str | None = None  # None/'auto' → CUDA when available, else CPU
    type_loss_weight: float = 0.5  # weight of the type head's cross-entropy next to the real/bogus BCE
    # How much of the type loss's gradient reaches the shared layers: 0 = it trains only the head's own
    # layers, on the real/bogus network's features, and the real/bogus output trains exactly as without a head;
    # 1 = a fully shared network (better types, at a real/bogus cost with few labels); docs/benchmarks.md,
    # "Types", measures both and the default.
    type_shared_gradient: float = 0.0

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.early_stopping not in {"val_loss", "val_auc"}:
            raise ValueError(f"early_stopping must be 'val_loss' or 'val_auc', got {self.early_stopping!r}")
        if self.precision not in {"float32", "bfloat16"}:
            raise ValueError(f"precision must be 'float32' or 'bfloat16', got {self.precision!r}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ValueError(f"time_budget_s must be positive, got {self.time_budget_s}")
        if not (math.isfinite(self.type_loss_weight) and self.type_loss_weight >= 0):
            raise ValueError(f"type_loss_weight must be non-negative, got {self.type_loss_weight}")
        if not 0.0 <= self.type_shared_gradient <= 1.0:
            raise ValueError(f"type_shared_gradient must be in [0, 1], got {self.type_shared_gradient}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float | None
    val_auc: float | None
    seconds: float
    val_type_accuracy: float | None = None  # models with a type head and typed validation items only


@dataclass
class TrainingResult:
    model: VGG6
    model_config: ModelConfig
    train_config: TrainConfig
    history: list[EpochRecord]
    epochs_run: int
    best_epoch: int
    stopped_reason: str  # "max_epochs", "early_stopping" or "time_budget"
    duration_s: float
    device: str
    training_data_hash: str
    n_train: int
    n_val: int
    val_indices: np.ndarray = field(repr=False)

    @property
    def best(self) -> EpochRecord:
        return self.history[self.best_epoch - 1]

    def summary(self) -> dict:
        """Plain-data summary (for ModelVersion.metrics / checkpoint metadata)."""
        best = self.best
        return {
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "stopped_reason": self.stopped_reason,
            "duration_s": round(self.duration_s, 3),
            "device": self.device,
            "n_train": self.n_train,
            "n_val": self.n_val,
            "train_loss": best.train_loss,
            "val_loss": best.val_loss,
            "val_auc": best.val_auc,
            "val_type_accuracy": best.val_type_accuracy,
            "history": [dataclasses.asdict(r) for r in self.history],
        }


def _check_targets(targets, sample_weights, n: int) -> tuple[np.ndarray, np.ndarray]:
    targets = np.asarray(targets, dtype=np.float64).reshape(-1)
    if len(targets) != n:
        raise ValueError(f"got {n} triplets but {len(targets)} labels")
    if not np.all(np.isfinite(targets)) or targets.min(initial=0) < 0 or targets.max(initial=0) > 1:
        raise ValueError("labels must be P(real) values in [0, 1] (no NaN)")
    if sample_weights is None:
        weights = np.ones(n)
    else:
        weights = np.asarray(sample_weights, dtype=np.float64).reshape(-1)
        if len(weights) != n:
            raise ValueError(f"got {n} triplets but {len(weights)} sample weights")
        if not np.all(np.isfinite(weights)) or weights.min(initial=0) < 0:
            raise ValueError("sample weights must be finite and non-negative")
        if weights.sum() <= 0:
            raise ValueError("sample weights are all zero")
    return targets, weights


def _check_type_targets(type_targets, n: int, model_config: ModelConfig) -> np.ndarray | None:
    if type_targets is None:
        return None
    if not model_config.type_classes:
        raise ValueError("type labels need a model with a type head (ModelConfig.type_classes)")
    values = np.asarray(type_targets).reshape(-1)
    if len(values) != n:
        raise ValueError(f"got {n} triplets but {len(values)} type labels")
    if values.size and (not np.issubdtype(values.dtype, np.integer)):
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
            raise ValueError("type labels must be integer class indices (-1 for none)")
    values = values.astype(np.int64)
    k = len(model_config.type_classes)
    if values.size and (values.min() < -1 or values.max() >= k):
        raise ValueError(f"type labels must be in -1..{k - 1} (-1 for none)")
    return values


def masked_type_loss(type_logits: torch.Tensor, type_targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the items with a type (index ≥ 0); items marked -1 add nothing, and a
    batch without any typed item gives 0 (not NaN)."""
    typed = type_targets >= 0
    if not bool(typed.any()):
        return type_logits.sum() * 0.0  # keeps the graph (and the device) without a contribution
    return F.cross_entropy(type_logits[typed], type_targets[typed])


def validation_split(targets: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (by targets ≥ 0.5) split with a fixed seed → (train_indices, val_indices), both sorted.

    A class with fewer than 5 examples stays entirely in training: it cannot be split meaningfully.
    """
    rng = np.random.default_rng(seed)
    hard = np.asarray(targets) >= 0.5
    val = []
    for cls in (False, True):
        members = np.flatnonzero(hard == cls)
        n_val = int(round(val_fraction * len(members)))
        if len(members) >= 5 and n_val >= 1:
            val.append(rng.permutation(members)[:n_val])
    val_idx = np.sort(np.concatenate(val)) if val else np.empty(0, dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(len(targets)), val_idx)
    return train_idx, val_idx


def training_data_hash(dataset, targets: np.ndarray, weights: np.ndarray, batch_size: int = 1024) -> str:
    """SHA-256 over the preprocessed triplets, labels and weights (identifies what a model was trained on)."""
    digest = hashlib.sha256()
    digest.update(f"n={len(dataset)}|".encode())
    for _, batch in iter_batches(dataset, batch_size):
        digest.update(np.ascontiguousarray(batch, dtype=np.float32).tobytes())
    digest.update(np.asarray(targets, dtype=np.float64).tobytes())
    digest.update(np.asarray(weights, dtype=np.float64).tobytes())
    return digest.hexdigest()


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random exact square symmetry per triplet (see mlcore.prep for why no arbitrary rotations)."""
    choice = torch.randint(len(DIHEDRAL_TRANSFORMS), (x.shape[0],), generator=generator)
    out = torch.empty_like(x)
    for t, (k, flip) in enumerate(DIHEDRAL_TRANSFORMS):
        members = torch.nonzero(choice == t).squeeze(1).to(x.device)
        if len(members):
            part = x.index_select(0, members)
            if flip:
                part = torch.flip(part, dims=(-1,))
            out[members] = torch.rot90(part, k, dims=(-2, -1))
    return out


def _weighted_bce(logits, targets, weights, w_real: float, w_bogus: float) -> torch.Tensor:
    per_sample = -(w_real * targets * F.logsigmoid(logits) + w_bogus * (1 - targets) * F.logsigmoid(-logits))
    return (per_sample * weights).sum() / weights.sum().clamp_min(1e-12)


def _evaluate(
    model, dataset, indices, targets, weights, w_real, w_bogus, batch_size, device, type_targets=None
):
    """Validation loss (same weighting as training), AUC on hard labels (NaN with one class only) and
    type accuracy on the typed items (None without a head or typed items)."""
    model.eval()
    logits, type_hits = [], []
    with torch.inference_mode():
        for chunk, batch in iter_batches(dataset, max(batch_size, 256), indices):
            x = torch.from_numpy(batch).to(device).contiguous(memory_format=torch.channels_last)
            z, type_z = model.forward_with_types(x)
            logits.append(z.float().cpu())
            if type_targets is not None and type_z is not None:
                t = torch.as_tensor(type_targets[chunk])
                typed = t >= 0
                type_hits.append((type_z.float().cpu().argmax(1)[typed] == t[typed]).numpy())
    z = torch.cat(logits)
    t = torch.as_tensor(targets[indices], dtype=torch.float32)
    w = torch.as_tensor(weights[indices], dtype=torch.float32)
    loss = float(_weighted_bce(z, t, w, w_real, w_bogus))
    hard = targets[indices] >= 0.5
    auc = roc_auc(hard, torch.sigmoid(z).numpy()) if 0 < hard.sum() < len(hard) else float("nan")
    hits = np.concatenate(type_hits) if type_hits else np.empty(0)
    return loss, auc, (float(hits.mean()) if len(hits) else None)


def train_classifier(
    images,
    targets,
    *,
    sample_weights=None,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    init_model: VGG6 | None = None,
    progress: ProgressCallback | None = None,
    data_hash: str | None = None,
    type_targets=None,
) -> TrainingResult:
    """Train a VGG6 on triplets (array (N, 3, H, W) or a mlcore.data Dataset) and soft labels.

    init_model warm-starts from existing weights (it is copied, never modified). data_hash skips
    hashing the data when the caller already knows what identifies it (e.g. subject ids + labels).
    type_targets: per item, the index of its type in the model's type_classes, -1 for none (needs a
    model with a type head; without them a head is left as it is, untrained).
    """
    config = train_config or TrainConfig()
    started = time.perf_counter()
    if isinstance(images, np.ndarray | np.memmap):
        # The labelled set is small: prepare it once instead of every epoch.
        dataset = TripletArrayDataset(preprocess_batch(images), preprocessed=True)
    else:
        dataset = as_dataset(images)
    n = len(dataset)
    if n == 0:
        raise ValueError("no training data")
    targets, weights = _check_targets(targets, sample_weights, n)
    if init_model is not None:
        if model_config is not None and model_config != init_model.config:
            raise ValueError("model_config differs from init_model.config")
        model_config = init_model.config
    model_config = model_config or ModelConfig()
    type_targets = _check_type_targets(type_targets, n, model_config)
    device = pick_device(config.device)
    hash_hex = data_hash if data_hash is not None else training_data_hash(dataset, targets, weights)
    if data_hash is None and type_targets is not None:
        hash_hex = hashlib.sha256(f"{hash_hex}|types|".encode() + type_targets.tobytes()).hexdigest()

    train_idx, val_idx = validation_split(targets, config.val_fraction, config.seed)
    if len(train_idx) == 0:
        raise ValueError("no training examples left after the validation split")
    weights = weights / weights[train_idx].mean()  # mean weight 1 keeps the learning rate meaningful
    if config.class_weighting:
        real_mass = float((weights[train_idx] * targets[train_idx]).sum())
        bogus_mass = float((weights[train_idx] * (1 - targets[train_idx])).sum())
        total = real_mass + bogus_mass
        w_real = total / (2 * real_mass) if real_mass > 0 else 1.0
        w_bogus = total / (2 * bogus_mass) if bogus_mass > 0 else 1.0
    else:
        w_real = w_bogus = 1.0
    targets_t = torch.as_tensor(targets, dtype=torch.float32)
    weights_t = torch.as_tensor(weights, dtype=torch.float32)

    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(config.seed)
            if init_model is not None:
                model = copy.deepcopy(init_model).to(device)
            else:
                model = build_model(model_config).to(device)
            # oneDNN/cuDNN convolutions (and their backward) are much faster in channels-last layout.
            model = model.to(memory_format=torch.channels_last)
            result = _fit(
                model,
                dataset,
                targets,
                targets_t,
                weights,
                weights_t,
                train_idx,
                val_idx,
                w_real,
                w_bogus,
                config,
                device,
                progress,
                started,
                type_targets,
            )
    finally:
        torch.use_deterministic_algorithms(previous_deterministic, warn_only=previous_warn_only)
    history, best_epoch, stopped_reason = result
    model = model.to(memory_format=torch.contiguous_format).eval()
    return TrainingResult(
        model=model,
        model_config=model_config,
        train_config=config,
        history=history,
        epochs_run=len(history),
        best_epoch=best_epoch,
        stopped_reason=stopped_reason,
        duration_s=time.perf_counter() - started,
        device=describe_device(device),
        training_data_hash=hash_hex,
        n_train=len(train_idx),
        n_val=len(val_idx),
        val_indices=val_idx,
    )


def _fit(model, dataset, targets, targets_t, weights, weights_t, train_idx, val_idx, w_real, w_bogus,
         config: TrainConfig, device, progress, started, type_targets=None):  # fmt: skip
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    shuffle_rng = np.random.default_rng(config.seed)
    augment_gen = torch.Generator().manual_seed(config.seed + 1)
    has_val = len(val_idx) > 0
    n_batches = math.ceil(len(train_idx) / config.batch_size)
    history: list[EpochRecord] = []
    best_score, best_epoch, best_state, stale = None, 0, None, 0
    stopped_reason = "max_epochs"
    budget = config.time_budget_s
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bfloat16")
    with_types = type_targets is not None and model.type_out is not None and config.type_loss_weight > 0
    # Every layer of the type head is named type_* (mlcore.models).
    shared = [p for name, p in model.named_parameters() if not name.startswith("type_")]
    head_only = [p for name, p in model.named_parameters() if name.startswith("type_")]
    param_groups = [shared, head_only] if head_only else [shared]
    types_t = torch.as_tensor(type_targets, dtype=torch.int64) if with_types else None

    def report(fraction: float, message: str):
        if progress is not None:
            if budget:
                fraction = max(fraction, (time.perf_counter() - started) / budget)
            progress(min(1.0, fraction), message)

    report(0.0, f"training on {len(train_idx)} triplets, validating on {len(val_idx)}")
    for epoch in range(1, config.epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        order = shuffle_rng.permutation(train_idx)
        loss_sum, weight_sum, out_of_time = 0.0, 0.0, False
        for b, (chunk, batch) in enumerate(iter_batches(dataset, config.batch_size, order), start=1):
            x = torch.from_numpy(batch).to(device).contiguous(memory_format=torch.channels_last)
            if config.augment:
                x = _augment(x, augment_gen)
            t = targets_t[chunk].to(device)
            w = weights_t[chunk].to(device)
            with autocast:
                logits, type_logits = model.forward_with_types(x, config.type_shared_gradient)
            loss = _weighted_bce(logits.float(), t, w, w_real, w_bogus)
            if with_types:
                type_loss = masked_type_loss(type_logits.float(), types_t[chunk].to(device))
                loss = loss + config.type_loss_weight * type_loss
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise TrainingError(
                    f"training loss became {loss_value} at epoch {epoch}, batch {b}; "
                    "lower the learning rate or check the inputs"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.max_grad_norm:
                # The head's own layers are clipped apart, so their gradients never rescale the real/bogus ones.
                for group in param_groups:
                    torch.nn.utils.clip_grad_norm_(group, config.max_grad_norm)
            optimizer.step()
            batch_weight = float(w.sum())
            loss_sum += loss_value * batch_weight
            weight_sum += batch_weight
            if budget and time.perf_counter() - started > budget:
                out_of_time = True
                break
            if b % 20 == 0:
                report((epoch - 1 + b / n_batches) / config.epochs, f"epoch {epoch}/{config.epochs}")
        train_loss = loss_sum / max(weight_sum, 1e-12)
        val_loss = val_auc = val_type_accuracy = None
        if has_val:
            val_loss, val_auc, val_type_accuracy = _evaluate(
                model, dataset, val_idx, targets, weights, w_real, w_bogus, config.batch_size, device,
                type_targets if with_types else None,
            )  # fmt: skip
            if not math.isfinite(val_loss):
                raise TrainingError(f"validation loss became {val_loss} at epoch {epoch}")
        history.append(
            EpochRecord(
                epoch, train_loss, val_loss, val_auc, time.perf_counter() - epoch_started, val_type_accuracy
            )
        )

        if config.early_stopping == "val_auc" and has_val and val_auc is not None and not math.isnan(val_auc):
            score = -val_auc
        else:
            score = val_loss if has_val else train_loss
        if best_score is None or score < best_score - config.min_delta:
            best_score, best_epoch, stale = score, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        message = f"epoch {epoch}/{config.epochs}: loss {train_loss:.4f}"
        if has_val:
            message += f", val loss {val_loss:.4f}, val AUC {val_auc:.4f}"
        report(epoch / config.epochs, message)
        if out_of_time:
            stopped_reason = "time_budget"
            break
        if stale >= config.patience:
            stopped_reason = "early_stopping"
            break
    if config.restore_best and best_state is not None:
        model.load_state_dict(best_state)
    elif not config.restore_best:
        best_epoch = len(history)
    report(1.0, f"done: {stopped_reason}, best epoch {best_epoch}")
    return history, best_epoch, stopped_reason
