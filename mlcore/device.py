"""Device choice: CUDA when present, else CPU (no configuration needed)."""

from __future__ import annotations

import os

import torch

__all__ = ["pick_device", "describe_device", "cpu_threads"]


def pick_device(requested: str | torch.device | None = None) -> torch.device:
    """'auto' or None → cuda if available else cpu; an explicit 'cpu'/'cuda[:n]' is checked, not trusted.

    The environment variable MLCORE_DEVICE overrides 'auto' (e.g. MLCORE_DEVICE=cpu on a shared GPU box).
    """
    if isinstance(requested, torch.device):
        requested = str(requested)
    if requested in (None, "", "auto"):
        requested = os.environ.get("MLCORE_DEVICE", "auto") or "auto"
        if requested == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ValueError(f"unknown device {requested!r}; use 'auto', 'cpu' or 'cuda'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} requested but CUDA is not available on this machine")
    if device.type not in {"cpu", "cuda"}:
        raise ValueError(f"unsupported device {requested!r}; use 'auto', 'cpu' or 'cuda'")
    return device


def describe_device(device: torch.device) -> str:
    """Human-readable device name recorded with models and benchmarks (e.g. 'cuda:0 (NVIDIA H100)')."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def cpu_threads() -> int:
    """CPU cores this process may use (respects taskset/cgroup affinity where the OS exposes it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
