"""Indexes of columns a new task leaves empty hold only the rows that have a value (issue 15,
P1): the upstream account (with status), the parent, the user and the finish time. A submit
wrote a NULL entry into each of them, and so did every status change before the value was set
(a change of status writes every index of the row). Every query of these columns compares them
with a value (``=``, ``IN``, ``>=``), which the planner knows excludes NULL, so the partial
indexes serve the same queries. Creating them reads the task table once each (a lock against
writes meanwhile).
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_own_accounts_tier"),
        ("api_keys", "0003_api_key_pool"),
        ("engines", "0004_upstream_account_owner"),
        ("tasks", "0019_task_accept_no_sort"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="task",
            name="task_account_status",
        ),
        migrations.RemoveIndex(
            model_name="task",
            name="task_finished",
        ),
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
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                condition=models.Q(("upstream_account__isnull", False)),
                fields=["upstream_account", "status"],
                name="task_account_status",
            ),
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                condition=models.Q(("parent__isnull", False)), fields=["parent"], name="task_parent"
            ),
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                condition=models.Q(("created_by__isnull", False)),
                fields=["created_by"],
                name="task_created_by",
            ),
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                condition=models.Q(("finished_at__isnull", False)),
                fields=["finished_at"],
                name="task_finished",
            ),
        ),
    ]
