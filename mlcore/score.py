"""Scoring triplets with a trained classifier: P(real), uncertainty and penultimate features.

``score(model, images_or_dataset, batch_size=256, mc_samples=0)`` returns a ScoreResult with

* ``p_real`` — the deterministic (dropout-off) prediction, used for thresholds and display,
  calibrated by the model's temperature and bias (mlcore.calibration; ``logits`` keeps the raw ones);
* ``entropy`` — predictive entropy in bits (of the MC-averaged probability when mc_samples > 0,
  else of p_real); 1 bit = maximally unsure;
* ``bald`` — BALD mutual information in bits, H[mean_t p_t] − mean_t H[p_t], when mc_samples > 0;
* ``features`` — penultimate (256-d) activations for batch-diversity selection (optional);
* ``mc_probs`` — the (T, N) Monte-Carlo probabilities, only when keep_mc=True;
* ``type_probs`` — (N, K) softmax of the type head over ``type_classes`` (models with one only).

CPU speed (see bench/scoring.py and docs/benchmarks.md): inference_mode, a channels-last copy of
the network (oneDNN's fast convolution layout) and small compute chunks that stay in cache. MC
dropout samples only the dense head (mlcore.models.VGG6.mc_logits), so BALD with T=20 costs little
more than one pass. precision='bfloat16' runs the network under bf16 autocast (faster on CPUs with
AVX512-BF16/AMX; differences in p_real are measured by bench/scoring.py).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from mlcore.calibration import model_bias, model_temperature
from mlcore.data import as_dataset, iter_batches
from mlcore.device import pick_device
from mlcore.models import VGG6

__all__ = ["ScoreResult", "score", "binary_entropy", "bald_from_probs", "prepare_for_inference"]

# Chunk that keeps one VGG6 forward's activations in L2 cache on CPU; measured best in bench/scoring.py.
CPU_COMPUTE_CHUNK = 64
_EPS = 1e-12


@dataclass
class ScoreResult:
    p_real: np.ndarray
    entropy: np.ndarray
    bald: np.ndarray | None = None
    features: np.ndarray | None = None
    mc_probs: np.ndarray | None = None
    p_real_mc: np.ndarray | None = None
    logits: np.ndarray | None = None  # raw logits, before the calibration temperature
    temperature: float = 1.0
    bias: float = 0.0
    type_probs: np.ndarray | None = None
    type_classes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.p_real)


def binary_entropy(p) -> np.ndarray:
    """Entropy in bits of Bernoulli(p), elementwise (0 at p ∈ {0, 1}, 1 at p = 0.5)."""
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def bald_from_probs(mc_probs) -> np.ndarray:
    """BALD mutual information in bits from MC-dropout probabilities of shape (T, N)."""
    mc_probs = np.asarray(mc_probs, dtype=np.float64)
    if mc_probs.ndim != 2:
        raise ValueError(f"expected MC probabilities of shape (T, N), got {mc_probs.shape}")
    return np.maximum(binary_entropy(mc_probs.mean(axis=0)) - binary_entropy(mc_probs).mean(axis=0), 0.0)


def prepare_for_inference(model: VGG6, device: torch.device) -> VGG6:
    """A copy of the model in eval mode on device, in channels-last memory format (the caller's model is untouched)."""
    fast = copy.deepcopy(model).to(device).eval()
    return fast.to(memory_format=torch.channels_last)


def score(
    model: VGG6,
    images,
    batch_size: int = 256,
    mc_samples: int = 0,
    *,
    device: str | torch.device | None = None,
    seed: int = 0,
    features: bool = True,
    keep_mc: bool = False,
    precision: str = "float32",
    progress: Callable[[float, str], None] | None = None,
    temperature: float | None = None,
    bias: float | None = None,
) -> ScoreResult:
    """Score triplets (raw array (N, 3, H, W) — prepared batch by batch — or a mlcore.data Dataset)."""
    if mc_samples < 0:
        raise ValueError(f"mc_samples must be ≥ 0, got {mc_samples}")
    if precision not in {"float32", "bfloat16"}:
        raise ValueError(f"precision must be 'float32' or 'bfloat16', got {precision!r}")
    # Calibrated P(real) = sigmoid(logit / T + b): T and b from the checkpoint (mlcore.calibration)
    # unless given; temperature=1.0 alone gives the uncalibrated scores.
    if temperature is not None and bias is None:
        bias = 0.0
    temperature = model_temperature(model) if temperature is None else float(temperature)
    bias = model_bias(model) if bias is None else float(bias)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    dataset = as_dataset(images)
    n = len(dataset)
    device = pick_device(device) if device is not None else next(model.parameters()).device
    fast = prepare_for_inference(model, device)
    chunk = CPU_COMPUTE_CHUNK if device.type == "cpu" else batch_size
    generator = torch.Generator(device=device).manual_seed(seed) if mc_samples else None
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")

    p_real = np.empty(n, dtype=np.float32)
    logits = np.empty(n, dtype=np.float32)
    embeddings = np.empty((n, fast.config.dense_units), dtype=np.float32) if features else None
    mc_probs = np.empty((mc_samples, n), dtype=np.float32) if mc_samples else None
    type_classes = tuple(fast.config.type_classes)
    type_probs = np.empty((n, len(type_classes)), dtype=np.float32) if type_classes else None
    done = 0
    with torch.inference_mode():
        for indices, batch in iter_batches(dataset, batch_size):
            x_all = torch.from_numpy(batch)
            for start in range(0, len(indices), chunk):
                x = x_all[start : start + chunk].to(device).contiguous(memory_format=torch.channels_last)
                rows = slice(done, done + len(x))
                with autocast:
                    h, type_z = fast.embed_and_types(x)
                h = h.float()
                z = fast.out(h).squeeze(1)
                logits[rows] = z.cpu().numpy()
                p_real[rows] = torch.sigmoid(z / temperature + bias).cpu().numpy()
                if type_probs is not None:
                    type_probs[rows] = torch.softmax(type_z.float(), dim=1).cpu().numpy()
                if embeddings is not None:
                    embeddings[rows] = h.cpu().numpy()
                if mc_probs is not None:
                    mc_z = fast.mc_logits(h, mc_samples, generator) / temperature + bias
                    mc_probs[:, rows] = torch.sigmoid(mc_z).cpu().numpy()
                done += len(x)
            if progress is not None:
                progress(done / n, f"scored {done}/{n}")
    result = ScoreResult(
        p_real=p_real,
        entropy=binary_entropy(p_real),
        features=embeddings,
        type_probs=type_probs,
        type_classes=type_classes,
        logits=logits,
        temperature=temperature,
        bias=bias,
    )
    if mc_probs is not None:
        result.p_real_mc = mc_probs.mean(axis=0)
        result.entropy = binary_entropy(result.p_real_mc)
        result.bald = bald_from_probs(mc_probs)
        if keep_mc:
            result.mc_probs = mc_probs
    return result
