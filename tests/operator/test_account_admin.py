"""Upstream accounts in the admin: write-only credentials, enable/disable, health, live load."""

from __future__ import annotations

import json

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.engines.models import Health, UpstreamAccount
from apps.operator.models import AuditEntry
from apps.operator.services import CHANGED, REDACTED
from apps.tasks.enums import Action, Status
from apps.tasks.models import Task
from apps.tasks.scheduling import dispatch_pending
from apps.tasks.services.submit import task_submit
from tests.factories import TaskFactory
from tests.tasks.helpers import sandbox_account

from .conftest import admin_url

pytestmark = pytest.mark.django_db

SECRET = "zq-upstream-credential-4f1e9a"


def form(**overrides):
    data = {
        "name": "pool-1",
        "engine": "sandbox",
        "modes": ["FAST", "RELAX"],
        "concurrency": "4",
        "queue_size": "10",
        "run_timeout_seconds": "300",
        "options": '{"duration": 1}',
        "new_secrets": "",
    }
    data.update(overrides)
    return data


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_create_stores_credentials_encrypted_and_never_shows_them(operator, operator_client):
    response = operator_client.post(
        admin_url("engines_upstreamaccount_add"),
        form(new_secrets=json.dumps({"secret": SECRET})),
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    account = UpstreamAccount.objects.get()
    assert (account.name, account.engine, account.modes, account.concurrency) == (
        "pool-1",
        "sandbox",
        ["FAST", "RELAX"],
        4,
    )
    assert (account.options, account.secrets) == ({"duration": 1}, {"secret": SECRET})
    with connection.cursor() as cursor:
        cursor.execute("SELECT secrets FROM engines_upstreamaccount WHERE id = %s", [account.pk])
        stored = cursor.fetchone()[0]
    assert SECRET not in stored
    page = operator_client.get(admin_url("engines_upstreamaccount_change", account.pk))
    html = page.content.decode()
    assert SECRET not in html
    assert "secret (set)" in html
    assert 'name="new_secrets"' in html
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.action, entry.object_id) == (operator, "admin.add", str(account.pk))
    assert entry.after["secrets"] == CHANGED
    assert SECRET not in json.dumps(entry.after)


def test_a_secret_in_the_options_is_moved_to_the_credentials(operator_client):
    operator_client.post(
        admin_url("engines_upstreamaccount_add"),
        form(options=json.dumps({"duration": 1, "secret": SECRET})),
    )
    account = UpstreamAccount.objects.get()
    assert (account.options, account.secrets) == ({"duration": 1}, {"secret": SECRET})


def test_editing_without_credentials_keeps_them(operator, operator_client):
    account = sandbox_account("pool-1", secret=SECRET)
    response = operator_client.post(
        admin_url("engines_upstreamaccount_change", account.pk), form(concurrency="9")
    )
    assert response.status_code == 302
    account.refresh_from_db()
    assert (account.concurrency, account.secrets) == (9, {"secret": SECRET})
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.before, entry.after) == (
        "admin.change",
        {
            "concurrency": 3,
            "modes": ["FAST", "RELAX", "TURBO"],
            "options": {"duration": 0},
            "run_timeout_seconds": 600,
        },
        {
            "concurrency": 9,
            "modes": ["FAST", "RELAX"],
            "options": {"duration": 1},
            "run_timeout_seconds": 300,
        },
    )


def test_new_credentials_replace_the_stored_ones_and_clear_removes_them(operator_client):
    account = sandbox_account("pool-1", secret="old-one-xyz")
    url = admin_url("engines_upstreamaccount_change", account.pk)
    operator_client.post(url, form(new_secrets=json.dumps({"secret": SECRET})))
    account.refresh_from_db()
    assert account.secrets == {"secret": SECRET}
    entry = AuditEntry.objects.get()
    assert (entry.before["secrets"], entry.after["secrets"]) == (REDACTED, CHANGED)
    operator_client.post(url, form(clear_secrets="on"))
    account.refresh_from_db()
    assert account.secrets == {}


def test_invalid_credentials_are_refused_without_echoing_them(operator_client):
    account = sandbox_account("pool-1", secret=SECRET)
    response = operator_client.post(
        admin_url("engines_upstreamaccount_change", account.pk),
        form(new_secrets="not json " + "typed-credential-77"),
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "Credentials must be a JSON object." in html
    assert "typed-credential-77" not in html
    assert SECRET not in html
    account.refresh_from_db()
    assert account.secrets == {"secret": SECRET}
    assert AuditEntry.objects.count() == 0


def test_the_engine_cannot_change_after_creation(operator_client):
    account = sandbox_account("pool-1")
    operator_client.post(
        admin_url("engines_upstreamaccount_change", account.pk), form(engine="mjproxy")
    )
    account.refresh_from_db()
    assert account.engine == "sandbox"


def test_disabling_an_account_stops_dispatch_to_it(
    operator, operator_client, caller, organization, fund
):
    fund(organization, 1_000_000)
    disabled = sandbox_account("to-disable")
    response = operator_client.post(
        admin_url("engines_upstreamaccount_changelist"),
        {"action": "disable", "_selected_action": [disabled.pk]},
    )
    assert messages_of(response) == [
        "Disabled 1 account(s). No new tasks are dispatched to them; running jobs finish."
    ]
    disabled.refresh_from_db()
    assert disabled.is_enabled is False
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.action, entry.object_id, entry.before, entry.after) == (
        operator,
        "upstream_account.disable",
        str(disabled.pk),
        {"is_enabled": True},
        {"is_enabled": False},
    )
    queued = [
        task_submit(caller=caller, action=Action.IMAGINE, prompt=f"queued {i}").task
        for i in range(2)
    ]
    assert dispatch_pending().assigned == []
    assert not Task.objects.filter(upstream_account=disabled).exists()
    assert set(Task.objects.values_list("status", flat=True)) == {Status.NOT_START}

    other = sandbox_account("still-enabled")
    assert sorted(dispatch_pending().assigned) == sorted(t.pk for t in queued)
    assert set(Task.objects.values_list("upstream_account", flat=True)) == {other.pk}

    operator_client.post(
        admin_url("engines_upstreamaccount_changelist"),
        {"action": "enable", "_selected_action": [disabled.pk]},
    )
    disabled.refresh_from_db()
    assert disabled.is_enabled is True
    assert AuditEntry.objects.filter(action="upstream_account.enable").count() == 1


def test_setting_health_with_a_reason_uses_a_form(operator, operator_client):
    account = sandbox_account("pool-1")
    changelist = admin_url("engines_upstreamaccount_changelist")
    page = operator_client.post(
        changelist, {"action": "set_health", "_selected_action": [account.pk]}
    )
    assert page.status_code == 200
    assert 'name="reason"' in page.content.decode()
    missing = operator_client.post(
        changelist,
        {
            "action": "set_health",
            "_selected_action": [account.pk],
            "apply": "1",
            "health": Health.BANNED,
            "reason": "  ",
        },
    )
    assert missing.status_code == 200
    account.refresh_from_db()
    assert account.health == Health.HEALTHY
    operator_client.post(
        changelist,
        {
            "action": "set_health",
            "_selected_action": [account.pk],
            "apply": "1",
            "health": Health.BANNED,
            "reason": "Discord banned the account",
        },
    )
    account.refresh_from_db()
    assert (account.health, account.health_reason) == (Health.BANNED, "Discord banned the account")
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.reason, entry.before, entry.after) == (
        "upstream_account.set_health",
        "Discord banned the account",
        {"health": "healthy", "health_reason": ""},
        {"health": "banned", "health_reason": "Discord banned the account"},
    )
    listing = operator_client.get(changelist).content.decode()
    assert "Banned: Discord banned the account" in listing


def _task(account, *, status, mode="FAST", finished=None, org):
    return TaskFactory(
        organization=org, mode=mode, status=status, upstream_account=account, finished_at=finished
    )


def test_the_list_shows_live_load_success_rate_and_per_mode_counters(operator_client, organization):
    account = sandbox_account("loaded", concurrency=5)
    now = timezone.now()
    _task(account, status=Status.IN_PROGRESS, org=organization)
    _task(account, status=Status.IN_PROGRESS, org=organization)
    _task(account, status=Status.SUBMITTED, org=organization)
    _task(account, status=Status.SUCCESS, finished=now, org=organization)
    _task(account, status=Status.SUCCESS, mode="RELAX", finished=now, org=organization)
    _task(account, status=Status.FAILURE, mode="RELAX", finished=now, org=organization)
    _task(
        account, status=Status.SUCCESS, finished=now - timezone.timedelta(days=2), org=organization
    )
    UpstreamAccount.objects.filter(pk=account.pk).update(
        total_succeeded=3, total_failed=1, last_error="upstream said no"
    )
    html = operator_client.get(admin_url("engines_upstreamaccount_changelist")).content.decode()
    assert '<td class="field-running_display">2 / 5</td>' in html
    assert '<td class="field-submitted_count">1</td>' in html
    assert '<td class="field-success_rate">75.0 % of 4</td>' in html
    assert '<td class="field-mode_counters">FAST 1/0, RELAX 1/1, TURBO 0/0</td>' in html
    assert "upstream said no" in html


def test_the_list_costs_the_same_number_of_queries_for_one_or_many_accounts(
    operator_client, organization
):
    url = admin_url("engines_upstreamaccount_changelist")
    sandbox_account("only")
    operator_client.get(url)  # warm caches (content types, sessions)
    with CaptureQueriesContext(connection) as one:
        operator_client.get(url)
    for i in range(6):
        account = sandbox_account(f"more-{i}")
        _task(account, status=Status.IN_PROGRESS, org=organization)
    with CaptureQueriesContext(connection) as many:
        assert operator_client.get(url).status_code == 200
    assert len(many) == len(one)


def test_accounts_are_never_deleted_in_the_admin(operator_client):
    account = sandbox_account("kept")
    response = operator_client.post(
        admin_url("engines_upstreamaccount_delete", account.pk), {"post": "yes"}
    )
    assert response.status_code == 403
    assert UpstreamAccount.objects.filter(pk=account.pk).exists()
