"""The hold of a task as a server-side function, ``ledger_task_hold`` (issue 15, P1).

The ledger's own statement for a task's hold (``apps.billing.ledger.ledger_hold``): a
conditional ``UPDATE … RETURNING`` of the balance (enough available, no hold of this task yet)
feeding the ledger row's ``INSERT``. It lives in the database so the submit's one-statement
acceptance (``tasks_task_accept``, migration ``tasks.0018``) can call it: the money still moves
only through this ledger statement, and ``ledger_hold`` calls the same function. A hold that
moves nothing returns no row; the ledger's general path then answers exactly (the earlier
entry, or too little available). PL/pgSQL, so its plan is cached per connection.
"""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION ledger_task_hold(
    p_organization bigint, p_amount bigint, p_key text, p_kind text, p_task text,
    p_now timestamptz
) RETURNS TABLE (hold_id bigint, hold_available bigint, hold_held bigint)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH moved AS (
        UPDATE billing_balance AS b
        SET available = b.available - p_amount, held = b.held + p_amount, updated_at = p_now
        WHERE b.organization_id = p_organization AND b.available >= p_amount
          AND NOT EXISTS (
            SELECT 1 FROM billing_ledgerentry AS l
            WHERE l.organization_id = p_organization AND l.idempotency_key = p_key
          )
        RETURNING b.available, b.held
    )
    INSERT INTO billing_ledgerentry AS e (
        organization_id, kind, delta_available, delta_held, available_after, held_after,
        idempotency_key, task_id, stripe_object_id, operator_id, reason, created_at
    )
    SELECT p_organization, p_kind, -p_amount, p_amount, moved.available, moved.held,
           p_key, p_task, '', NULL, '', p_now
    FROM moved
    RETURNING e.id, e.available_after, e.held_after;
END
$$
"""

BACKWARD = "DROP FUNCTION IF EXISTS ledger_task_hold(bigint, bigint, text, text, text, timestamptz)"


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD, params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD, params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0008_own_account_fees"),
    ]

    operations = [migrations.RunPython(forward, backward)]
