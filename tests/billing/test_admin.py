"""The billing admin, driven through Django admin's own views as a staff user."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.test import Client

from apps.accounts.models import Organization
from apps.billing.ledger import ledger_topup
from apps.billing.models import EntryKind, LedgerEntry, Price, StripeEvent, TokenPackage
from tests.factories import UserFactory

from .helpers import snapshot

pytestmark = pytest.mark.django_db

ORGS = "/admin/accounts/organization/"


def staff(*perms: str):
    user = UserFactory(is_staff=True)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user


@pytest.fixture
def operator():
    return staff("accounts.view_organization", "billing.adjust_balance")


@pytest.fixture
def operator_client(operator):
    client = Client()
    client.force_login(operator)
    return client


@pytest.fixture
def superuser_client():
    # Not pytest-django's admin_client: tests/conftest.py's admin_user is an organization admin.
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def adjust(client, organizations, **data):
    payload = {
        "action": "adjust_balance",
        "_selected_action": [str(org.pk) for org in organizations],
        **data,
    }
    return client.post(ORGS, payload)


def messages_of(response):
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_the_changelist_offers_the_action_and_shows_balances(operator_client, organization, fund):
    fund(organization, 12_345)
    response = operator_client.get(ORGS)
    assert response.status_code == 200
    content = response.content.decode()
    assert 'value="adjust_balance"' in content
    assert "12,345" in content  # formatted, not "12345"


def test_choosing_the_action_asks_for_amount_and_reason(operator_client, organization, fund):
    fund(organization, 500)
    response = adjust(operator_client, [organization])
    assert response.status_code == 200
    content = response.content.decode()
    assert "Adjust balance" in content
    assert 'name="amount"' in content and 'name="reason"' in content
    assert f"<td>{organization} (#{organization.pk})</td><td>500</td>" in content
    assert snapshot(organization) == (500, 0, 1)


def test_applying_writes_an_adjustment_with_reason_and_operator(
    operator_client, operator, organization, fund
):
    fund(organization, 1_000)
    token = uuid.uuid4()
    response = adjust(
        operator_client,
        [organization],
        apply="1",
        amount="-400",
        reason="Double top-up by mistake",
        token=str(token),
    )
    assert response.status_code == 302
    entry = LedgerEntry.objects.filter(organization=organization).order_by("-id").first()
    assert entry is not None
    assert (entry.kind, entry.delta_available, entry.reason, entry.operator) == (
        EntryKind.ADJUSTMENT,
        -400,
        "Double top-up by mistake",
        operator,
    )
    assert entry.idempotency_key == f"admin-adjust:{token}"
    assert snapshot(organization) == (600, 0, 2)
    assert messages_of(response) == [
        f"{organization}: adjusted by -400 tokens (ledger entry {entry.pk}); available is now 600."
    ]


def test_submitting_the_same_form_twice_adjusts_once(operator_client, organization):
    data = {"apply": "1", "amount": "700", "reason": "goodwill", "token": str(uuid.uuid4())}
    adjust(operator_client, [organization], **data)
    adjust(operator_client, [organization], **data)
    assert snapshot(organization) == (700, 0, 1)


def test_several_organizations_each_get_an_entry(operator_client, organization, other_organization):
    adjust(
        operator_client,
        [organization, other_organization],
        apply="1",
        amount="250",
        reason="launch promotion",
        token=str(uuid.uuid4()),
    )
    assert snapshot(organization) == (250, 0, 1)
    assert snapshot(other_organization) == (250, 0, 1)


@pytest.mark.parametrize(
    ("amount", "reason", "field"),
    [("100", "", "reason"), ("100", "   ", "reason"), ("0", "r", "amount"), ("x", "r", "amount")],
)
def test_the_form_refuses_a_missing_reason_or_a_zero_amount(
    operator_client, organization, fund, amount, reason, field
):
    fund(organization, 1_000)
    response = adjust(
        operator_client,
        [organization],
        apply="1",
        amount=amount,
        reason=reason,
        token=str(uuid.uuid4()),
    )
    assert response.status_code == 200
    assert field in response.context["form"].errors
    assert snapshot(organization) == (1_000, 0, 1)


def test_a_debit_below_zero_is_reported_and_changes_nothing(operator_client, organization, fund):
    fund(organization, 100)
    response = adjust(
        operator_client,
        [organization],
        apply="1",
        amount="-101",
        reason="clawback",
        token=str(uuid.uuid4()),
    )
    assert response.status_code == 302
    assert messages_of(response) == [
        f"{organization}: not adjusted. Insufficient balance: 101 tokens needed, 100 available."
    ]
    assert snapshot(organization) == (100, 0, 1)


def test_staff_without_the_permission_cannot_adjust(organization, fund):
    fund(organization, 100)
    client = Client()
    client.force_login(staff("accounts.view_organization", "accounts.change_organization"))
    assert 'value="adjust_balance"' not in client.get(ORGS).content.decode()
    adjust(client, [organization], apply="1", amount="5", reason="r", token=str(uuid.uuid4()))
    assert snapshot(organization) == (100, 0, 1)


def test_the_organization_admin_keeps_its_accounts_configuration():
    from django.contrib import admin

    from apps.accounts.admin import OrganizationAdmin

    model_admin = admin.site._registry[Organization]
    assert isinstance(model_admin, OrganizationAdmin)
    assert model_admin.search_fields == OrganizationAdmin.search_fields


def test_prices_are_editable_in_the_list_and_zero_is_allowed(organization):
    client = Client()
    client.force_login(staff("billing.view_price", "billing.change_price"))
    price = Price.objects.get(action="IMAGINE", mode="FAST")
    url = "/admin/billing/price/?action__exact=IMAGINE&mode__exact=FAST"
    response = client.post(
        url,
        {
            "form-TOTAL_FORMS": "1",
            "form-INITIAL_FORMS": "1",
            "form-MIN_NUM_FORMS": "0",
            "form-MAX_NUM_FORMS": "1000",
            "form-0-id": str(price.pk),
            "form-0-tokens": "0",
            "_save": "Save",
        },
    )
    assert response.status_code == 302
    price.refresh_from_db()
    assert price.tokens == 0
    assert Price.objects.get(action="IMAGINE", mode="RELAX").tokens == 7_000


def test_prices_cannot_be_deleted(superuser_client):
    price = Price.objects.get(action="IMAGINE", mode="FAST")
    response = superuser_client.post(f"/admin/billing/price/{price.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    assert Price.objects.filter(pk=price.pk).exists()


def test_token_packages_are_managed_in_the_admin(superuser_client):
    response = superuser_client.post(
        "/admin/billing/tokenpackage/add/",
        {
            "name": "Pro",
            "tokens": "3500000",
            "price_amount": "10000",
            "currency": "cny",
            "stripe_price_id": "",
            "is_active": "on",
            "sort_order": "1",
        },
    )
    assert response.status_code == 302
    package = TokenPackage.objects.get()
    assert (package.name, package.tokens, package.price_amount) == ("Pro", 3_500_000, 10_000)


def test_ledger_entries_are_read_only_even_for_superusers(superuser_client, organization):
    entry = ledger_topup(organization=organization, amount=10, idempotency_key="t")
    base = "/admin/billing/ledgerentry/"
    assert superuser_client.get(base).status_code == 200
    assert superuser_client.get(f"{base}{entry.pk}/change/").status_code == 200  # view only
    assert superuser_client.get(f"{base}add/").status_code == 403
    response = superuser_client.post(
        f"{base}{entry.pk}/change/", {"delta_available": "999", "reason": "edited"}
    )
    assert response.status_code == 403
    assert superuser_client.post(f"{base}{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    entry.refresh_from_db()
    assert (entry.delta_available, entry.reason) == (10, "")
    assert snapshot(organization) == (10, 0, 1)


def test_stripe_events_are_read_only(superuser_client):
    event = StripeEvent.objects.create(event_id="evt_1", type="invoice.paid", payload={"id": "x"})
    base = "/admin/billing/stripeevent/"
    assert superuser_client.get(base).status_code == 200
    assert superuser_client.get(f"{base}{event.pk}/change/").status_code == 200
    assert superuser_client.get(f"{base}add/").status_code == 403
    assert superuser_client.post(f"{base}{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert StripeEvent.objects.filter(pk=event.pk).exists()
