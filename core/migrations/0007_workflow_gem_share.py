import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0006_workflow_builder"),
    ]

    operations = [
        migrations.AddField(
            model_name="workflow",
            name="gem_share",
            field=models.FloatField(
                default=0.05,
                help_text="Share of volunteers' subjects drawn from the top rare-gem candidates (0 to 0.5).",
                validators=[
                    django.core.validators.MinValueValidator(0.0),
                    django.core.validators.MaxValueValidator(0.5),
                ],
            ),
        ),
    ]
