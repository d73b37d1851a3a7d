"""The organization's running count of unfinished tasks, kept by a trigger on the task table.

Every INSERT, DELETE and status change of a task adjusts ``accounts_organization.
unfinished_tasks`` in the same transaction, whoever makes it (the submit, the lifecycle, the
sweeper, an operator, a bulk load), so the tier check reads one column of the row it already
locks instead of counting. The initial value is computed under a lock of the task table.
"""

from typing import Any

from django.db import migrations

UNFINISHED = "('NOT_START', 'SUBMITTED', 'IN_PROGRESS')"

FORWARD = [
    f"""CREATE OR REPLACE FUNCTION tasks_task_unfinished_counter() RETURNS trigger AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status IN {UNFINISHED} THEN
        UPDATE accounts_organization SET unfinished_tasks = unfinished_tasks - 1
        WHERE id = OLD.organization_id;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') AND NEW.status IN {UNFINISHED} THEN
        UPDATE accounts_organization SET unfinished_tasks = unfinished_tasks + 1
        WHERE id = NEW.organization_id;
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql""",
    f"""CREATE TRIGGER tasks_task_unfinished_insert AFTER INSERT ON tasks_task
    FOR EACH ROW WHEN (NEW.status IN {UNFINISHED})
    EXECUTE FUNCTION tasks_task_unfinished_counter()""",
    f"""CREATE TRIGGER tasks_task_unfinished_delete AFTER DELETE ON tasks_task
    FOR EACH ROW WHEN (OLD.status IN {UNFINISHED})
    EXECUTE FUNCTION tasks_task_unfinished_counter()""",
    f"""CREATE TRIGGER tasks_task_unfinished_update AFTER UPDATE OF status, organization_id ON tasks_task
    FOR EACH ROW WHEN (
        (OLD.status IN {UNFINISHED}) IS DISTINCT FROM (NEW.status IN {UNFINISHED})
        OR (OLD.organization_id IS DISTINCT FROM NEW.organization_id
            AND (OLD.status IN {UNFINISHED} OR NEW.status IN {UNFINISHED}))
    )
    EXECUTE FUNCTION tasks_task_unfinished_counter()""",
    "LOCK TABLE tasks_task IN SHARE MODE",
    f"""UPDATE accounts_organization AS o SET unfinished_tasks = COALESCE(
        (SELECT COUNT(*) FROM tasks_task AS t
         WHERE t.organization_id = o.id AND t.status IN {UNFINISHED}), 0)""",
]

SQLITE_FORWARD = [
    f"""CREATE TRIGGER tasks_task_unfinished_insert AFTER INSERT ON tasks_task
    FOR EACH ROW WHEN NEW.status IN {UNFINISHED} BEGIN
        UPDATE accounts_organization SET unfinished_tasks = unfinished_tasks + 1
        WHERE id = NEW.organization_id;
    END""",
    f"""CREATE TRIGGER tasks_task_unfinished_delete AFTER DELETE ON tasks_task
    FOR EACH ROW WHEN OLD.status IN {UNFINISHED} BEGIN
        UPDATE accounts_organization SET unfinished_tasks = unfinished_tasks - 1
        WHERE id = OLD.organization_id;
    END""",
    f"""CREATE TRIGGER tasks_task_unfinished_update AFTER UPDATE OF status, organization_id
    ON tasks_task FOR EACH ROW BEGIN
        UPDATE accounts_organization SET unfinished_tasks = unfinished_tasks - 1
        WHERE id = OLD.organization_id AND OLD.status IN {UNFINISHED};
        UPDATE accounts_organization SET unfinished_tasks = unfinished_tasks + 1
        WHERE id = NEW.organization_id AND NEW.status IN {UNFINISHED};
    END""",
    f"""UPDATE accounts_organization SET unfinished_tasks = COALESCE(
        (SELECT COUNT(*) FROM tasks_task AS t
         WHERE t.organization_id = accounts_organization.id AND t.status IN {UNFINISHED}), 0)""",
]

SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS tasks_task_unfinished_update",
    "DROP TRIGGER IF EXISTS tasks_task_unfinished_delete",
    "DROP TRIGGER IF EXISTS tasks_task_unfinished_insert",
]

BACKWARD = [
    "DROP TRIGGER IF EXISTS tasks_task_unfinished_update ON tasks_task",
    "DROP TRIGGER IF EXISTS tasks_task_unfinished_delete ON tasks_task",
    "DROP TRIGGER IF EXISTS tasks_task_unfinished_insert ON tasks_task",
    "DROP FUNCTION IF EXISTS tasks_task_unfinished_counter()",
]


def _run(schema_editor: Any, postgresql: list[str], sqlite: list[str]) -> None:
    postgres = schema_editor.connection.vendor == "postgresql"
    for statement in postgresql if postgres else sqlite:
        schema_editor.execute(statement, params=None)


def forward(apps: Any, schema_editor: Any) -> None:
    _run(schema_editor, FORWARD, SQLITE_FORWARD)


def backward(apps: Any, schema_editor: Any) -> None:
    _run(schema_editor, BACKWARD, SQLITE_BACKWARD)


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0005_error_codes_fast_hours_verification"),
        ("accounts", "0003_organization_unfinished_tasks"),
    ]

    operations = [migrations.RunPython(forward, backward)]
