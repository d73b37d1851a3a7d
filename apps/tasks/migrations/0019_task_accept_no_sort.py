"""``tasks_task_accept`` plans its queue-head read on ``task_tenant_queued`` whatever the
statistics say (issue 15, P1).

The function reads the tenant's queue head with ``ORDER BY tenant_seq LIMIT 1``. Only the
partial index ``task_tenant_queued`` returns those rows in that order; ``task_queue`` (status,
mode, submitted_at) also matches the WHERE clause, but needs a sort of every queued row of the
mode. When the table's statistics are older than its queue (a new database, a burst after a
quiet spell: autoanalyze runs a minute or more later), the planner believes few rows are queued,
takes ``task_queue`` and each submit then reads and sorts the whole queue: in
``bench/submit.py`` PostgreSQL's CPU per submit rose with the queue (33 ms of one submit at
56,000 queued). With sorting off for the function's statements (``SET`` on the function, so it
applies to them alone and is restored when the call returns) the sort costs the planner more
than any path that needs none, so the head is one index entry however stale the statistics;
no statement of the function (nor the ledger's hold it calls) needs a sort otherwise.
"""

from django.db import migrations

SIGNATURE = "tasks_task_accept(jsonb, boolean, boolean, bigint, text, text, bigint, timestamptz)"


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER FUNCTION {SIGNATURE} SET enable_sort = off", params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER FUNCTION {SIGNATURE} RESET enable_sort", params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0018_task_accept_function"),
    ]

    operations = [migrations.RunPython(forward, backward)]
