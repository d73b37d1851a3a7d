# The pool-wide queue numbers (0007) gave way to per-tenant ones (0014, the fair queue
# position): the column, its index and the six sequences go. The tenant queue's index leads
# with the fair pick's columns now, so the pick keeps reading task_queued_fair.

from typing import Any

from django.db import migrations, models

MODES = ("FAST", "RELAX", "TURBO")


def _sequences() -> list[str]:
    return [
        f"tasks_queue_{mode.lower()}_{'test' if is_test else 'live'}"
        for mode in MODES
        for is_test in (False, True)
    ]


def drop_sequences(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in _sequences():
        schema_editor.execute(f"DROP SEQUENCE IF EXISTS {name}", params=None)


def create_sequences(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in _sequences():
        schema_editor.execute(f"CREATE SEQUENCE IF NOT EXISTS {name}", params=None)


class Migration(migrations.Migration):

    dependencies = [
        ("tasks", "0016_task_pool"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="task",
            name="task_queue_head",
        ),
        migrations.RemoveField(
            model_name="task",
            name="queue_seq",
        ),
        migrations.RunPython(drop_sequences, create_sequences),
        migrations.RemoveIndex(
            model_name="task",
            name="task_tenant_queue",
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                condition=models.Q(("status", "NOT_START"), ("tenant_seq__isnull", False)),
                fields=["organization", "is_test", "mode", "tenant_seq"],
                name="task_tenant_queued",
            ),
        ),
    ]
