from django.db import migrations

# Where each model that left `labeling` lives now.
MOVED = {
    "project": "core",
    "projectmembership": "core",
    "workflow": "core",
    "subjectset": "core",
    "subject": "core",
    "participant": "core",
    "modelversion": "core",
    "apitoken": "core",
    "job": "jobs",
    "batch": "panels",
    "assignment": "panels",
}


def forwards(apps, schema_editor):
    """The moved models keep their content types, so permissions granted on them and the admin's history
    of their objects still apply. A content type already created for the new app (by a post_migrate run
    in between) is left alone, and so is the old one then."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model, app_label in MOVED.items():
        if ContentType.objects.filter(app_label=app_label, model=model).exists():
            continue
        ContentType.objects.filter(app_label="labeling", model=model).update(app_label=app_label)


def backwards(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model, app_label in MOVED.items():
        if ContentType.objects.filter(app_label="labeling", model=model).exists():
            continue
        ContentType.objects.filter(app_label=app_label, model=model).update(app_label="labeling")


class Migration(migrations.Migration):
    """Content types follow the models that moved to core, jobs and panels."""

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("labeling", "0002_models_moved_out"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
