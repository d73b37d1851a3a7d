"""``tasks_task_accept`` reads the organization's webhook endpoints after its row lock.

``0018`` read "has an enabled endpoint" in the statement that locks the organization row. Under
READ COMMITTED a statement reads with the snapshot it took before it waited for the lock, so a
submit queued behind ``endpoint_create`` (which holds the same lock while it inserts the
endpoint) read the endpoint as missing once it had the lock, and was accepted without an outbox
row: the new endpoint never got that task's ``task.created``. Each statement of a PL/pgSQL
function takes a fresh snapshot, so the endpoints are now read by a statement of their own,
after the lock. The function keeps ``enable_sort = off`` (``0019``), which a replaced
definition would otherwise drop.
"""

import importlib

from django.db import migrations

SIGNATURE = "tasks_task_accept(jsonb, boolean, boolean, bigint, text, text, bigint, timestamptz)"

_LOCK_WITH_ENDPOINTS = """    SELECT o.unfinished_tasks, t.max_unfinished_tasks, t.name, t.code,
           EXISTS (SELECT 1 FROM webhooks_webhookendpoint e
                   WHERE e.organization_id = o.id AND e.is_enabled)
      INTO v_unfinished, v_limit, v_name, v_code, v_endpoints
      FROM accounts_organization o JOIN accounts_membershiptier t ON t.id = o.tier_id
     WHERE o.id = v_org
       FOR NO KEY UPDATE OF o;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'missing', NULL::integer, NULL::integer, NULL::text, NULL::text,
                            NULL::bigint, NULL::bigint, NULL::boolean;
        RETURN;
    END IF;
"""

_LOCK_THEN_ENDPOINTS = """    SELECT o.unfinished_tasks, t.max_unfinished_tasks, t.name, t.code
      INTO v_unfinished, v_limit, v_name, v_code
      FROM accounts_organization o JOIN accounts_membershiptier t ON t.id = o.tier_id
     WHERE o.id = v_org
       FOR NO KEY UPDATE OF o;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'missing', NULL::integer, NULL::integer, NULL::text, NULL::text,
                            NULL::bigint, NULL::bigint, NULL::boolean;
        RETURN;
    END IF;
    -- A statement of its own, after the lock: its snapshot sees an endpoint committed by the
    -- transaction this submit waited for.
    SELECT EXISTS (SELECT 1 FROM webhooks_webhookendpoint e
                   WHERE e.organization_id = v_org AND e.is_enabled)
      INTO v_endpoints;
"""


def _definition(old: bool) -> str:
    """``0018``'s definition, or it with the endpoints read after the lock."""
    previous = importlib.import_module("apps.tasks.migrations.0018_task_accept_function").FORWARD
    if _LOCK_WITH_ENDPOINTS not in previous:  # pragma: no cover - 0018 is history
        raise RuntimeError("tasks.0018's tasks_task_accept is not the one this replaces")
    return previous if old else previous.replace(_LOCK_WITH_ENDPOINTS, _LOCK_THEN_ENDPOINTS)


def _replace(schema_editor, *, old: bool) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(_definition(old), params=None)
    # CREATE OR REPLACE keeps no setting of the definition it replaces.
    schema_editor.execute(f"ALTER FUNCTION {SIGNATURE} SET enable_sort = off", params=None)


def forward(apps, schema_editor):
    _replace(schema_editor, old=False)


def backward(apps, schema_editor):
    _replace(schema_editor, old=True)


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0022_backfill_tokens_captured"),
        ("webhooks", "0004_finished_index"),
    ]

    operations = [migrations.RunPython(forward, backward)]
