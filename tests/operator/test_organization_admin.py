"""Organizations, keys, tiers and webhook deliveries in the admin: effects and audit entries."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.messages import get_messages
from django.test import Client

from apps.accounts.models import Membership, MembershipTier, Role
from apps.api_keys.models import ApiKey
from apps.billing.models import Balance, EntryKind, LedgerEntry
from apps.operator.models import AuditEntry
from apps.tasks.events import task_changed
from apps.webhooks.models import DeliveryState, EventState, WebhookDelivery
from tests.accounts.admin_forms import form_data
from tests.factories import TaskFactory, UserFactory

from .conftest import admin_url, grant

pytestmark = pytest.mark.django_db


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def snapshot(organization) -> tuple[int, int, int]:
    balance = Balance.objects.get(organization=organization)
    return (
        balance.available,
        balance.held,
        LedgerEntry.objects.filter(organization=organization).count(),
    )


def org_action(client, action, organizations, **data):
    return client.post(
        admin_url("accounts_organization_changelist"),
        {"action": action, "_selected_action": [o.pk for o in organizations], **data},
    )


def test_adjust_writes_a_ledger_entry_with_the_reason_and_one_audit_entry(
    operator, operator_client, organization, fund
):
    fund(organization, 1_000)
    data = {
        "apply": "1",
        "amount": "-250",
        "reason": "Refund of a duplicate charge",
        "token": str(uuid.uuid4()),
    }
    response = org_action(operator_client, "adjust_balance", [organization], **data)
    assert response.status_code == 302
    entry = LedgerEntry.objects.filter(organization=organization).latest("id")
    assert (entry.kind, entry.delta_available, entry.reason, entry.operator) == (
        EntryKind.ADJUSTMENT,
        -250,
        "Refund of a duplicate charge",
        operator,
    )
    assert snapshot(organization) == (750, 0, 2)
    audit = AuditEntry.objects.get()
    assert (audit.actor, audit.action, audit.object_type, audit.object_id, audit.reason) == (
        operator,
        "organization.adjust_balance",
        "accounts.organization",
        str(organization.pk),
        "Refund of a duplicate charge",
    )
    assert (audit.before, audit.after) == (
        {"available": 1_000, "held": 0},
        {"available": 750, "held": 0, "ledger_entry": entry.pk, "amount": -250},
    )
    # The same form submitted again: one ledger entry, one audit entry.
    org_action(operator_client, "adjust_balance", [organization], **data)
    assert snapshot(organization) == (750, 0, 2)
    assert AuditEntry.objects.count() == 1


def test_a_refused_adjustment_records_no_audit_entry(operator_client, organization, fund):
    fund(organization, 100)
    response = org_action(
        operator_client,
        "adjust_balance",
        [organization],
        apply="1",
        amount="-101",
        reason="clawback",
        token=str(uuid.uuid4()),
    )
    assert messages_of(response) == [
        f"{organization}: not adjusted. Insufficient balance: 101 tokens needed, 100 available."
    ]
    assert snapshot(organization) == (100, 0, 1)
    assert AuditEntry.objects.count() == 0


def test_grant_tokens_credits_a_top_up_by_the_operator(operator, operator_client, organization):
    page = org_action(operator_client, "grant_tokens", [organization])
    assert page.status_code == 200
    html = page.content.decode()
    assert 'value="Grant tokens"' in html and 'name="reason"' in html
    token = str(uuid.uuid4())
    response = org_action(
        operator_client,
        "grant_tokens",
        [organization],
        apply="1",
        amount="35000",
        reason="Invoice 2031 paid by bank transfer",
        token=token,
    )
    entry = LedgerEntry.objects.get(organization=organization)
    assert messages_of(response) == [
        f"{organization}: granted 35,000 tokens (ledger entry {entry.pk}); available is now 35,000."
    ]
    assert (
        entry.kind,
        entry.delta_available,
        entry.operator,
        entry.reason,
        entry.idempotency_key,
    ) == (
        EntryKind.TOPUP,
        35_000,
        operator,
        "Invoice 2031 paid by bank transfer",
        f"admin-grant:{token}",
    )
    audit = AuditEntry.objects.get()
    assert (audit.action, audit.after["ledger_entry"], audit.after["amount"]) == (
        "organization.grant_tokens",
        entry.pk,
        35_000,
    )


@pytest.mark.parametrize("amount", ["0", "-5", "x"])
def test_grant_refuses_non_positive_amounts(operator_client, organization, amount):
    response = org_action(
        operator_client,
        "grant_tokens",
        [organization],
        apply="1",
        amount=amount,
        reason="r",
        token=str(uuid.uuid4()),
    )
    assert response.status_code == 200
    assert "amount" in response.context["form"].errors
    assert snapshot(organization) == (0, 0, 0)
    assert AuditEntry.objects.count() == 0


def test_staff_without_the_adjust_permission_cannot_grant(organization):
    client = Client()
    client.force_login(grant(UserFactory(is_staff=True), "accounts.view_organization"))
    assert (
        'value="grant_tokens"'
        not in client.get(admin_url("accounts_organization_changelist")).content.decode()
    )
    org_action(
        client,
        "grant_tokens",
        [organization],
        apply="1",
        amount="5",
        reason="r",
        token=str(uuid.uuid4()),
    )
    assert snapshot(organization) == (0, 0, 0)
    assert AuditEntry.objects.count() == 0


def test_the_organization_page_shows_members_tier_balance_and_keys(
    operator_client, organization, owner, member, make_key, fund
):
    fund(organization, 5_000)
    issued = make_key(organization, name="ci key")
    Balance.objects.filter(organization=organization).update(available=4_000, held=1_000)
    html = operator_client.get(
        admin_url("accounts_organization_change", organization.pk)
    ).content.decode()
    assert owner.email in html and member.email in html
    assert '<div class="readonly">4,000</div>' in html
    assert '<div class="readonly">1,000</div>' in html
    assert "ci key" in html and issued.api_key.prefix in html
    assert issued.plaintext not in html
    assert issued.api_key.key_hash not in html


def test_changing_the_tier_and_members_in_the_form_is_audited(
    operator, operator_client, organization, owner, member
):
    url = admin_url("accounts_organization_change", organization.pk)
    data = form_data(operator_client.get(url).content.decode(), "organization_form")
    premium = MembershipTier.objects.get(code="PREMIUM")
    data["tier"] = [str(premium.pk)]
    # The member row of the inline becomes an admin.
    for key, value in list(data.items()):
        if key.startswith("memberships-") and key.endswith("-user") and value == [str(member.pk)]:
            data[key.replace("-user", "-role")] = [Role.ADMIN]
    data["_save"] = ["Save"]
    response = operator_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    organization.refresh_from_db()
    assert organization.tier == premium
    assert Membership.objects.get(user=member, organization=organization).role == Role.ADMIN
    entries = {e.object_type: e for e in AuditEntry.objects.all()}
    assert set(entries) == {"accounts.organization", "accounts.membership"}
    free = MembershipTier.objects.get(code="FREE")
    org_entry = entries["accounts.organization"]
    assert (org_entry.actor, org_entry.action, org_entry.before, org_entry.after) == (
        operator,
        "admin.change",
        {"tier_id": free.pk},
        {"tier_id": premium.pk},
    )
    membership_entry = entries["accounts.membership"]
    assert (membership_entry.before, membership_entry.after) == (
        {"role": Role.MEMBER},
        {"role": Role.ADMIN},
    )


def test_revoking_a_key_is_audited(operator, operator_client, organization, make_key):
    issued = make_key(organization, name="leaked")
    response = operator_client.post(
        admin_url("api_keys_apikey_changelist"),
        {"action": "revoke_keys", "_selected_action": [issued.api_key.pk]},
    )
    assert messages_of(response) == ["Revoked 1 key(s)."]
    key = ApiKey.objects.get(pk=issued.api_key.pk)
    assert key.revoked_at is not None
    audit = AuditEntry.objects.get()
    assert (audit.actor, audit.action, audit.object_id, audit.before) == (
        operator,
        "api_key.revoke",
        str(key.pk),
        {"revoked_at": None},
    )
    assert audit.after == {"revoked_at": key.revoked_at.isoformat()[:23] + "Z"}


def test_resending_a_webhook_delivery_is_audited(
    operator, operator_client, organization, monkeypatch
):
    monkeypatch.setattr("apps.webhooks.workers.deliver.apply_async", lambda args, **options: None)
    task = TaskFactory(organization=organization, notify_hook="https://client.example.com/hook")
    [event] = task_changed(task=task, event_type="task.updated")
    attempt = event.deliveries.get()
    WebhookDelivery.objects.filter(pk=attempt.pk).update(state=DeliveryState.DEAD)
    event.state = EventState.DEAD
    event.save()
    response = operator_client.post(
        admin_url("webhooks_webhookdelivery_changelist"),
        {"action": "resend", "_selected_action": [attempt.pk]},
    )
    assert messages_of(response) == ["Resent 1 message(s)."]
    new = WebhookDelivery.objects.exclude(pk=attempt.pk).get()
    audit = AuditEntry.objects.get()
    assert (audit.actor, audit.action, audit.object_type, audit.object_id) == (
        operator,
        "webhook_delivery.resend",
        "webhooks.webhookevent",
        str(event.pk),
    )
    assert (audit.before, audit.after) == (
        {"delivery": attempt.pk, "state": "dead"},
        {"delivery": new.pk, "state": "pending"},
    )


def test_price_tier_and_package_edits_are_audited(operator_client):
    from apps.billing.models import Price

    price = Price.objects.get(action="UPSCALE", mode="RELAX")
    operator_client.post(
        admin_url("billing_price_changelist") + "?action__exact=UPSCALE&mode__exact=RELAX",
        {
            "form-TOTAL_FORMS": "1",
            "form-INITIAL_FORMS": "1",
            "form-MIN_NUM_FORMS": "0",
            "form-MAX_NUM_FORMS": "1000",
            "form-0-id": str(price.pk),
            "form-0-tokens": "1000",
            "form-0-own_account_tokens": str(price.own_account_tokens),
            "_save": "Save",
        },
    )
    tier = MembershipTier.objects.get(code="VIP")
    operator_client.post(
        admin_url("accounts_membershiptier_changelist"),
        {
            "form-TOTAL_FORMS": "1",
            "form-INITIAL_FORMS": "1",
            "form-MIN_NUM_FORMS": "0",
            "form-MAX_NUM_FORMS": "1000",
            "form-0-id": str(tier.pk),
            "form-0-max_unfinished_tasks": "25",
            "_save": "Save",
        },
    )
    operator_client.post(
        admin_url("billing_tokenpackage_add"),
        {
            "name": "Starter",
            "tokens": "70000",
            "price_amount": "200",
            "currency": "cny",
            "stripe_price_id": "",
            "is_active": "on",
            "sort_order": "0",
        },
    )
    entries = {(e.object_type, e.action): e for e in AuditEntry.objects.all()}
    assert set(entries) == {
        ("billing.price", "admin.change"),
        ("accounts.membershiptier", "admin.change"),
        ("billing.tokenpackage", "admin.add"),
    }
    assert entries[("billing.price", "admin.change")].after == {"tokens": 1000}
    assert entries[("billing.price", "admin.change")].before == {"tokens": 1750}
    assert entries[("accounts.membershiptier", "admin.change")].after == {
        "max_unfinished_tasks": 25
    }
    assert entries[("billing.tokenpackage", "admin.add")].after["tokens"] == 70_000
