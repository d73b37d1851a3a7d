"""The audit log: append-only, redacted, deduplicated, and read-only in the admin."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser

from apps.engines.models import UpstreamAccount
from apps.operator.models import AuditEntry
from apps.operator.services import (
    CHANGED,
    REDACTED,
    audit_diff,
    audit_record,
    audit_snapshot,
)
from apps.tasks.models import BannedWord
from tests.tasks.helpers import sandbox_account

from .conftest import admin_url

pytestmark = pytest.mark.django_db


def test_audit_record_stores_who_what_and_the_object(operator, organization):
    entry = audit_record(
        actor=operator,
        action="organization.adjust_balance",
        obj=organization,
        before={"available": 5},
        after={"available": 10},
        reason="goodwill",
    )
    entry.refresh_from_db()
    assert (
        entry.actor,
        entry.actor_label,
        entry.action,
        entry.object_type,
        entry.object_id,
        entry.object_repr,
        entry.before,
        entry.after,
        entry.reason,
    ) == (
        operator,
        "ops@example.com",
        "organization.adjust_balance",
        "accounts.organization",
        str(organization.pk),
        "Acme",
        {"available": 5},
        {"available": 10},
        "goodwill",
    )
    assert entry.created_at is not None


def test_the_system_or_an_anonymous_actor_is_recorded_without_a_user():
    entry = audit_record(actor=AnonymousUser(), action="system.sweep", object_type="tasks.task")
    assert (entry.actor, entry.actor_label) == (None, "")


def test_secrets_are_redacted_at_any_depth_even_if_a_caller_passes_them():
    entry = audit_record(
        actor=None,
        action="x",
        before={"secrets": {"secret": "s3cr3t-value"}, "name": "a"},
        after={"options": {"token": "tok-value", "duration": 5}, "key_hash": "abc", "tokens": 7},
    )
    entry.refresh_from_db()
    assert entry.before == {"secrets": REDACTED, "name": "a"}
    assert entry.after == {
        "options": {"token": REDACTED, "duration": 5},
        "key_hash": REDACTED,
        "tokens": 7,
    }


def test_a_diff_keeps_only_changes_and_marks_changed_credentials():
    account = sandbox_account("diffed", secret="old-secret-value")
    before = audit_snapshot(account)
    account.concurrency = 7
    account.secrets = {"secret": "new-secret-value"}
    old, new = audit_diff(before, audit_snapshot(account), obj=account)
    assert old == {"concurrency": 3, "secrets": REDACTED}
    assert new == {"concurrency": 7, "secrets": CHANGED}
    # Unchanged credentials are not mentioned at all.
    same_old, same_new = audit_diff(audit_snapshot(account), audit_snapshot(account), obj=account)
    assert (same_old, same_new) == ({}, {})


def test_a_dedupe_key_records_once(operator):
    first = audit_record(actor=operator, action="a", dedupe_key="ledger-entry:1")
    second = audit_record(actor=operator, action="a", dedupe_key="ledger-entry:1")
    assert first.pk == second.pk
    assert AuditEntry.objects.count() == 1


def test_entries_are_append_only(operator):
    entry = audit_record(actor=operator, action="a", reason="original")
    entry.reason = "edited"
    with pytest.raises(TypeError):
        entry.save()
    with pytest.raises(TypeError):
        entry.delete()
    with pytest.raises(TypeError):
        AuditEntry.objects.filter(pk=entry.pk).update(reason="edited")
    with pytest.raises(TypeError):
        AuditEntry.objects.all().delete()
    entry.refresh_from_db()
    assert entry.reason == "original"
    assert AuditEntry.objects.count() == 1


def test_the_audit_log_is_read_only_in_the_admin_even_for_superusers(operator, operator_client):
    entry = audit_record(actor=operator, action="task.cancel", object_type="tasks.task", reason="r")
    changelist = operator_client.get(admin_url("operator_auditentry_changelist"))
    assert changelist.status_code == 200
    assert "task.cancel" in changelist.content.decode()
    change_url = admin_url("operator_auditentry_change", entry.pk)
    page = operator_client.get(change_url)
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert operator_client.get(admin_url("operator_auditentry_add")).status_code == 403
    assert operator_client.post(change_url, {"reason": "edited"}).status_code == 403
    delete_url = admin_url("operator_auditentry_delete", entry.pk)
    assert operator_client.post(delete_url, {"post": "yes"}).status_code == 403
    bulk = operator_client.post(
        admin_url("operator_auditentry_changelist"),
        {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"},
    )
    assert bulk.status_code == 302  # no such action here: back to the list, nothing deleted
    entry.refresh_from_db()
    assert entry.reason == "r"
    assert AuditEntry.objects.count() == 1


def test_admin_saves_are_audited_with_before_and_after(operator, operator_client):
    response = operator_client.post(
        admin_url("tasks_bannedword_add"), {"word": "Forbidden", "is_active": "on"}
    )
    assert response.status_code == 302
    word = BannedWord.objects.get()
    added = AuditEntry.objects.get(action="admin.add")
    assert (added.actor, added.object_type, added.object_id, added.before) == (
        operator,
        "tasks.bannedword",
        str(word.pk),
        None,
    )
    assert added.after["word"] == "forbidden"
    assert added.after["is_active"] is True

    operator_client.post(
        admin_url("tasks_bannedword_change", word.pk), {"word": "forbidden", "is_active": ""}
    )
    changed = AuditEntry.objects.get(action="admin.change")
    assert (changed.before, changed.after) == ({"is_active": True}, {"is_active": False})

    operator_client.post(admin_url("tasks_bannedword_delete", word.pk), {"post": "yes"})
    deleted = AuditEntry.objects.get(action="admin.delete")
    assert (deleted.object_id, deleted.object_repr, deleted.before["word"]) == (
        str(word.pk),
        "forbidden",
        "forbidden",
    )
    assert BannedWord.objects.count() == 0


def test_a_save_that_changes_nothing_records_nothing(operator_client):
    word = BannedWord.objects.create(word="calm")
    operator_client.post(
        admin_url("tasks_bannedword_change", word.pk), {"word": "calm", "is_active": "on"}
    )
    assert AuditEntry.objects.count() == 0


def test_list_editable_changes_are_audited(operator_client):
    word = BannedWord.objects.create(word="listed")
    response = operator_client.post(
        admin_url("tasks_bannedword_changelist"),
        {
            "form-TOTAL_FORMS": "1",
            "form-INITIAL_FORMS": "1",
            "form-MIN_NUM_FORMS": "0",
            "form-MAX_NUM_FORMS": "1000",
            "form-0-id": str(word.pk),
            "form-0-is_active": "",
            "_save": "Save",
        },
    )
    assert response.status_code == 302
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.before, entry.after) == (
        "admin.change",
        {"is_active": True},
        {"is_active": False},
    )


def test_a_password_change_in_the_user_admin_is_audited_by_name_only(operator_client):
    from tests.factories import UserFactory

    user = UserFactory(email="someone@example.com")
    response = operator_client.post(
        admin_url("auth_user_password_change", user.pk),
        {"password1": "N3w-pass-phrase!", "password2": "N3w-pass-phrase!"},
    )
    assert response.status_code == 302
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.object_id, entry.reason) == (
        "admin.change",
        str(user.pk),
        "Changed password.",
    )
    assert entry.before is None and entry.after is None


def test_unknown_account_ids_link_nowhere_in_the_audit_list(operator, operator_client):
    account = sandbox_account("linked")
    audit_record(actor=operator, action="x", obj=account)
    audit_record(actor=operator, action="y", object_type="gone.model", object_id="9")
    html = operator_client.get(admin_url("operator_auditentry_changelist")).content.decode()
    assert f'href="{admin_url("engines_upstreamaccount_change", account.pk)}"' in html
    assert UpstreamAccount.objects.count() == 1
