"""The learning loop's export: a training bundle of one real/bogus workflow.

A zip with images.npy (N, ...) float32, labels.csv (row i ↔ images[i], with the label, target,
weight, a fixed train/validation/test split and the type where the workflow has types: the class
list is in the manifest), light_curves.csv (one row per light-curve point of
those subjects, `index` = their row) and manifest.json (counts, SHA-256 of every file,
aggregation thresholds, the active model, the code version and the query), so a paper's dataset
can be checked (`verify_bundle`) and regenerated. The image stack is written as a .npy the way the
core writers write tables: rows to a scratch file, the header once the count is known.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from core.exporters import (
    Column,
    CsvWriter,
    Exporter,
    ExportError,
    Progress,
    base_meta,
    keyset_chunks,
    model_info,
    only_workflow,
    register_exporter,
    verify_manifest,
    zip_add_file,
)
from core.followups import type_keys
from core.models import Project, Subject, Workflow
from core.storage import open_stored
from labeling.exporters import (
    LIGHT_CURVE_COLUMNS,
    aggregation_params,
    label_queryset,
    light_curve_points,
    workflow_types,
)
from labeling.labels import decided_filter, label_of
from loop.croissant import croissant

DEFAULT_SPLIT = {"train": 0.8, "validation": 0.1, "test": 0.1}

BUNDLE_LABEL_COLUMNS = [
    Column("index", "int", "Row of images.npy"),
    Column("subject_id", "int"),
    Column("external_id", "str", width=100),
    Column("object_id", "str", width=100),
    Column("label", "str", "real or bogus", 10),
    Column("target", "int", "1 = real, 0 = bogus"),
    Column("p_real", "float", "Crowd posterior (1/0 for gold)"),
    Column("weight", "float", "Confidence: 1 for gold, |2 P(real) - 1| otherwise"),
    Column("label_source", "str", "gold or crowd", 10),
    Column("n_votes", "int"),
    Column("is_holdout", "bool"),
    Column("split", "str", "train, validation or test", 10),
    Column("original_shape", "str", "Array shape before NaN padding to the common shape", 30),
    # Typed labels (core.followups): the class list is the manifest's types.classes.
    Column(
        "type",
        "str",
        "Type key: the expert's gold type if it is one of the classes, else the decided type; "
        "empty if neither",
        30,
    ),
    Column("type_index", "int", "Row of manifest types.classes for `type`; -1 without a type"),
    Column("type_source", "str", "gold or crowd (empty without a type)", 10),
    Column("decided_with_model", "bool", "P(real) was decided with the model voting"),
]


# The light-curve table of the bundle's subjects: labeling's light_curves export, with the row of
# images.npy / labels.csv each point belongs to.
BUNDLE_LIGHT_CURVE_COLUMNS = [
    Column("index", "int", "Row of images.npy and labels.csv"),
    *LIGHT_CURVE_COLUMNS,
]


def split_of(external_id: str, fractions: dict[str, float] = DEFAULT_SPLIT) -> str:
    """Fixed split from a hash of the subject's external id: the same subject always lands in the
    same split, on any server, whatever else the dataset contains."""
    u = int.from_bytes(hashlib.sha256(str(external_id).encode()).digest()[:8], "big") / 2**64
    edge = 0.0
    for name in ("train", "validation"):
        edge += fractions[name]
        if u < edge:
            return name
    return "test"


def type_of(gold_type: str, decided_type: str, classes: list[str]) -> tuple[str, str]:
    """(type key, source) of a bundle row: the expert's gold type where it is one of the workflow's
    classes (gold first, as for the label), else the crowd's decided type; ("", "") without one."""
    if gold_type and gold_type in classes:
        return gold_type, "gold"
    if decided_type and decided_type in classes:
        return decided_type, "crowd"
    return "", ""


def _validate_split(split: dict | None) -> dict[str, float]:
    if not split:
        return dict(DEFAULT_SPLIT)
    try:
        fractions = {name: float(split[name]) for name in ("train", "validation", "test")}
    except (KeyError, TypeError, ValueError):
        raise ExportError("The split needs numeric 'train', 'validation' and 'test' fractions.")
    if any(f < 0 for f in fractions.values()) or abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise ExportError("The split fractions must be non-negative and add up to 1.")
    return fractions


def _npy_shape(handle) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, _fortran, dtype = np.lib.format.read_array_header_1_0(handle)
    else:
        shape, _fortran, dtype = np.lib.format.read_array_header_2_0(handle)
    return tuple(shape), dtype


def export_bundle(
    project: Project,
    path: Path,
    *,
    workflow: Workflow | None = None,
    split: dict | None = None,
    progress: Callable[[float, str], None] | None = None,
    chunk_size: int = 2_000,
) -> dict:
    """A zip with images.npy (N, ...) float32, labels.csv (row i ↔ images[i]) and manifest.json."""
    workflow = workflow or only_workflow(project, Workflow.REAL_BOGUS, "training bundle")
    if workflow.kind != Workflow.REAL_BOGUS:
        raise ExportError("Training bundles are made for real/bogus workflows.")
    fractions = _validate_split(split)
    upto = Subject.objects.filter(project=project).order_by("-pk").values_list("pk", flat=True).first() or 0
    qs = label_queryset(workflow, upto).filter(decided_filter(workflow))
    fields = [
        "pk", "external_id", "object_id", "data", "gold_label", "p_real", "vote_count", "is_holdout",
        "survey", "light_curve", "gold_subtype", "decided_type", "decided_with_model",
    ]  # fmt: skip
    total = qs.count()
    tick = Progress(2 * total, progress)

    # Pass 1: array shapes from the .npy headers only, to find one common shape.
    shapes: dict[tuple[int, ...], int] = {}
    skipped_no_data = 0
    done = 0
    for chunk in keyset_chunks(qs, ["pk", "data"], chunk_size):
        for _pk, name in chunk:
            if not name:
                skipped_no_data += 1
                continue
            with open_stored(name) as handle:
                shape, _ = _npy_shape(handle)
            shapes[shape] = shapes.get(shape, 0) + 1
        done += len(chunk)
        tick(done, f"checking arrays: {done:,} of {total:,}")
    ndims = {len(s) for s in shapes}
    if len(ndims) > 1:
        raise ExportError(
            f"Subjects of this workflow have arrays of different dimensions ({sorted(shapes)})."
        )
    common = tuple(max(dims) for dims in zip(*shapes, strict=True)) if shapes else ()

    # Pass 2: arrays (NaN-padded to the common shape) to a scratch file, labels to labels.csv.
    tick.offset = total
    workdir = Path(tempfile.mkdtemp(prefix="skyvote-bundle-", dir=path.parent))
    counts = {"subjects": 0, "train": 0, "validation": 0, "test": 0, "real": 0, "bogus": 0, "gold": 0}
    counts["holdout"] = counts["padded"] = 0
    counts["light_curve_points"] = counts["with_light_curve"] = 0
    counts["typed"] = counts["decided_with_model"] = 0
    types = workflow_types([workflow])
    classes = type_keys(workflow.followups)
    index_of = {key: i for i, key in enumerate(classes)}
    type_counts = dict.fromkeys(classes, 0)
    try:
        raw_path = workdir / "images.raw"
        labels_path = workdir / "labels.csv"
        labels_writer = CsvWriter(labels_path, BUNDLE_LABEL_COLUMNS)
        curves_path = workdir / "light_curves.csv"
        curves_writer = CsvWriter(curves_path, BUNDLE_LIGHT_CURVE_COLUMNS)
        done = 0
        with open(raw_path, "wb") as raw:
            for chunk in keyset_chunks(qs, fields, chunk_size):
                rows, points = [], []
                for (
                    pk, ext, obj, name, gold, p, n_votes, holdout, survey, curve, gold_type, decided_type,
                    with_model,
                ) in chunk:  # fmt: skip
                    done += 1
                    if not name:
                        continue
                    with open_stored(name) as handle:
                        array = np.load(handle, allow_pickle=False).astype("<f4", copy=False)
                    original = array.shape
                    if array.shape != common:
                        padded = np.full(common, np.nan, dtype="<f4")
                        padded[tuple(slice(0, d) for d in array.shape)] = array
                        array = padded
                        counts["padded"] += 1
                    raw.write(np.ascontiguousarray(array).tobytes())
                    label, source, weight = label_of(gold, True, p)
                    p_out = (1.0 if label == Subject.REAL else 0.0) if source == "gold" else p
                    which = split_of(ext, fractions)
                    kind, kind_source = type_of(gold_type, decided_type, classes)
                    rows.append(
                        (
                            counts["subjects"],
                            pk,
                            ext,
                            obj or None,
                            label,
                            int(label == Subject.REAL),
                            p_out,
                            weight,
                            source,
                            n_votes,
                            holdout,
                            which,
                            "x".join(map(str, original)),
                            kind or None,
                            index_of.get(kind, -1),
                            kind_source or None,
                            with_model,
                        )  # fmt: skip
                    )
                    before = len(points)
                    for point in light_curve_points(curve):
                        points.append(
                            (counts["subjects"], pk, ext, obj or None, survey or None, workflow.slug, *point)
                        )
                    counts["light_curve_points"] += len(points) - before
                    counts["with_light_curve"] += len(points) > before
                    counts["subjects"] += 1
                    counts[which] += 1
                    counts[label] += 1
                    counts["gold"] += source == "gold"
                    counts["holdout"] += bool(holdout)
                    counts["decided_with_model"] += bool(with_model)
                    if kind:
                        counts["typed"] += 1
                        type_counts[kind] += 1
                labels_writer.write(rows)
                curves_writer.write(points)
                tick(done, f"writing arrays: {done:,} of {total:,}")
        labels_writer.close()
        curves_writer.close()
        counts["skipped_no_data"] = skipped_no_data

        npy_header = io.BytesIO()
        np.lib.format.write_array_header_2_0(
            npy_header,
            {"descr": "<f4", "fortran_order": False, "shape": (counts["subjects"], *common)},
        )
        methods = sorted(
            m for m in qs.order_by().values_list("aggregation_method", flat=True).distinct() if m
        )
        manifest = base_meta(project, "bundle", workflow) | {
            "format": "skyvote-training-bundle/1",
            "counts": counts,
            "image_shape": list(common),
            "image_dtype": "float32",
            "image_layout": "images.npy[i] is labels.csv row i; NaN = masked or padded pixels",
            "aggregation": {"methods": methods, "thresholds": aggregation_params(workflow)},
            "label_rule": "gold label if any, else the crowd's P(real) >= 0.5 for subjects with enough "
            "evidence (labeling.labels.training_labels)",
            "types": {
                "classes": classes,
                "labels": types,
                "counts": type_counts,
                "rule": "type: the expert's gold type if it is one of the classes, else the crowd's decided type "
                "(its posterior reached the workflow's type confidence); type_index is its row of classes, "
                "-1 without a type",
            },
            "split": {
                "method": "sha256(external_id) as a number in [0, 1): train below the train fraction, "
                "then validation, then test",
                "fractions": fractions,
            },
            "light_curves": {
                "file": "light_curves.csv",
                "rows": counts["light_curve_points"],
                "layout": "one row per light-curve point; index is the subject's row of images.npy and "
                "labels.csv; flux in nJy, AB magnitudes; kind detection, limit (upper limit: mag is the "
                "limiting magnitude) or forced (forced photometry)",
                "columns": [c.name for c in BUNDLE_LIGHT_CURVE_COLUMNS],
            },
            "model_version": model_info(workflow),
            "query": {
                "description": f"subjects of workflow '{workflow.slug}' (id {workflow.pk}) with a training "
                f"label, id <= {upto}, ordered by id",
                "sql": _sql(qs.order_by("pk").values_list(*fields)),
            },
            "files": {},
        }
        with zipfile.ZipFile(path, "w", allowZip64=True) as zf:
            manifest["files"]["images.npy"] = zip_add_file(
                zf, "images.npy", raw_path, header=npy_header.getvalue(), deflate=False
            )
            manifest["files"]["labels.csv"] = zip_add_file(zf, "labels.csv", labels_path, deflate=True)
            manifest["files"]["light_curves.csv"] = zip_add_file(
                zf, "light_curves.csv", curves_path, deflate=True
            )
            _write_croissant(zf, manifest, project, workflow, _typed_label_columns(classes))
            zf.writestr("manifest.json", json.dumps(manifest, indent=2, default=str), zipfile.ZIP_DEFLATED)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"rows": counts["subjects"], **{k: v for k, v in manifest.items() if k != "files"}}


def _typed_label_columns(classes: list[str]) -> list[Column]:
    """BUNDLE_LABEL_COLUMNS with this workflow's classes in the type column's description (the
    Croissant fields are read without the manifest)."""
    words = ", ".join(classes) if classes else "none: the workflow has no follow-up types"
    return [
        replace(c, description=f"{c.description}. Classes: {words}") if c.name == "type" else c
        for c in BUNDLE_LABEL_COLUMNS
    ]


def _write_croissant(
    zf: zipfile.ZipFile,
    manifest: dict,
    project: Project,
    workflow: Workflow,
    label_columns: list[Column] = BUNDLE_LABEL_COLUMNS,
) -> None:
    """croissant.json: the files, the label columns, the licence and citation, for dataset tools
    (loop.croissant); listed in the manifest like the data files."""
    tables = {
        "labels.csv": (label_columns, "One row per subject; row i describes images.npy[i]."),
        "light_curves.csv": (
            BUNDLE_LIGHT_CURVE_COLUMNS,
            "One row per light-curve point; index is the subject's row of labels.csv.",
        ),
    }
    description = croissant(
        manifest,
        tables,
        name=f"{project.name}: {workflow.name} training bundle",
        description=" ".join(
            f"Images (images.npy, float32, NaN = masked) and volunteer labels ({workflow.question}) from the "
            f"Skyvote project “{project.name}”. {project.description}".split()
        ),
    )
    data = json.dumps(description, indent=2, ensure_ascii=False).encode()
    zf.writestr("croissant.json", data, zipfile.ZIP_DEFLATED)
    manifest["files"]["croissant.json"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _sql(queryset) -> str:
    try:
        return str(queryset.query)
    except Exception:  # some backends cannot render every parameter; the description still says it
        return ""


def verify_bundle(path: Path) -> dict:
    """Check a training bundle against its manifest; returns the manifest, raises ExportError if a
    file is missing or its SHA-256 differs."""
    return verify_manifest(path)


@register_exporter
class TrainingBundleExporter(Exporter):
    identifier = "bundle"
    verbose_name = "Training bundle"
    contents = "images .npy, labels, light curves, split, manifest"
    formats = ("zip",)
    workflow_kind = Workflow.REAL_BOGUS
    bundle = True

    def clean_params(self, options: dict) -> dict:
        return {"split": _validate_split(options.get("split"))}

    def run(self, project, target, fmt, *, workflow, params, progress=None) -> dict:
        return export_bundle(project, target, workflow=workflow, split=params.get("split"), progress=progress)
