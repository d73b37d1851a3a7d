"""A tenant with something on every page, made directly with factories and the ledger (no
worker needed): tasks in every state with stored results, a charged and a released task in
the ledger, a key, a webhook endpoint with a delivery log."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

from django.utils import timezone

from apps.accounts.models import Organization, Role, User
from apps.billing.ledger import ledger_capture, ledger_hold, ledger_release, ledger_topup
from apps.tasks.enums import Action
from apps.tasks.models import Task
from apps.webhooks.models import DeliveryState, EventState
from tests.factories import (
    MembershipFactory,
    TaskFactory,
    UserFactory,
    WebhookDeliveryFactory,
    WebhookEndpointFactory,
    WebhookEventFactory,
)

PRICE = 14_000


@dataclass
class Tenant:
    user: User
    organization: Organization
    imagine: Task
    upscale: Task
    failed: Task


def seed_tenant(*, email: str = "ada@example.com", tasks_are_test: bool = False) -> Tenant:
    user = UserFactory(email=email)
    membership = MembershipFactory(user=user, role=Role.OWNER)
    organization = membership.organization
    ledger_topup(organization=organization, amount=832_000, idempotency_key="seed-topup")
    common = {"organization": organization, "created_by": user, "is_test": tasks_are_test}
    imagine = TaskFactory(
        succeeded=True, prompt="a lighthouse on a cliff at dawn", price=PRICE, **common
    )
    upscale = TaskFactory(
        succeeded=True,
        action=Action.UPSCALE,
        parent=imagine,
        params={"index": 1},
        prompt=imagine.prompt,
        price=3_500,
        **common,
    )
    failed = TaskFactory(failed=True, prompt="a storm over the sea", price=PRICE, **common)
    if not tasks_are_test:
        for task, settle in ((imagine, ledger_capture), (upscale, ledger_capture)):
            ledger_hold(task=task, amount=task.price)
            settle(task=task)
        ledger_hold(task=failed, amount=PRICE)
        ledger_release(task=failed)
    return Tenant(
        user=user, organization=organization, imagine=imagine, upscale=upscale, failed=failed
    )


def seed_deliveries(organization: Organization, task: Task) -> dict[str, object]:
    """A message delivered on its second attempt, a message with a retry pending, a dead one."""
    endpoint = WebhookEndpointFactory(
        organization=organization,
        url="https://hooks.example.com/mjgate/receive/with/a/rather-long-path-to-show",
    )
    body = json.dumps({"type": "task.updated", "data": {"id": task.pk, "status": "SUCCESS"}})
    delivered = WebhookEventFactory(
        endpoint=endpoint, task=task, body=body, state=EventState.SUCCEEDED
    )
    first = WebhookDeliveryFactory(
        event=delivered,
        endpoint=endpoint,
        organization=organization,
        failed=True,
        url=endpoint.url,
        response_body="Internal Server Error",
    )
    second = WebhookDeliveryFactory(
        event=delivered,
        endpoint=endpoint,
        organization=organization,
        succeeded=True,
        attempt=2,
        url=endpoint.url,
        response_body="ok",
    )
    waiting = WebhookEventFactory(endpoint=endpoint, task=task, body=body, sequence=1)
    failed_once = WebhookDeliveryFactory(
        event=waiting, endpoint=endpoint, organization=organization, failed=True, url=endpoint.url
    )
    pending = WebhookDeliveryFactory(
        event=waiting,
        endpoint=endpoint,
        organization=organization,
        state=DeliveryState.PENDING,
        attempt=2,
        url=endpoint.url,
        next_attempt_at=timezone.now() + timedelta(minutes=5),
    )
    return {
        "endpoint": endpoint,
        "delivered_first": first,
        "delivered_second": second,
        "failed_once": failed_once,
        "pending": pending,
    }
