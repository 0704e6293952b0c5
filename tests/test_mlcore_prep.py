"""mlcore.prep and mlcore.data: braai preprocessing, augmentation symmetries, lazy datasets."""

import gzip
import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mlcore
from mlcore import PREPROCESSING_VERSION
from mlcore.data import NpyTripletDataset, TripletArrayDataset, TripletFileListDataset, iter_batches
from mlcore.prep import (
    DIHEDRAL_TRANSFORMS,
    TripletShapeError,
    as_channels_first_batch,
    channels_last_to_first,
    dihedral,
    pad_or_crop,
    preprocess_batch,
    preprocess_triplet,
    random_dihedral,
    stack_triplet,
)

ZTF_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ztf"


def _raw(n=4, size=63, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(100.0, 10.0, size=(n, 3, size, size))).astype(np.float32)


# Run in a fresh interpreter: a meta-path finder refuses any django import (and records it, in case a
# module swallows the ImportError), then every module pkgutil finds under mlcore is imported, so a
# module added later is covered without editing this test.
_IMPORT_EVERY_MLCORE_MODULE = """
import contextlib, importlib, io, pkgutil, runpy, sys

attempts = []

class RefuseDjango:
    def find_spec(self, name, path=None, target=None):
        if name == "django" or name.startswith("django."):
            attempts.append(name)
            raise ImportError(f"mlcore must not import {name}")
        return None

sys.meta_path.insert(0, RefuseDjango())
import mlcore, mlcore.prep, mlcore.acquisition, mlcore.metrics
assert "torch" not in sys.modules, "torch imported eagerly"
imported = []
for info in pkgutil.walk_packages(mlcore.__path__, "mlcore."):
    if info.name == "mlcore.__main__":
        # Importing it runs the command line; run it the way `python -m mlcore --help` does.
        sys.argv = ["mlcore", "--help"]
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                runpy.run_module("mlcore", run_name="__main__")
        except SystemExit:
            pass
    else:
        importlib.import_module(info.name)
    imported.append(info.name)
assert not attempts, f"django import attempted: {attempts}"
assert not [m for m in sys.modules if m == "django" or m.startswith("django.")], "django imported"
print(" ".join(imported))
"""


def test_importing_mlcore_is_cheap_and_no_module_imports_django():
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_EVERY_MLCORE_MODULE], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    imported = set(done.stdout.split())
    on_disk = {f"mlcore.{path.stem}" for path in Path(mlcore.__file__).parent.glob("*.py")} - {
        "mlcore.__init__"
    }
    assert on_disk <= imported, f"not imported: {sorted(on_disk - imported)}"


def test_preprocessing_version_is_recorded_constant():
    assert isinstance(PREPROCESSING_VERSION, str) and PREPROCESSING_VERSION


def test_each_cutout_gets_unit_l2_norm_and_nan_becomes_zero():
    raw = _raw()
    raw[0, 2, 10:20, 10:20] = np.nan
    raw[1, 0, 0, 0] = np.inf
    raw[2, 1, 5, 5] = 1e25  # ZTF fill value
    out = preprocess_batch(raw)
    assert out.shape == (4, 3, 63, 63) and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    assert np.all(out[0, 2, 10:20, 10:20] == 0)
    assert out[1, 0, 0, 0] == 0 and out[2, 1, 5, 5] == 0
    norms = np.sqrt((out.astype(np.float64) ** 2).sum(axis=(2, 3)))
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    # Each cutout normalised on its own: scaling one channel changes nothing after preprocessing.
    scaled = raw.copy()
    scaled[:, 0] *= 1000
    np.testing.assert_allclose(preprocess_batch(scaled), out, rtol=1e-4, atol=1e-7)


def test_all_masked_cutout_stays_zero_instead_of_nan():
    raw = _raw(1)
    raw[0, 1] = np.nan
    out = preprocess_batch(raw)
    assert np.all(out[0, 1] == 0) and np.all(np.isfinite(out))


def test_input_is_never_modified():
    raw = _raw()
    raw[0, 0, 0, 0] = np.nan
    before = raw.copy()
    preprocess_batch(raw)
    np.testing.assert_array_equal(raw, before)


def test_small_cutout_is_padded_centred_and_large_is_cropped():
    small = np.ones((41, 63), dtype=np.float32)
    framed = pad_or_crop(small)
    assert framed.shape == (63, 63)
    assert np.all(np.isnan(framed[:11])) and np.all(np.isnan(framed[52:]))
    assert np.all(framed[11:52] == 1)
    batch = preprocess_batch(np.ones((2, 3, 41, 63), dtype=np.float32))
    assert batch.shape == (2, 3, 63, 63)
    assert np.all(batch[:, :, :11] == 0) and np.all(batch[:, :, 52:] == 0)
    np.testing.assert_allclose(np.sqrt((batch**2).sum(axis=(2, 3))), 1.0, rtol=1e-5)

    big = np.arange(71 * 71, dtype=np.float32).reshape(71, 71)
    cropped = pad_or_crop(big)
    assert cropped.shape == (63, 63)
    assert cropped[31, 31] == big[35, 35]  # centre stays the centre


def test_stack_triplet_accepts_different_cutout_shapes():
    triplet = stack_triplet(np.ones((63, 63)), np.ones((41, 63)), np.ones((63, 50)))
    assert triplet.shape == (3, 63, 63)
    assert np.isnan(triplet[1, 0, 0]) and np.isnan(triplet[2, 0, 0]) and triplet[0, 0, 0] == 1


def test_channels_last_needs_the_explicit_helper():
    raw = _raw(2)
    nhwc = np.moveaxis(raw, 1, -1)
    with pytest.raises(TripletShapeError, match="channels-last"):
        preprocess_batch(nhwc)
    np.testing.assert_array_equal(channels_last_to_first(nhwc), raw)
    np.testing.assert_array_equal(as_channels_first_batch(nhwc), raw)
    np.testing.assert_array_equal(as_channels_first_batch(raw), raw)
    np.testing.assert_array_equal(channels_last_to_first(nhwc[0]), raw[0])
    with pytest.raises(TripletShapeError):
        as_channels_first_batch(np.zeros((2, 5, 63, 63)))
    with pytest.raises(TripletShapeError):
        preprocess_triplet(np.zeros((63, 63)))


def test_dihedral_transforms_are_the_eight_exact_symmetries():
    image = np.arange(3 * 5 * 5, dtype=np.float32).reshape(1, 3, 5, 5)
    results = {dihedral(image, k, flip).tobytes() for k, flip in DIHEDRAL_TRANSFORMS}
    assert len(results) == 8  # all distinct for an asymmetric image
    for k, flip in DIHEDRAL_TRANSFORMS:
        out = dihedral(image, k, flip)
        np.testing.assert_array_equal(
            np.sort(out.ravel()), np.sort(image.ravel())
        )  # pixels moved, none invented
    batch = preprocess_batch(_raw(16))
    a = random_dihedral(batch, np.random.default_rng(1))
    b = random_dihedral(batch, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    # Channels of one triplet move together: the science/difference alignment is preserved.
    for i in range(len(batch)):
        match = [np.array_equal(a[i], dihedral(batch[i : i + 1], k, f)[0]) for k, f in DIHEDRAL_TRANSFORMS]
        assert any(match)


def test_memory_mapped_dataset_reads_rows_lazily(tmp_path):
    raw = _raw(10)
    raw[3, 2, 0, 0] = np.nan
    path = tmp_path / "pool.npy"
    np.save(path, raw)
    ds = NpyTripletDataset(path)
    assert isinstance(ds.images, np.memmap) and len(ds) == 10
    np.testing.assert_allclose(ds.get_batch([7, 2, 3]), preprocess_batch(raw[[7, 2, 3]]))
    np.testing.assert_allclose(ds[4].numpy(), preprocess_batch(raw[4:5])[0])
    # Survives pickling (DataLoader workers) without carrying the data along.
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_allclose(clone.get_batch([1]), ds.get_batch([1]))
    assert len(pickle.dumps(ds)) < raw.nbytes / 10
    # Channels-last files work too.
    path_nhwc = tmp_path / "pool_nhwc.npy"
    np.save(path_nhwc, np.moveaxis(raw, 1, -1))
    np.testing.assert_allclose(NpyTripletDataset(path_nhwc).get_batch([0, 9]), preprocess_batch(raw[[0, 9]]))
    with pytest.raises(FileNotFoundError):
        NpyTripletDataset(tmp_path / "missing.npy")


def test_file_list_dataset_reads_one_file_per_subject(tmp_path):
    raws = [_raw(1, seed=i)[0] for i in range(3)]
    raws.append(np.ones((3, 41, 63), dtype=np.float32))  # truncated at a CCD edge
    paths = []
    for i, raw in enumerate(raws):
        paths.append(tmp_path / f"s{i}.npy")
        np.save(paths[-1], raw)
    ds = TripletFileListDataset(paths)
    batch = ds.get_batch([0, 3])
    assert batch.shape == (2, 3, 63, 63)
    np.testing.assert_allclose(batch[0], preprocess_triplet(raws[0]))
    chunks = list(iter_batches(ds, 3))
    assert [len(idx) for idx, _ in chunks] == [3, 1]
    np.save(paths[1], np.zeros((63, 63)))
    with pytest.raises(TripletShapeError, match="s1.npy"):
        ds.get_batch([1])


def test_preprocessed_array_dataset_checks_shape():
    with pytest.raises(TripletShapeError):
        TripletArrayDataset(np.zeros((2, 3, 41, 63), np.float32), preprocessed=True)


def _cutout(packet, key):
    from astropy.io import fits

    data = packet[key]["stampData"]
    with gzip.open(io.BytesIO(data), "rb") as handle:
        with fits.open(io.BytesIO(handle.read())) as hdul:
            return np.asarray(hdul[0].data, dtype=np.float32)


def test_real_ztf_alert_truncated_at_ccd_edge_is_padded():
    path = ZTF_DIR / "avro" / "396522680015040001.avro"
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"ZTF test data missing at {path}")
        pytest.skip(f"ZTF test data not found at {path}")
    import fastavro

    with open(path, "rb") as handle:
        packet = next(iter(fastavro.reader(handle)))
    cutouts = [_cutout(packet, k) for k in ("cutoutScience", "cutoutTemplate", "cutoutDifference")]
    assert cutouts[0].shape != (63, 63)  # the file's point: a truncated cutout
    triplet = preprocess_triplet(stack_triplet(*cutouts))
    assert triplet.shape == (3, 63, 63) and np.all(np.isfinite(triplet))
    np.testing.assert_allclose(np.sqrt((triplet.astype(np.float64) ** 2).sum(axis=(1, 2))), 1.0, rtol=1e-5)
