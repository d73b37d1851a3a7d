"""Indexes for the operator admin: its newest-first task list and the stats page's time ranges.

On PostgreSQL they are built CONCURRENTLY: the tasks table is the busiest and largest one, and a
plain CREATE INDEX would block every submit until it finished.
"""

from django.db import migrations, models


class AddIndexOnline(migrations.AddIndex):
    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            schema_editor.add_index(model, self.index, concurrently=True)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            schema_editor.remove_index(model, self.index, concurrently=True)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ('tasks', '0002_bannedword_task_poll_token_task_submit_claimed_at'),
    ]

    operations = [
        AddIndexOnline(
            model_name='task',
            index=models.Index(fields=['created_at'], name='task_created'),
        ),
        AddIndexOnline(
            model_name='task',
            index=models.Index(fields=['finished_at'], name='task_finished'),
        ),
    ]
