"""The operator's big lists cost the same number of queries for one row or a page of rows
(no query per row), and never count a whole table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from allauth.mfa.models import Authenticator
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.accounts.models import Organization
from apps.api_keys.services import api_key_create
from apps.billing.ledger import ledger_topup
from apps.operator.services import audit_record
from apps.tasks.events import task_changed
from apps.webhooks.services import endpoint_send_test_event
from tests.factories import (
    MembershipFactory,
    OrganizationFactory,
    TaskFactory,
    UserFactory,
    WebhookEndpointFactory,
)

from .conftest import admin_url

pytestmark = pytest.mark.django_db


def _webhook_rows(organization: Organization, n: int) -> None:
    task = TaskFactory(
        organization=organization, prompt="a fox", notify_hook="https://client.example.com/hook"
    )
    endpoint = WebhookEndpointFactory(organization=organization, url=f"https://e{n}.example.com/")
    task_changed(task=task)
    endpoint_send_test_event(organization=organization, endpoint_id=endpoint.pk)


def _ledger_rows(organization: Organization, n: int) -> None:
    ledger_topup(organization=organization, amount=100 + n, idempotency_key=f"list-{n}")


def _key_rows(organization: Organization, n: int) -> None:
    api_key_create(organization=organization, name=f"k{n}")


def _member_rows(organization: Organization, n: int) -> None:
    MembershipFactory(organization=organization)


def _audit_rows(organization: Organization, n: int) -> None:
    actor = UserFactory(is_staff=True)
    audit_record(actor=actor, action="test.thing", obj=organization, after={"n": n})


def _authenticator_rows(organization: Organization, n: int) -> None:
    Authenticator.objects.create(
        user=UserFactory(), type=Authenticator.Type.TOTP, data={"secret": "enc:x"}
    )


LISTS: list[tuple[str, Callable[[Organization, int], None]]] = [
    ("webhooks_webhookdelivery_changelist", _webhook_rows),
    ("webhooks_webhookevent_changelist", _webhook_rows),
    ("webhooks_webhookendpoint_changelist", _webhook_rows),
    ("billing_ledgerentry_changelist", _ledger_rows),
    ("api_keys_apikey_changelist", _key_rows),
    ("accounts_organization_changelist", _member_rows),
    ("accounts_membership_changelist", _member_rows),
    ("accounts_user_changelist", _member_rows),
    ("operator_auditentry_changelist", _audit_rows),
    ("mfa_authenticator_changelist", _authenticator_rows),
]


@pytest.mark.parametrize(("name", "seed"), LISTS, ids=[name for name, _ in LISTS])
def test_a_list_costs_the_same_queries_for_one_or_many_rows(
    operator_client: Any, name: str, seed: Callable[[Organization, int], None]
) -> None:
    seed(OrganizationFactory(), 0)
    url = admin_url(name)
    assert operator_client.get(url).status_code == 200  # warm caches (content types, …)
    with CaptureQueriesContext(connection) as one:
        operator_client.get(url)
    for n in range(1, 16):
        seed(OrganizationFactory(), n)  # each row with its own organization, user, task …
    with CaptureQueriesContext(connection) as many:
        response = operator_client.get(url)
    assert response.status_code == 200
    assert len(many) == len(one), [q["sql"] for q in many]
    assert not any("COUNT(*)" in q["sql"] and "LIMIT" not in q["sql"] for q in many)
