"""What the operator's refund of a task gave back (``apps.billing.ledger.ledger_refund_task``),
written in the refund's transaction: ``Task.tokens_charged`` (TTAPI's ``quota``, the dashboard)
subtracts it, so a refunded task no longer shows the price it was first charged.

A nullable column with no default: the table is not rewritten, and ``tasks_task_accept``
(``0018``) needs no change: it inserts ``jsonb_populate_record(NULL::tasks_task, row)``, whose
record type is the table's (this column included), and the row Python sends has every concrete
column (this one as null); a key missing from it (a process still running the code before this
migration) would be null too.

Then the tasks refunded before: their refund entries (``task:<id>:refund``, kind ``refund``,
an operator's action, so few) are read by the ledger's kind index and copied onto their tasks.
Not atomic: the column is added (a short lock of the task table) and committed before the copy
runs in a transaction of its own, so the lock is not held meanwhile. Running it again changes
nothing.
"""

from django.db import migrations, models, transaction

BATCH = 2000


def backfill(apps, schema_editor):
    Task = apps.get_model("tasks", "Task")
    LedgerEntry = apps.get_model("billing", "LedgerEntry")
    refunds = (
        LedgerEntry.objects.filter(kind="refund", task__isnull=False, delta_available__gt=0)
        .order_by("pk")
        .values_list("pk", "task_id", "idempotency_key", "delta_available")
    )
    after = 0
    while True:
        rows = list(refunds.filter(pk__gt=after)[:BATCH])
        if not rows:
            return
        with transaction.atomic():
            for _, task_id, key, amount in rows:
                if key == f"task:{task_id}:refund":
                    Task.objects.filter(pk=task_id, tokens_refunded__isnull=True).update(
                        tokens_refunded=amount
                    )
        after = rows[-1][0]


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("tasks", "0023_task_accept_fresh_endpoints"),
        ("billing", "0011_balance_clawback_pending"),
    ]

    operations = [
        migrations.AddField(
            model_name="task",
            name="tokens_refunded",
            field=models.PositiveBigIntegerField(
                blank=True,
                help_text="Tokens given back by the operator's refund of this task, written in "
                "the refund's transaction (empty when it was not refunded).",
                null=True,
            ),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop, elidable=True),
    ]
