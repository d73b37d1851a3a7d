"""Indexes of columns a new task leaves empty hold only the rows that have a value (issue 15,
P1): the upstream account (with status), the parent, the user and the finish time. A submit
wrote a NULL entry into each of them, and so did every status change before the value was set
(a change of status writes every index of the row). Every query of these columns compares them
with a value (``=``, ``IN``, ``>=``), which the planner knows excludes NULL, so the partial
indexes serve the same queries.

The indexes are built with ``CREATE INDEX CONCURRENTLY`` on PostgreSQL (``AddIndexWithoutLock``),
so a live task table keeps taking writes while they build; each new one exists before the index
it replaces is dropped (a replacement under the same name is built under a temporary one and
renamed), so no query runs without an index meanwhile. Not atomic, as ``CONCURRENTLY`` requires.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from apps.core.migration_ops import AddIndexWithoutLock, RemoveIndexWithoutLock


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("accounts", "0004_own_accounts_tier"),
        ("api_keys", "0003_api_key_pool"),
        ("engines", "0004_upstream_account_owner"),
        ("tasks", "0019_task_accept_no_sort"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        AddIndexWithoutLock(
            model_name="task",
            index=models.Index(
                condition=models.Q(("upstream_account__isnull", False)),
                fields=["upstream_account", "status"],
                name="task_account_status_partial",
            ),
        ),
        RemoveIndexWithoutLock(model_name="task", name="task_account_status"),
        migrations.RenameIndex(
            model_name="task",
            new_name="task_account_status",
            old_name="task_account_status_partial",
        ),
        AddIndexWithoutLock(
            model_name="task",
            index=models.Index(
                condition=models.Q(("finished_at__isnull", False)),
                fields=["finished_at"],
                name="task_finished_partial",
            ),
        ),
        RemoveIndexWithoutLock(model_name="task", name="task_finished"),
        migrations.RenameIndex(
            model_name="task", new_name="task_finished", old_name="task_finished_partial"
        ),
        AddIndexWithoutLock(
            model_name="task",
            index=models.Index(
                condition=models.Q(("parent__isnull", False)), fields=["parent"], name="task_parent"
            ),
        ),
        AddIndexWithoutLock(
            model_name="task",
            index=models.Index(
                condition=models.Q(("created_by__isnull", False)),
                fields=["created_by"],
                name="task_created_by",
            ),
        ),
        # The foreign keys' own indexes go last, once the partial ones serve their queries.
        migrations.AlterField(
            model_name="task",
            name="created_by",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="task",
            name="parent",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="children",
                to="tasks.task",
            ),
        ),
    ]
