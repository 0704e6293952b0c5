"""The similarity app's export: a zip with choices.csv (one tidy row per vote and candidate shown:
no lists in cells; with the rare-gem flag the answer came with), tasks.csv (one row per task), pairs.csv (shown/chosen counts per pair, with the
Wilson 95% interval of the rate) and manifest.json (counts and the SHA-256 of every file).

Uses core and jobs only, like the rest of this app.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from core import gems
from core.exporters import (
    DEFAULT_CHUNK,
    Column,
    Exporter,
    Progress,
    base_meta,
    keyset_chunks,
    project_workflows,
    pseudonymizer,
    register_exporter,
    write_table,
    zip_add_file,
)
from core.models import Project, Subject, Workflow
from similarity.models import PairStat, SimilarityTask, SimilarityVote, wilson_interval


def _similarity_choice_columns(include_worker_ids: bool) -> list[Column]:
    cols = [
        Column("vote_id", "int", "Similarity vote id"),
        Column("task_id", "int", "Similarity task id"),
        Column("workflow", "str", "Workflow slug", 50),
        Column("participant", "str", "Participant pseudonym: stable within the project", 14),
        Column("participant_kind", "str", "user, anonymous or worker", 10),
    ]
    if include_worker_ids:
        cols.append(Column("worker_id", "str", "Panel worker id (owners only)", 200))
    return cols + [
        Column("comparison_id", "int", "Subject the candidates were compared with"),
        Column("comparison_external_id", "str", width=100),
        Column("position", "int", "Tile position of the candidate (1 = first)"),
        Column("candidate_id", "int", "Candidate subject id"),
        Column("candidate_external_id", "str", width=100),
        Column(
            "candidate_source", "str", "Why the candidate was shown (nearest, uncertain, mid, random)", 20
        ),
        Column("chosen", "bool", "The participant chose this candidate as similar"),
        Column("none_similar", "bool", "The participant said none were similar"),
        Column("started_at", "datetime"),
        Column("finished_at", "datetime"),
        Column("created_at", "datetime"),
        Column("gem", "bool", "The participant flagged the comparison image as a rare gem with this answer"),
        Column(
            "gem_note", "str", "The participant's note with the flag (plain text; empty without one)", 280
        ),
    ]


SIMILARITY_TASK_COLUMNS = [
    Column("task_id", "int"),
    Column("workflow", "str", width=50),
    Column("comparison_id", "int"),
    Column("comparison_external_id", "str", width=100),
    Column("n_candidates", "int"),
    Column("strategy", "str", "random or embedding", 20),
    Column("model_version", "int", "Embedding model version that picked the candidates"),
    Column("n_votes", "int"),
    Column("retired", "bool"),
    Column("created_at", "datetime"),
]

SIMILARITY_PAIR_COLUMNS = [
    Column("workflow", "str", width=50),
    Column("comparison_id", "int"),
    Column("comparison_external_id", "str", width=100),
    Column("candidate_id", "int"),
    Column("candidate_external_id", "str", width=100),
    Column("shown", "int", "Times the candidate was shown next to the comparison subject"),
    Column("chosen", "int", "Times it was chosen as similar"),
    Column("rate", "float", "chosen / shown"),
    Column("rate_low", "float", "Wilson 95% interval, lower end"),
    Column("rate_high", "float", "Wilson 95% interval, upper end"),
]


def _external_ids(ids) -> dict[int, str]:
    return dict(Subject.objects.filter(pk__in=set(ids)).values_list("pk", "external_id"))


def similarity_choice_rows(project, workflows, include_worker_ids: bool, upto_pk: int, chunk_size: int):
    slugs = {w.pk: w.slug for w in workflows}
    pseudonym = pseudonymizer(project)
    fields = [
        "pk", "task_id", "workflow_id", "participant_id", "participant__kind", "participant__external_id",
        "task__comparison_id", "task__comparison__external_id", "task__candidates", "task__candidate_sources",
        "chosen", "none_similar", "started_at", "finished_at", "created_at", "gem_note",
    ]  # fmt: skip
    # The rare-gem flag sent with each answer (core.gems): its note, "" without one, None without a flag.
    qs = gems.with_gem_note(
        SimilarityVote.objects.filter(
            workflow_id__in=list(slugs), pk__lte=upto_pk, task__check_candidate__isnull=True
        )
    )
    for chunk in keyset_chunks(qs, fields, chunk_size):
        names = _external_ids(c for row in chunk for c in (row[8] or []))
        rows = []
        for (
            pk,
            task,
            wid,
            pid,
            kind,
            ext,
            comp,
            comp_ext,
            candidates,
            sources,
            chosen,
            none,
            start,
            end,
            made,
            note,
        ) in chunk:
            who = (pseudonym(pid), kind, ext or None) if include_worker_ids else (pseudonym(pid), kind)
            picked = set(chosen or [])
            sources = sources or []
            for position, candidate in enumerate(candidates or [], start=1):
                source = sources[position - 1] if position <= len(sources) else None
                rows.append(
                    (
                        pk,
                        task,
                        slugs[wid],
                        *who,
                        comp,
                        comp_ext,
                        position,
                        candidate,
                        names.get(candidate),
                        source,
                        candidate in picked,
                        none,
                        start,
                        end,
                        made,
                        note is not None,
                        note or None,
                    )  # fmt: skip
                )
        yield rows


def similarity_task_rows(workflows, chunk_size: int):
    slugs = {w.pk: w.slug for w in workflows}
    fields = [
        "pk", "workflow_id", "comparison_id", "comparison__external_id", "candidates", "strategy",
        "model_version__version", "n_votes", "retired", "created_at",
    ]  # fmt: skip
    qs = SimilarityTask.objects.filter(workflow_id__in=list(slugs), check_candidate__isnull=True)
    for chunk in keyset_chunks(qs, fields, chunk_size):
        yield [
            (pk, slugs[wid], comp, comp_ext, len(cands or []), strategy, version, n, retired, made)
            for pk, wid, comp, comp_ext, cands, strategy, version, n, retired, made in chunk
        ]


def similarity_pair_rows(workflows, chunk_size: int):
    slugs = {w.pk: w.slug for w in workflows}
    fields = [
        "pk", "workflow_id", "comparison_id", "comparison__external_id", "candidate_id", "candidate__external_id",
        "shown", "chosen",
    ]  # fmt: skip
    qs = PairStat.objects.filter(workflow_id__in=list(slugs))
    for chunk in keyset_chunks(qs, fields, chunk_size):
        rows = []
        for _pk, wid, comp, comp_ext, cand, cand_ext, shown, chosen in chunk:
            low, high = wilson_interval(chosen, shown)
            rate = chosen / shown if shown else None
            rows.append((slugs[wid], comp, comp_ext, cand, cand_ext, shown, chosen, rate, low, high))
        yield rows


def export_similarity(
    project: Project,
    path: Path,
    *,
    workflow: Workflow | None = None,
    include_worker_ids: bool = False,
    progress: Callable[[float, str], None] | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict:
    """A zip with choices.csv (one row per vote and candidate shown: tidy, no lists in cells),
    tasks.csv (one row per task) and pairs.csv (shown/chosen counts per pair), plus manifest.json."""
    workflows = project_workflows(project, workflow, kinds=[Workflow.SIMILARITY])
    ids = [w.pk for w in workflows]
    # Check tasks of paid assignments (the comparison among its own candidates) are not similarity data.
    votes = SimilarityVote.objects.filter(workflow_id__in=ids, task__check_candidate__isnull=True)
    upto = votes.order_by("-pk").values_list("pk", flat=True).first() or 0
    total = (
        votes.filter(pk__lte=upto).count()
        + SimilarityTask.objects.filter(workflow_id__in=ids, check_candidate__isnull=True).count()
        + PairStat.objects.filter(workflow_id__in=ids).count()
    )
    tick = Progress(total, progress)
    meta = base_meta(project, "similarity", workflow) | {
        "upto_vote_id": upto,
        "worker_ids": include_worker_ids,
    }
    workdir = Path(tempfile.mkdtemp(prefix="skyvote-similarity-", dir=path.parent))
    counts = {}
    try:
        parts = [
            ("choices.csv", _similarity_choice_columns(include_worker_ids),
             similarity_choice_rows(project, workflows, include_worker_ids, upto, chunk_size)),
            ("tasks.csv", SIMILARITY_TASK_COLUMNS, similarity_task_rows(workflows, chunk_size)),
            ("pairs.csv", SIMILARITY_PAIR_COLUMNS, similarity_pair_rows(workflows, chunk_size)),
        ]  # fmt: skip
        for name, columns, chunks in parts:
            counts[name] = write_table("csv", workdir / name, columns, chunks, meta, progress=tick)
            tick.offset += counts[name]
        counts["votes"] = votes.filter(pk__lte=upto).count()
        manifest = meta | {"format": "skyvote-similarity/1", "counts": counts, "files": {}}
        with zipfile.ZipFile(path, "w", allowZip64=True) as zf:
            for name, _columns, _chunks in parts:
                manifest["files"][name] = zip_add_file(zf, name, workdir / name, deflate=True)
            zf.writestr("manifest.json", json.dumps(manifest, indent=2, default=str), zipfile.ZIP_DEFLATED)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"rows": counts["choices.csv"], **meta}


@register_exporter
class SimilarityExporter(Exporter):
    identifier = "similarity"
    verbose_name = "Similarity choices and pair counts"
    formats = ("zip",)
    workflow_kind = Workflow.SIMILARITY

    def available(self, project) -> bool:
        return project.workflows.filter(kind=Workflow.SIMILARITY).exists()

    def run(self, project, target, fmt, *, workflow, params, progress=None) -> dict:
        include_worker_ids = bool(params.get("include_worker_ids"))
        return export_similarity(
            project, target, workflow=workflow, include_worker_ids=include_worker_ids, progress=progress
        )
