"""The workflow builder: answers become objects, similarity settings, tutorial and field guide, and
subjects unique per subject set (not per project) so the same alert can feed two workflows.

Data: every workflow's answers, a list of strings, become objects with the same keys (votes store the
key, so they stay readable); subjects without a subject set go into a "default" set per workflow
(linked to it), as every ingest now gives its subjects a set.
"""

import django.db.models.deletion
from django.db import migrations, models

# A frozen copy of core.answers' defaults at the time of this migration.
KNOWN = {
    "real": ("Real", "R", "real"),
    "bogus": ("Bogus", "B", "bogus"),
    "not_sure": ("Not sure", "N", ""),
    "not-sure": ("Not sure", "N", ""),
    "unsure": ("Not sure", "U", ""),
}


def _object(key):
    key = str(key).strip().lower()
    label, shortcut, counts_as = KNOWN.get(
        key, (key.replace("_", " ").replace("-", " ").capitalize(), "", "")
    )
    return {"key": key, "label": label, "shortcut": shortcut, "help": "", "counts_as": counts_as}


def answers_to_objects(apps, schema_editor):
    Workflow = apps.get_model("core", "Workflow")
    for workflow in Workflow.objects.all():
        if any(isinstance(a, str) for a in workflow.answers or []):
            workflow.answers = [_object(a) if isinstance(a, str) else a for a in workflow.answers]
            workflow.save(update_fields=["answers"])


def answers_to_strings(apps, schema_editor):
    Workflow = apps.get_model("core", "Workflow")
    for workflow in Workflow.objects.all():
        if any(isinstance(a, dict) for a in workflow.answers or []):
            workflow.answers = [a["key"] if isinstance(a, dict) else a for a in workflow.answers]
            workflow.save(update_fields=["answers"])


def default_sets(apps, schema_editor):
    Subject = apps.get_model("core", "Subject")
    SubjectSet = apps.get_model("core", "SubjectSet")
    if schema_editor.connection.vendor == "postgresql":
        # Checked now rather than at commit: PostgreSQL refuses the ALTER TABLE that adds the new
        # constraint below while the updated rows' deferred foreign-key checks are pending.
        schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    pairs = (
        Subject.objects.filter(subject_set__isnull=True).values_list("project_id", "workflow_id").distinct()
    )
    for project_id, workflow_id in sorted(pairs, key=lambda p: (p[0], p[1] or 0)):
        found = SubjectSet.objects.filter(project_id=project_id, name="default")
        found = found.filter(workflows=workflow_id) if workflow_id else found.filter(workflows=None)
        subject_set = found.order_by("pk").first()
        if subject_set is None:
            subject_set = SubjectSet.objects.create(project_id=project_id, name="default")
            if workflow_id:
                subject_set.workflows.add(workflow_id)
        Subject.objects.filter(
            project_id=project_id, workflow_id=workflow_id, subject_set__isnull=True
        ).update(subject_set=subject_set)


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0005_project_builder"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="subject", name="subject_unique_external_id"),
        migrations.AddField(
            model_name="workflow",
            name="comparison_set",
            field=models.ForeignKey(
                blank=True,
                help_text="Similarity: comparison images come from this set (with the 'subject set' source).",
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="core.subjectset",
            ),
        ),
        migrations.AddField(
            model_name="workflow",
            name="comparison_source",
            field=models.CharField(
                choices=[
                    ("pool", "Any subject of the workflow (least compared first)"),
                    ("subject_set", "Subjects of one subject set"),
                ],
                default="pool",
                max_length=20,
            ),
        ),
        migrations.AddField(
            model_name="workflow", name="field_guide", field=models.JSONField(blank=True, default=list)
        ),
        migrations.AddField(
            model_name="workflow",
            name="n_candidates",
            field=models.PositiveSmallIntegerField(
                default=15, help_text="Similarity: candidate images shown beside each comparison image."
            ),
        ),
        migrations.AddField(
            model_name="workflow", name="tutorial", field=models.JSONField(blank=True, default=list)
        ),
        migrations.RunPython(answers_to_objects, answers_to_strings),
        migrations.RunPython(default_sets, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="subject",
            constraint=models.UniqueConstraint(
                fields=("subject_set", "external_id"), name="subject_unique_external_id_per_set"
            ),
        ),
    ]
