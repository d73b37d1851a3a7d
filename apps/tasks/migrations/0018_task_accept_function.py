"""The submit's acceptance as one server-side function, ``tasks_task_accept`` (issue 15, P1).

What ``apps.tasks.services.acceptance`` did in four statements inside a transaction (the
organization's row lock with the tier figures, the tenant's queue number and queue head, the
INSERT, the hold) in one: called outside a transaction it is also its own transaction, so a
submit costs one round trip to PostgreSQL instead of BEGIN, three statements and COMMIT.

``p_row`` is the task's row as JSON (every column); ``p_alone``: refuse (outcome
``endpoints``, nothing written) when the organization has an enabled webhook endpoint, whose
outbox rows Python writes in the accepting transaction. Outcomes: ``accepted``, ``limit``
(the tier's limit of unfinished tasks is reached; nothing written), ``endpoints``,
``missing`` (no such organization). With ``p_hold`` the task's price is held through the
ledger's own function ``ledger_task_hold`` (migration ``billing.0009``); a hold that moves
nothing, or one that takes the balance below ``p_low_threshold`` (the ``balance.low`` event
is written in the accepting transaction), raises SQLSTATE ``MJ001`` and everything rolls back:
the caller then takes the transaction path, where the ledger answers exactly (too little
available) and publishes what it publishes.

The organization row is locked ``FOR NO KEY UPDATE OF o`` (submits of one organization queue
on it; the ledger's and foreign keys' KEY SHARE locks do not); the tenant's queue counter is
bumped under it. The queued status is written as a literal so the cached plan of the queue
head reads the partial index ``task_tenant_queued``.
"""

from django.db import migrations

#: The tenant's queue head in the pool: its smallest queued number (``{...}``: the values).
QUEUE_HEAD = (
    "SELECT q.tenant_seq FROM tasks_task q"
    " WHERE q.status = 'NOT_START' AND q.mode = {mode} AND q.is_test = {is_test}"
    " AND q.organization_id = {organization} AND q.tenant_seq IS NOT NULL"
    " ORDER BY q.tenant_seq LIMIT 1"
)

FORWARD = f"""
CREATE OR REPLACE FUNCTION tasks_task_accept(
    p_row jsonb, p_alone boolean, p_hold boolean, p_hold_amount bigint, p_hold_key text,
    p_hold_kind text, p_low_threshold bigint, p_now timestamptz
) RETURNS TABLE (
    outcome text, unfinished integer, max_unfinished integer, tier_name text,
    tier_code text, seq bigint, queue_head bigint, has_endpoints boolean
)
LANGUAGE plpgsql AS $$
DECLARE
    v_org bigint := (p_row ->> 'organization_id')::bigint;
    v_mode text := p_row ->> 'mode';
    v_is_test boolean := (p_row ->> 'is_test')::boolean;
    v_unfinished integer;
    v_limit integer;
    v_name text;
    v_code text;
    v_endpoints boolean;
    v_seq bigint;
    v_head bigint;
    v_available bigint;
BEGIN
    SELECT o.unfinished_tasks, t.max_unfinished_tasks, t.name, t.code,
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
    IF p_alone AND v_endpoints THEN
        RETURN QUERY SELECT 'endpoints', v_unfinished, v_limit, v_name, v_code,
                            NULL::bigint, NULL::bigint, v_endpoints;
        RETURN;
    END IF;
    IF v_unfinished >= v_limit THEN
        RETURN QUERY SELECT 'limit', v_unfinished, v_limit, v_name, v_code,
                            NULL::bigint, NULL::bigint, v_endpoints;
        RETURN;
    END IF;
    INSERT INTO tasks_tenantqueuecounter AS c (organization_id, mode, is_test, last)
    VALUES (v_org, v_mode, v_is_test, 1)
    ON CONFLICT (organization_id, mode, is_test) DO UPDATE SET last = c.last + 1
    RETURNING c.last INTO v_seq;
    {QUEUE_HEAD.format(mode="v_mode", is_test="v_is_test", organization="v_org")}
      INTO v_head;
    INSERT INTO tasks_task
    SELECT * FROM jsonb_populate_record(
        NULL::tasks_task, p_row || jsonb_build_object('tenant_seq', v_seq)
    );
    IF p_hold THEN
        SELECT h.hold_available INTO v_available FROM ledger_task_hold(
            v_org, p_hold_amount, p_hold_key, p_hold_kind, p_row ->> 'id', p_now
        ) h;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'the hold of task % moved nothing', p_row ->> 'id'
                USING ERRCODE = 'MJ001';
        END IF;
        IF p_low_threshold > 0 AND v_available + p_hold_amount >= p_low_threshold
           AND p_low_threshold > v_available THEN
            RAISE EXCEPTION 'the hold of task % takes the balance below its threshold',
                p_row ->> 'id' USING ERRCODE = 'MJ001';
        END IF;
    END IF;
    RETURN QUERY SELECT 'accepted', v_unfinished, v_limit, v_name, v_code, v_seq, v_head,
                        v_endpoints;
END
$$
"""  # noqa: S608 - our table names and literals; every value a parameter

BACKWARD = (
    "DROP FUNCTION IF EXISTS tasks_task_accept(jsonb, boolean, boolean, bigint, text, text,"
    " bigint, timestamptz)"
)


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD, params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD, params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0017_drop_pool_queue_numbers"),
        ("billing", "0009_ledger_task_hold_function"),
        ("accounts", "0003_organization_unfinished_tasks"),
        ("webhooks", "0004_finished_index"),
    ]

    operations = [migrations.RunPython(forward, backward)]
