"""A task hook that answered 410 Gone, recorded for its chain (the task and the hook's target).

Depends on the first migrations of ``accounts`` and ``tasks`` that hold the rows it refers to,
not on their newest: some ``tasks`` migrations depend on this app's.
"""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_seed_tiers"),
        ("tasks", "0001_initial"),
        ("webhooks", "0004_finished_index"),
    ]

    operations = [
        migrations.CreateModel(
            name="WebhookGoneHook",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "target_key",
                    models.CharField(help_text="The hook's target (URL hash).", max_length=80),
                ),
                ("gone_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "organization",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="accounts.organization",
                    ),
                ),
                (
                    "task",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="tasks.task",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("task", "target_key"), name="webhook_gone_hook_once"
                    )
                ],
            },
        ),
    ]
