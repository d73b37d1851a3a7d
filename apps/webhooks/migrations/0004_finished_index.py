"""The retention purge's index: finished messages by finish time.

Built CONCURRENTLY on PostgreSQL: the outbox is written by every task change, and a plain
CREATE INDEX would block them until it finished.
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
        ("webhooks", "0003_progress_coalescing_and_retention"),
    ]

    operations = [
        AddIndexOnline(
            model_name="webhookevent",
            index=models.Index(
                condition=~models.Q(state="pending"),
                fields=["finished_at"],
                name="whev_finished",
            ),
        ),
    ]
