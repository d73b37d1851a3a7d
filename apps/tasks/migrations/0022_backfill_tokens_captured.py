"""``tokens_captured`` for the tasks that succeeded before ``0021`` recorded it: what the
ledger's capture entry took (``-delta_held``), or 0 for a success that captured nothing (a test
key's task holds nothing), as ``lifecycle._settle`` writes it since. Without it such a task
decided its charge when read: a deleted own account turned its platform fee into the price.

In batches of :data:`BATCH` tasks, each in its own short transaction (the migration is not
atomic), so a large table is never locked at once; the tasks are walked by primary key and each
batch reads its capture entries by the ledger's task index. Running it again changes nothing.
"""

from django.db import migrations, models, transaction

BATCH = 2000


def backfill(apps, schema_editor):
    Task = apps.get_model("tasks", "Task")
    LedgerEntry = apps.get_model("billing", "LedgerEntry")
    missing = Task.objects.filter(status="SUCCESS", tokens_captured__isnull=True).order_by("pk")
    after = None
    while True:
        page = missing if after is None else missing.filter(pk__gt=after)
        ids = list(page.values_list("pk", flat=True)[:BATCH])
        if not ids:
            return
        with transaction.atomic():
            captured = dict(
                LedgerEntry.objects.filter(task_id__in=ids, kind="capture").values_list(
                    "task_id", "delta_held"
                )
            )
            rows = list(Task.objects.filter(pk__in=ids, tokens_captured__isnull=True).only("pk"))
            for task in rows:
                task.tokens_captured = -captured.get(task.pk, 0)
            Task.objects.bulk_update(rows, ["tokens_captured"])
        after = ids[-1]


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("tasks", "0021_task_tokens_captured"),
        ("billing", "0010_partial_indexes"),
    ]

    operations = [
        migrations.RunPython(backfill, migrations.RunPython.noop, elidable=True),
        migrations.AlterField(
            model_name="task",
            name="tokens_captured",
            field=models.PositiveBigIntegerField(
                blank=True,
                help_text="Tokens the ledger captured when it succeeded, written in the "
                "capture's transaction (empty until then).",
                null=True,
            ),
        ),
    ]
