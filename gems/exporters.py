"""The "gems" export: every subject of the latest succeeded anomaly run of each workflow, best gem
candidate first: anomaly scores per method, the combined weirdness, the gem score (as the Gems page
ranks now, ratings included), flags and their notes, ratings with who and when.

Raters are team members, not volunteers: they appear as a pseudonym of the project (as participants
do, from a separate namespace), never by user name. Notes are plain text; the CSV writer escapes
formulas (core.formats.csv_safe).
"""

from __future__ import annotations

from core.exporters import (
    Column,
    Exporter,
    Progress,
    base_meta,
    iso,
    project_workflows,
    register_exporter,
    write_table,
)
from core.models import Project, Subject
from gems import services
from gems.models import GemRating

CHUNK = 2000

COLUMNS = [
    Column("workflow", "str", "Workflow slug", 50),
    Column("rank", "int", "Gem rank in the workflow (1 = the best candidate)"),
    Column("subject_id", "int", "Subject id"),
    Column("external_id", "str", "Subject's external id (e.g. the ZTF candid)", 100),
    Column("iforest", "float", "Weirdness by isolation forest (0–1, 1 = weirdest)"),
    Column("knn", "float", "Weirdness by k-nearest-neighbour distance (0–1)"),
    Column("urf", "float", "Weirdness by unsupervised random forest (0–1)"),
    Column("weirdness", "float", "Combined weirdness (mean of the methods' ranks, 0–1)"),
    Column(
        "gem_score", "float", "Combined gem score: weirdness, skill-weighted flags, disagreement, ratings"
    ),
    Column("disagreement", "float", "|P(real) of the crowd − the model's score|"),
    Column("n_flags", "int", "Volunteers who flagged it as a rare gem"),
    Column("notes", "str", "Their notes, ' | ' between notes", 2000),
    Column("n_ratings", "int", "Team ratings"),
    Column("mean_rating", "float", "Mean team rating (0–5)"),
    Column("ratings", "str", "Each rating as 'rating by rater at time', '; ' between ratings", 2000),
    Column("run_id", "int", "Anomaly run the scores come from"),
]


def rater_pseudonym(project: Project, user_id: int) -> str:
    return project.pseudonym(f"member-{user_id}")


def _none(value):
    return None if value != value else float(value)  # NaN → missing


def gem_rows(project: Project, workflows):
    for workflow in workflows:
        table = services.gem_table(workflow)
        if table is None:
            continue
        order = table.order
        for begin in range(0, len(order), CHUNK):
            part = order[begin : begin + CHUNK]
            ids = [int(table.ids[r]) for r in part]
            external = dict(Subject.objects.filter(pk__in=ids).values_list("pk", "external_id"))
            notes = {k: [note for note, _ in v] for k, v in services.flag_notes(workflow, ids).items()}
            ratings: dict[int, list[str]] = {}
            for subject_id, value, user_id, when in (
                GemRating.objects.filter(workflow=workflow, subject_id__in=ids)
                .order_by("updated_at", "pk")
                .values_list("subject_id", "rating", "rated_by_id", "updated_at")
            ):
                ratings.setdefault(subject_id, []).append(
                    f"{value} by {rater_pseudonym(project, user_id)} at {iso(when)}"
                )
            rows = []
            for k, r in enumerate(part):
                subject_id = int(table.ids[r])
                rows.append(
                    (
                        workflow.slug,
                        begin + k + 1,
                        subject_id,
                        external.get(subject_id, ""),
                        *(_none(table.methods[name][r]) for name in services.METHODS),
                        float(table.weirdness[r]),
                        float(table.score[r]),
                        float(table.disagreement[r]),
                        int(table.n_flags[r]),
                        " | ".join(notes.get(subject_id, [])),
                        len(ratings.get(subject_id, [])),
                        _none(table.rating[r]),
                        "; ".join(ratings.get(subject_id, [])),
                        table.run.pk,
                    )
                )
            yield rows


@register_exporter
class GemsExporter(Exporter):
    identifier = "gems"
    verbose_name = "Rare-gem candidates"
    contents = "anomaly scores, gem score, flags, notes and ratings"
    formats = ("csv", "parquet")

    def run(self, project, target, fmt, *, workflow, params, progress=None) -> dict:
        workflows = project_workflows(project, workflow)
        total = sum(
            (services.latest_run(w).n_subjects if services.latest_run(w) is not None else 0)
            for w in workflows
        )
        tick = Progress(total, progress)
        meta = base_meta(project, "gems", workflow)
        rows = write_table(fmt, target, COLUMNS, gem_rows(project, workflows), meta, progress=tick)
        return {"rows": rows, **meta}
