"""Triplets for the learning loop, read from a local cache of preprocessed arrays.

Scoring every unretired subject each round means reading the whole pool. One small .npy file per
subject in media storage is right for ingestion and for S3, but reading 100,000 of them every
round would dominate the round. So each worker keeps, per workflow, an append-only cache of
*preprocessed* triplets (mlcore.prep) in memory-mapped segment files on its local disk:

    <cache_dir>/workflow-<id>/seg-000001.npy      float16 (n, 3, 63, 63), preprocessed
    <cache_dir>/workflow-<id>/seg-000001.ids.npy  int64 (n,), the subject ids of those rows

A round first appends the subjects that are not cached yet (read from storage with
core.ingest.load_subject_array), then reads everything else from the memory maps. A segment
counts only once its ids file exists (written last, by rename), so a worker killed mid-write
leaves no half segment behind. Subject arrays never change after ingestion, so nothing has to be
invalidated; deleting the folder is always safe (it is rebuilt from media).

float16 halves the disk and page-cache footprint: preprocessed cutouts are L2-normalised (values
around 1e-2, peaks below 1), where float16 keeps three significant digits, far below the noise.

What a row holds is the model's input (mlcore.prep.InputSpec: size, pixel scale, channels), made
from the subject's stamps at their own pixel scale (`subject_stamps`: ZTF's ~1″, Rubin's 0.2″, from
the WCS recorded at ingest or the survey) and, with the uncertainty channel, their uncertainty
planes. One cache per spec: the default spec (63 px, 1″, three channels) keeps the folder
`workflow-<id>`, others get `workflow-<id>-<spec key>`, so a workflow whose model input changes
starts a new cache and models with different inputs can be evaluated side by side.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings

log = logging.getLogger(__name__)

CACHE_DTYPE = np.float16
TRIPLET_SHAPE = (3, 63, 63)  # the default spec's rows
_SEGMENT = re.compile(r"^seg-(\d{6})\.ids\.npy$")
# Merge small segments once there are this many (each round may append a few new subjects).
MAX_SEGMENTS = 24


def cache_root() -> Path:
    return Path(settings.SKYVOTE_LOOP.get("cache_dir") or Path(settings.VAR_DIR) / "cache")


@dataclass
class Stamps:
    """A subject's raw triplet (3, H, W) at `pixel_scale` ″/px (None: unknown, taken to be the
    model's), with its 1σ uncertainty planes when the alert had them."""

    triplet: np.ndarray
    pixel_scale: float | None = None
    sigma: np.ndarray | None = None


def prepare_stamps(spec, item) -> np.ndarray:
    """One subject's model input (C, S, S) for `spec` from its Stamps, or from a bare (3, H, W)
    array (taken to be at the model's pixel scale, without uncertainty planes)."""
    from mlcore.prep import model_stamps, prepare_model_input

    if not isinstance(item, Stamps):
        item = Stamps(np.asarray(item))
    variance = None if item.sigma is None else np.square(np.asarray(item.sigma, dtype=np.float64))
    raw = model_stamps(np.asarray(item.triplet), item.pixel_scale, spec, variance)
    return prepare_model_input(raw[None])[0]


class ArrayCache:
    """The preprocessed-triplet cache of one workflow (and one model input) on this machine."""

    def __init__(self, directory: str | os.PathLike, spec=None):
        from mlcore.prep import InputSpec

        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.spec = spec or InputSpec()
        self.shape = self.spec.shape
        self._index: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._maps: dict[int, np.ndarray] = {}

    @classmethod
    def for_workflow(cls, workflow_id: int, spec=None) -> ArrayCache:
        from mlcore.prep import InputSpec

        spec = spec or InputSpec()
        name = f"workflow-{int(workflow_id)}" + ("" if spec.is_default else f"-{spec.key()}")
        return cls(cache_root() / name, spec)

    # ---- index -------------------------------------------------------------------------------
    def _segment_numbers(self) -> list[int]:
        numbers = []
        for name in os.listdir(self.directory):
            match = _SEGMENT.match(name)
            if match and (self.directory / f"seg-{match.group(1)}.npy").exists():
                numbers.append(int(match.group(1)))
        return sorted(numbers)

    def _paths(self, number: int) -> tuple[Path, Path]:
        return self.directory / f"seg-{number:06d}.npy", self.directory / f"seg-{number:06d}.ids.npy"

    def index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(subject ids sorted, segment number, row) for every cached subject."""
        if self._index is None:
            ids, segs, rows = [], [], []
            for number in self._segment_numbers():
                seg_ids = np.load(self._paths(number)[1], allow_pickle=False).astype(np.int64)
                ids.append(seg_ids)
                segs.append(np.full(len(seg_ids), number, dtype=np.int32))
                rows.append(np.arange(len(seg_ids), dtype=np.int64))
            if ids:
                all_ids, all_segs, all_rows = np.concatenate(ids), np.concatenate(segs), np.concatenate(rows)
                # A later segment wins if an id was ever written twice (a retried round).
                order = np.lexsort((-all_segs, all_ids))
                all_ids, all_segs, all_rows = all_ids[order], all_segs[order], all_rows[order]
                first = np.r_[True, np.diff(all_ids) != 0]
                self._index = (all_ids[first], all_segs[first], all_rows[first])
            else:
                empty = np.empty(0, dtype=np.int64)
                self._index = (empty, np.empty(0, dtype=np.int32), empty)
        return self._index

    def __len__(self) -> int:
        return len(self.index()[0])

    def missing(self, subject_ids: Iterable[int]) -> np.ndarray:
        wanted = np.unique(np.fromiter(subject_ids, dtype=np.int64))
        return wanted[~np.isin(wanted, self.index()[0])]

    def locate(self, subject_ids) -> tuple[np.ndarray, np.ndarray]:
        """(segment, row) per subject id; KeyError naming the first id that is not cached."""
        subject_ids = np.asarray(subject_ids, dtype=np.int64)
        ids, segs, rows = self.index()
        if len(ids) == 0:
            found = np.zeros(len(subject_ids), dtype=bool)
            pos = np.zeros(len(subject_ids), dtype=np.int64)
        else:
            pos = np.minimum(np.searchsorted(ids, subject_ids), len(ids) - 1)
            found = ids[pos] == subject_ids
        if not np.all(found):
            raise KeyError(
                f"subject {int(subject_ids[~found][0])} is not in the array cache {self.directory}"
            )
        return segs[pos], rows[pos]

    def _map(self, number: int) -> np.ndarray:
        if number not in self._maps:
            self._maps[number] = np.load(self._paths(number)[0], mmap_mode="r", allow_pickle=False)
        return self._maps[number]

    # ---- writing -----------------------------------------------------------------------------
    def _next_number(self) -> int:
        numbers = [
            int(m.group(1)) for m in (re.match(r"^seg-(\d{6})", n) for n in os.listdir(self.directory)) if m
        ]
        return max(numbers, default=0) + 1

    def write_segment(self, subject_ids, preprocessed: np.ndarray) -> int:
        """Append one segment of already-preprocessed triplets; returns its number."""
        subject_ids = np.asarray(subject_ids, dtype=np.int64)
        if preprocessed.shape != (len(subject_ids), *self.shape):
            raise ValueError(
                f"expected {(len(subject_ids), *self.shape)} preprocessed triplets, got {preprocessed.shape}"
            )
        step = 4096
        return self.write_segment_stream(
            subject_ids, (preprocessed[i : i + step] for i in range(0, len(subject_ids), step))
        )

    def write_segment_stream(self, subject_ids, chunks: Iterable[np.ndarray]) -> int:
        """Append one segment from consecutive chunks of preprocessed triplets (bounded memory)."""
        subject_ids = np.asarray(subject_ids, dtype=np.int64)
        number = self._next_number()
        arrays_path, ids_path = self._paths(number)
        tmp = arrays_path.with_name(f".{arrays_path.name}.tmp")
        out = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=CACHE_DTYPE, shape=(len(subject_ids), *self.shape)
        )
        done = 0
        try:
            for chunk in chunks:
                out[done : done + len(chunk)] = chunk
                done += len(chunk)
            if done != len(subject_ids):
                raise ValueError(f"got {done} triplets for {len(subject_ids)} subject ids")
            out.flush()
            del out
            os.replace(tmp, arrays_path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp_ids = ids_path.with_name(f".{ids_path.name}.tmp.npy")
        np.save(tmp_ids, subject_ids)
        os.replace(tmp_ids, ids_path)  # the segment exists from here on
        self._index = None
        return number

    def append_raw(self, subject_ids, raw_triplets: np.ndarray) -> int:
        """Preprocess raw (n, 3, H, W) triplets (at the model's pixel scale) and append them as one segment."""
        from mlcore.prep import prepare_subjects

        return self.write_segment(
            subject_ids, prepare_subjects([(t, None, None) for t in raw_triplets], self.spec)
        )

    def prepare(self, item) -> np.ndarray:
        """One subject's model input for this cache's spec (see prepare_stamps)."""
        return prepare_stamps(self.spec, item)

    def fill(
        self,
        subject_ids,
        load: Callable[[list[int]], list[tuple[int, np.ndarray | None, str]]],
        *,
        chunk: int = 2048,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[tuple[int, str]]:
        """Cache every subject of subject_ids that is not cached yet.

        load(ids) returns (id, Stamps or a raw (3, H, W) array or None, error) per id. Subjects whose
        array cannot be read are skipped and returned as (id, reason); the caller leaves them out of
        the round.
        """
        from mlcore.prep import TripletShapeError

        missing = self.missing(subject_ids)
        failures: list[tuple[int, str]] = []
        for start in range(0, len(missing), chunk):
            ids_chunk = [int(i) for i in missing[start : start + chunk]]
            good_ids, prepared = [], []
            for subject_id, array, error in load(ids_chunk):
                if array is None:
                    failures.append((subject_id, error))
                    continue
                try:
                    prepared.append(self.prepare(array))
                    good_ids.append(subject_id)
                except (TripletShapeError, ValueError) as exc:
                    failures.append((subject_id, str(exc)))
            if good_ids:
                self.write_segment(good_ids, np.stack(prepared))
            if progress is not None:
                progress(min(start + chunk, len(missing)), len(missing))
        self.compact_if_needed()
        return failures

    def compact_if_needed(self) -> None:
        numbers = self._segment_numbers()
        if len(numbers) <= MAX_SEGMENTS:
            return
        ids, segs, rows = self.index()
        merged = np.empty((len(ids), *self.shape), dtype=CACHE_DTYPE)
        for number in numbers:
            sel = segs == number
            merged[sel] = self._map(number)[rows[sel]]
        self.write_segment(ids, merged)
        keep = max(self._segment_numbers())
        self._maps.clear()
        for number in numbers:
            if number != keep:
                for path in reversed(self._paths(number)):  # ids first: the segment disappears atomically
                    path.unlink(missing_ok=True)
        self._index = None

    # ---- reading -----------------------------------------------------------------------------
    def read(self, subject_ids) -> np.ndarray:
        """Preprocessed float16 model inputs (n, C, S, S) in the order of subject_ids."""
        subject_ids = np.asarray(subject_ids, dtype=np.int64)
        segs, rows = self.locate(subject_ids)
        out = np.empty((len(subject_ids), *self.shape), dtype=CACHE_DTYPE)
        for number in np.unique(segs):
            sel = np.flatnonzero(segs == number)
            seg_rows = rows[sel]
            order = np.argsort(seg_rows, kind="stable")  # memory maps read fastest in file order
            sorted_rows = seg_rows[order]
            data = self._map(int(number))
            if len(sorted_rows) and sorted_rows[-1] - sorted_rows[0] + 1 == len(sorted_rows):
                block = data[sorted_rows[0] : sorted_rows[-1] + 1]
            else:
                block = data[sorted_rows]
            out[sel[order]] = block
        return out

    def iter_chunks(self, subject_ids, chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, preprocessed float16 triplets) in chunks, in cache order (sequential reads)."""
        subject_ids = np.asarray(subject_ids, dtype=np.int64)
        segs, rows = self.locate(subject_ids)
        order = np.lexsort((rows, segs))
        for start in range(0, len(order), chunk):
            ids_chunk = subject_ids[order[start : start + chunk]]
            yield ids_chunk, self.read(ids_chunk)


def subject_pixel_scale(subject) -> float | None:
    """Arcseconds per pixel of the subject's stored stamps: from the WCS recorded at ingest (Rubin),
    a CD matrix or pixel scale in its metadata (synthetic stamps), else its survey's (ZTF 1.01″,
    Rubin 0.2″); None when nothing says (files and arrays: taken to be at the model's scale)."""
    from mlcore.prep import SURVEY_PIXEL_SCALES, pixel_scale_from_cd

    meta = subject.metadata or {}
    orientation = meta.get("orientation")
    candidates = [orientation.get("pixel_scale_arcsec") if isinstance(orientation, dict) else None]
    candidates.append(meta.get("pixel_scale"))
    for value in candidates:
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        if 0 < value < 3600:
            return value
    if meta.get("cd") is not None:
        try:
            value = pixel_scale_from_cd(meta["cd"])
        except (TypeError, ValueError):
            value = 0.0
        if 0 < value < 3600:
            return value
    return SURVEY_PIXEL_SCALES.get(getattr(subject, "survey", "") or "")


def subject_stamps(subject, array: np.ndarray, *, sigma: bool = False) -> Stamps:
    """What the model is made from: the stored triplet at its pixel scale, its uncertainty planes
    (with sigma=True, when the alert had them), and the difference of a negative Rubin detection
    negated, so that the candidate is bright as in every ZTF alert (ZTF sends negative detections
    negated): one convention for the model whatever the survey."""
    from core.models import Subject

    meta = subject.metadata or {}
    triplet = np.asarray(array, dtype=np.float32)
    if getattr(subject, "survey", "") == Subject.RUBIN and meta.get("difference_sign") == "negative":
        triplet = triplet.copy()
        triplet[2] = -triplet[2]
    planes = None
    if sigma and meta.get("stamps_file"):
        from core.ingest import load_subject_stamps

        planes = load_subject_stamps(subject).get("uncertainty")
        if planes is not None and (planes.shape != triplet.shape or not np.isfinite(planes[2]).any()):
            planes = None
    return Stamps(triplet, subject_pixel_scale(subject), planes)


def load_from_storage(subject_ids: list[int], *, sigma: bool = False) -> list[tuple[int, Stamps | None, str]]:
    """Subjects' stamps from storage: (id, Stamps or None, error message). sigma=True also reads
    their uncertainty planes (the uncertainty channel needs them)."""
    from core.ingest import load_subject_array
    from core.models import Subject

    subjects = Subject.objects.filter(pk__in=subject_ids).only(
        "id", "data", "external_id", "survey", "metadata"
    )
    found = {s.pk: s for s in subjects}
    results = []
    for subject_id in subject_ids:
        subject = found.get(subject_id)
        if subject is None:
            results.append((subject_id, None, "subject was deleted"))
            continue
        try:
            array = load_subject_array(subject)
        except (OSError, ValueError) as exc:
            results.append((subject_id, None, f"{subject.external_id}: {exc}"))
            continue
        if array.ndim != 3 or array.shape[0] != 3:
            results.append(
                (subject_id, None, f"{subject.external_id}: not a (3, H, W) triplet {array.shape}")
            )
            continue
        try:
            stamps = subject_stamps(subject, array, sigma=sigma)
        except Exception as exc:  # an unreadable uncertainty file leaves this subject out, not the round
            results.append((subject_id, None, f"{subject.external_id}: {exc}"))
            continue
        results.append((subject_id, stamps, ""))
    return results


def loader_for(spec) -> Callable[[list[int]], list[tuple[int, Stamps | None, str]]]:
    """The storage loader a cache of `spec` needs: uncertainty planes only for the uncertainty channel."""
    if spec.uncertainty:
        return lambda ids: load_from_storage(ids, sigma=True)
    return load_from_storage
