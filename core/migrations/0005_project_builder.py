"""The project builder: a project's lifecycle, descriptions, cover, licence and contact; invitations;
the role "collaborator" renamed "scientist". Existing projects were all open for votes, so they
become live (the field's default)."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

import core.models

ROLE_CHOICES = [
    ("owner", "Owner"),
    ("scientist", "Scientist"),
    ("viewer", "Viewer (dashboards and exports)"),
    ("expert", "Expert (gold labels and the review queue)"),
]


def rename_role(old, new):
    def run(apps, schema_editor):
        membership = apps.get_model("core", "ProjectMembership")
        membership.objects.filter(role=old).update(role=new)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0004_workflow_light_curve_and_model_input"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="project",
            name="contact",
            field=models.CharField(
                blank=True,
                help_text="Who to contact or cite: a name, an e-mail address or a URL.",
                max_length=200,
            ),
        ),
        migrations.AddField(
            model_name="project",
            name="cover_image",
            field=models.ImageField(
                blank=True,
                max_length=300,
                storage=core.models.cover_storage,
                upload_to=core.models.cover_upload_path,
            ),
        ),
        migrations.AddField(
            model_name="project",
            name="licence",
            field=models.CharField(
                choices=[
                    ("CC-BY-4.0", "Creative Commons Attribution 4.0 (CC-BY-4.0)"),
                    ("CC-BY-SA-4.0", "Creative Commons Attribution-ShareAlike 4.0 (CC-BY-SA-4.0)"),
                    ("CC-BY-NC-4.0", "Creative Commons Attribution-NonCommercial 4.0 (CC-BY-NC-4.0)"),
                    ("CC0-1.0", "Creative Commons Zero 1.0 (public domain) (CC0-1.0)"),
                    ("ODC-By-1.0", "Open Data Commons Attribution 1.0 (ODC-By-1.0)"),
                    ("ODbL-1.0", "Open Data Commons Open Database License 1.0 (ODbL-1.0)"),
                    (
                        "CDLA-Permissive-2.0",
                        "Community Data License Agreement – Permissive 2.0 (CDLA-Permissive-2.0)",
                    ),
                ],
                default="CC-BY-4.0",
                help_text="The licence of the project's labels: every export and training bundle carries it.",
                max_length=40,
            ),
        ),
        migrations.AddField(
            model_name="project",
            name="long_description",
            field=models.TextField(
                blank=True, help_text="Markdown: the science, what volunteers do, who is behind it."
            ),
        ),
        migrations.AddField(
            model_name="project",
            name="status",
            field=models.CharField(
                choices=[
                    ("draft", "Draft: only members see it"),
                    ("live", "Live: volunteers classify"),
                    ("paused", "Paused: no new votes for now"),
                    ("finished", "Finished: read-only, exports still work"),
                ],
                default="live",
                max_length=10,
            ),
        ),
        migrations.AddField(
            model_name="project",
            name="status_changed_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="project",
            name="description",
            field=models.TextField(blank=True, help_text="A short description: one or two sentences."),
        ),
        migrations.AlterField(
            model_name="projectmembership",
            name="role",
            field=models.CharField(choices=ROLE_CHOICES, max_length=20),
        ),
        migrations.RunPython(
            rename_role("collaborator", "scientist"), rename_role("scientist", "collaborator")
        ),
        migrations.CreateModel(
            name="Invitation",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("email", models.EmailField(max_length=254)),
                ("role", models.CharField(choices=ROLE_CHOICES[1:], max_length=20)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("accepted_at", models.DateTimeField(blank=True, null=True)),
                (
                    "accepted_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "invited_by",
                    models.ForeignKey(
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "project",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="invitations",
                        to="core.project",
                    ),
                ),
            ],
        ),
    ]
