"""Torch Datasets that read triplets lazily, so a 1,000,000-subject pool never has to sit in memory.

Every dataset here returns *preprocessed* triplets (mlcore.prep): ``ds[i]`` is a float32 tensor of
shape (3, 63, 63) and ``ds.get_batch(indices)`` a NumPy array (B, 3, 63, 63) read in one go
(training and scoring use get_batch; it avoids per-item Python overhead and reads contiguous
rows of a memory map in one slice).

* ``TripletArrayDataset`` — an array already in memory (or any array-like, e.g. a np.memmap);
* ``NpyTripletDataset`` — one memory-mapped .npy file of shape (N, 3, H, W) or (N, H, W, 3);
* ``TripletFileListDataset`` — one .npy file of shape (3, H, W) per subject (e.g. media storage).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mlcore.prep import CUTOUT_SIZE, TripletShapeError, as_channels_first_batch, preprocess_batch

__all__ = [
    "TripletArrayDataset",
    "NpyTripletDataset",
    "TripletFileListDataset",
    "as_dataset",
    "iter_batches",
]


class TripletArrayDataset(Dataset):
    """Triplets held in an array-like of shape (N, 3, H, W).

    preprocessed=True means the array already went through mlcore.prep.preprocess_batch (e.g. a pool
    prepared once and scored every active-learning round), so rows are passed through untouched.
    """

    def __init__(self, images, *, preprocessed: bool = False, layout: str = "auto"):
        images = as_channels_first_batch(images, layout) if not preprocessed else images
        # Preprocessed model inputs (mlcore.prep.prepare_model_input) may be another size or carry
        # the uncertainty channel: (N, 3 or 4, S, S).
        if preprocessed and not _is_model_input(images.shape, 4):
            raise TripletShapeError(
                f"preprocessed triplets must have shape (N, 3, {CUTOUT_SIZE}, {CUTOUT_SIZE}) "
                f"(or (N, 4, S, S) with the uncertainty channel), got {images.shape}"
            )
        self.images = images
        self.preprocessed = preprocessed

    def __len__(self) -> int:
        return len(self.images)

    def get_batch(self, indices) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and np.all(np.diff(indices) == 1):
            rows = self.images[indices[0] : indices[-1] + 1]  # one contiguous read from a memory map
        else:
            rows = self.images[np.sort(indices)] if _is_memmap(self.images) else self.images[indices]
            if _is_memmap(self.images):  # memmaps read fastest in file order; restore the caller's order
                rows = rows[np.argsort(np.argsort(indices))]
        if self.preprocessed:
            return np.asarray(rows, dtype=np.float32)
        return preprocess_batch(rows)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.get_batch([int(index)])[0])


def _is_model_input(shape: tuple, ndim: int) -> bool:
    """(N, 3 or 4, S, S) with S at least 16: what mlcore.prep prepares for a VGG6."""
    return len(shape) == ndim and shape[-3] in (3, 4) and shape[-1] == shape[-2] >= 16


def _is_memmap(array) -> bool:
    return isinstance(array, np.memmap)


class NpyTripletDataset(TripletArrayDataset):
    """A .npy file of triplets, memory-mapped (read-only): only the rows asked for are read from disk."""

    def __init__(self, path: str | os.PathLike, *, layout: str = "auto", preprocessed: bool = False):
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"triplet file not found: {self.path}")
        self.layout = layout
        super().__init__(self._open(), preprocessed=preprocessed, layout=layout)

    def _open(self) -> np.ndarray:
        try:
            array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise TripletShapeError(f"{self.path} is not a plain .npy array: {exc}") from None
        if not isinstance(array, np.ndarray):
            raise TripletShapeError(f"{self.path} holds several arrays (.npz); expected one .npy array")
        return array

    # DataLoader worker processes pickle the dataset: send the path, not the mapped pages.
    def __getstate__(self):
        state = self.__dict__.copy()
        state["images"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.images = as_channels_first_batch(self._open(), self.layout)


class TripletFileListDataset(Dataset):
    """One .npy file per subject, each a raw (3, H, W) triplet; files are opened only when read."""

    def __init__(self, paths: Sequence[str | os.PathLike]):
        self.paths = [os.fspath(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, index: int) -> np.ndarray:
        path = self.paths[index]
        try:
            triplet = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise FileNotFoundError(f"triplet file not found: {path}") from None
        if triplet.ndim != 3 or triplet.shape[0] != 3:
            raise TripletShapeError(f"{path}: expected a (3, H, W) triplet, got shape {triplet.shape}")
        return triplet

    def get_batch(self, indices) -> np.ndarray:
        indices = [int(i) for i in indices]
        raws = [self._read(i) for i in indices]
        shapes = {r.shape for r in raws}
        if len(shapes) == 1:
            return preprocess_batch(np.stack(raws))
        return np.concatenate([preprocess_batch(r[None]) for r in raws])  # mixed sizes: pad one by one

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.get_batch([index])[0])


def as_dataset(source) -> Dataset:
    """Arrays become a TripletArrayDataset; anything that already is a Dataset is returned as is."""
    if isinstance(source, Dataset):
        return source
    if isinstance(source, np.ndarray | np.memmap):
        return TripletArrayDataset(source)
    if isinstance(source, torch.Tensor):
        return TripletArrayDataset(source.detach().cpu().numpy())
    raise TypeError(f"expected a NumPy array of triplets or a torch Dataset, got {type(source).__name__}")


def iter_batches(dataset: Dataset, batch_size: int, indices=None):
    """Yield (batch_indices, float32 NumPy batch) in order, using get_batch when the dataset has it.

    Generic torch Datasets (items are tensors, or tuples whose first element is the triplet) are
    supported by stacking items, with a shape check so a wrong dataset fails clearly.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    indices = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)
    get_batch = getattr(dataset, "get_batch", None)
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        if get_batch is not None:
            batch = get_batch(chunk)
        else:
            items = [dataset[int(i)] for i in chunk]
            items = [item[0] if isinstance(item, tuple | list) else item for item in items]
            batch = np.stack([np.asarray(item, dtype=np.float32) for item in items])
        if not _is_model_input(batch.shape, 4):
            raise TripletShapeError(
                f"dataset produced batches of shape {batch.shape}, expected (B, 3, {CUTOUT_SIZE}, {CUTOUT_SIZE})"
            )
        yield chunk, batch
