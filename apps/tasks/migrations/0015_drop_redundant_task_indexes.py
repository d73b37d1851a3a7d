"""Drop the task table's indexes that no query needs (issue 15: each insert and each status
change writes every index). Their columns stay indexed where queries use them: organization
and status by the composite indexes that start with them, the upstream account by
task_account_status. The ``…_like`` copies (varchar_pattern_ops, for LIKE 'abc%') of the id,
parent, engine and upstream job id serve no query; Django does not track them in its state.
"""

import django.db.models.deletion
from django.db import migrations, models


#: Created by Django for indexed varchar columns on PostgreSQL (names from its 0001 schema).
_LIKE_INDEXES = [
    ("tasks_task_id_9d65e96a_like", "id"),
    ("tasks_task_parent_id_ee6a2001_like", "parent_id"),
    ("tasks_task_engine_8b9b4d17_like", "engine"),
    ("tasks_task_upstream_job_id_44662c10_like", "upstream_job_id"),
]


def _drop_like_indexes(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name, _ in _LIKE_INDEXES:
            schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


def _create_like_indexes(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name, column in _LIKE_INDEXES:
            schema_editor.execute(
                f"CREATE INDEX IF NOT EXISTS {name} ON tasks_task ({column} varchar_pattern_ops)"
            )


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0003_organization_unfinished_tasks'),
        ('engines', '0003_sandboxjob_per_account'),
        ('tasks', '0014_tenant_queue'),
    ]

    operations = [
        migrations.RunPython(_drop_like_indexes, _create_like_indexes, elidable=True),
        migrations.AlterField(
            model_name='task',
            name='is_test',
            field=models.BooleanField(default=False),
        ),
        migrations.AlterField(
            model_name='task',
            name='organization',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='tasks', to='accounts.organization'),
        ),
        migrations.AlterField(
            model_name='task',
            name='status',
            field=models.CharField(choices=[('NOT_START', 'Queued'), ('SUBMITTED', 'Submitted'), ('IN_PROGRESS', 'In progress'), ('MODAL', 'Waiting for input'), ('SUCCESS', 'Succeeded'), ('FAILURE', 'Failed'), ('CANCEL', 'Cancelled')], default='NOT_START', max_length=16),
        ),
        migrations.AlterField(
            model_name='task',
            name='upstream_account',
            field=models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='tasks', to='engines.upstreamaccount'),
        ),
    ]
