"""Reads for webhooks. Every read of tenant data takes the organization."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet

from apps.accounts.models import Organization
from apps.core.errors import NotFound

from .models import WebhookDelivery, WebhookEndpoint, WebhookEvent, WebhookSecret


def _pk(value: Any) -> int | None:
    try:
        pk = int(value)
    except (TypeError, ValueError):
        return None
    return pk if 0 < pk < 2**63 else None


def endpoint_list(*, organization: Organization) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(organization=organization).order_by("-created_at", "-id")


def endpoint_get(*, organization: Organization, endpoint_id: Any) -> WebhookEndpoint:
    """The organization's endpoint; a foreign or malformed id answers exactly like a missing one."""
    pk = _pk(endpoint_id)
    endpoint = (
        WebhookEndpoint.objects.filter(organization=organization, pk=pk).first()
        if pk is not None
        else None
    )
    if endpoint is None:
        raise NotFound("Webhook endpoint not found.")
    return endpoint


def delivery_list(
    *,
    organization: Organization,
    endpoint_id: int | None = None,
    task_id: str | None = None,
    state: str | None = None,
) -> QuerySet[WebhookDelivery]:
    """Attempts, newest first. Filters narrow within the organization, never beyond it."""
    deliveries = WebhookDelivery.objects.filter(organization=organization).select_related(
        "event", "endpoint"
    )
    if endpoint_id is not None:
        deliveries = deliveries.filter(endpoint_id=endpoint_id)
    if task_id is not None:
        deliveries = deliveries.filter(event__task_id=task_id)
    if state is not None:
        deliveries = deliveries.filter(state=state)
    return deliveries.order_by("-id")


def delivery_get(*, organization: Organization, delivery_id: Any) -> WebhookDelivery:
    pk = _pk(delivery_id)
    delivery = (
        WebhookDelivery.objects.filter(organization=organization, pk=pk)
        .select_related("event", "endpoint")
        .first()
        if pk is not None
        else None
    )
    if delivery is None:
        raise NotFound("Webhook delivery not found.")
    return delivery


def event_list_for_task(*, organization: Organization, task_id: str) -> QuerySet[WebhookEvent]:
    return WebhookEvent.objects.filter(organization=organization, task_id=task_id).order_by(
        "created_at", "id"
    )


def webhook_secrets_for_signing(*, organization: Organization, now: datetime) -> list[str]:
    """The secrets to sign with: the current one first, then any still in its overlap window."""
    rows = WebhookSecret.objects.filter(organization=organization).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=now)
    )
    ordered = sorted(
        rows, key=lambda row: (row.expires_at is not None, -row.created_at.timestamp())
    )
    return [row.reveal() for row in ordered]


def webhook_secrets_for_signing_many(
    *, organization_ids: Iterable[int], now: datetime
) -> dict[int, list[str]]:
    """:func:`webhook_secrets_for_signing` for several organizations in one query.

    An organization without a current secret is missing from the answer.
    """
    rows = WebhookSecret.objects.filter(organization_id__in=set(organization_ids)).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=now)
    )
    ordered = sorted(
        rows,
        key=lambda row: (
            row.organization_id,
            row.expires_at is not None,
            -row.created_at.timestamp(),
        ),
    )
    found: dict[int, list[str]] = {}
    for row in ordered:
        if row.expires_at is not None and row.organization_id not in found:
            continue  # only an expiring secret: the current one is still to be created
        found.setdefault(row.organization_id, []).append(row.reveal())
    return found


def webhook_secret_status(*, organization: Organization, now: datetime) -> dict[str, Any]:
    """What may be shown about the secret without revealing it."""
    current = WebhookSecret.objects.filter(
        organization=organization, expires_at__isnull=True
    ).first()
    previous = (
        WebhookSecret.objects.filter(organization=organization, expires_at__gt=now)
        .order_by("-expires_at")
        .first()
    )
    return {
        "exists": current is not None,
        "created_at": current.created_at if current else None,
        "previous_expires_at": previous.expires_at if previous else None,
    }
