"""What a succeeded task was charged, recorded in the capture's transaction: the task shows it
whatever happens to its upstream account later (a deleted own account no longer turns the
platform fee into the price). Tasks that succeeded before keep it empty and are read as before.

A nullable column with no default: the table is not rewritten, and ``tasks_task_accept``
(``0018``) needs no change: it inserts ``jsonb_populate_record(NULL::tasks_task, row)``, whose
record type is the table's (this column included), and the row Python sends has every concrete
column (this one as null); a key missing from it would be null too.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0020_partial_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="task",
            name="tokens_captured",
            field=models.PositiveBigIntegerField(
                blank=True,
                help_text="Tokens the ledger captured when it succeeded, written in the capture's transaction (empty until then, and for tasks that succeeded before it was recorded).",
                null=True,
            ),
        ),
    ]
