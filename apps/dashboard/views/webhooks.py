"""Webhook endpoints, the organization's signing secret, deliveries, resend and test events."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.models import Organization
from apps.accounts.roles import Capability
from apps.core.errors import ServiceError
from apps.tasks.models import Task
from apps.webhooks import services as webhook_services
from apps.webhooks.models import SUBSCRIBABLE_EVENT_TYPES, EventType, WebhookDelivery
from apps.webhooks.selectors import delivery_list, endpoint_list, webhook_secrets_for_signing

from .. import presenters
from ..tenancy import dashboard_view, organization_of

DELIVERIES_PAGE_SIZE = 25


def task_deliveries(*, organization: Organization, task: Task) -> list[WebhookDelivery]:
    """The latest delivery attempts of a task's webhooks (for the task page)."""
    return list(delivery_list(organization=organization, task_id=task.pk)[:50])


def _event_type_choices() -> list[tuple[str, str]]:
    labels = dict(EventType.choices)
    return [(value, labels.get(value, value)) for value in SUBSCRIBABLE_EVENT_TYPES]


class EndpointForm(forms.Form):
    url = forms.CharField(max_length=2048, label="Endpoint URL")
    description = forms.CharField(max_length=200, required=False)
    event_types = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Events",
        help_text="Leave all unticked to receive every event.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["event_types"].choices = _event_type_choices()  # type: ignore[attr-defined]


def _page(
    request: HttpRequest, *, form: EndpointForm | None = None, status: int = 200
) -> HttpResponse:
    organization = organization_of(request)
    # Admins see the organization's secret here (SPEC §7); it is created on first view.
    secret = webhook_services.webhook_secret_reveal(organization=organization)
    signing = webhook_secrets_for_signing(organization=organization, now=timezone.now())
    deliveries = Paginator(delivery_list(organization=organization), DELIVERIES_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "dashboard/webhooks.html",
        {
            "endpoints": list(endpoint_list(organization=organization)),
            "secret": secret,
            "previous_secrets": max(len(signing) - 1, 0),
            "deliveries": deliveries,
            "delivery_rows": [presenters.delivery_row(d) for d in deliveries],
            "form": form or EndpointForm(),
            "nav": "webhooks",
        },
        status=status,
    )


@require_GET
@dashboard_view(Capability.MANAGE_WEBHOOKS)
def index(request: HttpRequest) -> HttpResponse:
    return _page(request)


@require_POST
@dashboard_view(Capability.MANAGE_WEBHOOKS)
def endpoint_new(request: HttpRequest) -> HttpResponse:
    form = EndpointForm(request.POST)
    if form.is_valid():
        try:
            webhook_services.endpoint_create(
                organization=organization_of(request),
                url=form.cleaned_data["url"],
                description=form.cleaned_data["description"],
                event_types=form.cleaned_data["event_types"],
            )
        except ServiceError as exc:
            form.add_error("url" if exc.details.get("field") == "url" else None, exc.message)
        else:
            messages.success(request, "Endpoint added.")
            return redirect("dashboard:webhooks")
    return _page(request, form=form, status=400)


@require_POST
@dashboard_view(Capability.MANAGE_WEBHOOKS)
def endpoint_toggle(request: HttpRequest, endpoint_id: int) -> HttpResponse:
    enable = request.POST.get("enable") == "1"
    endpoint = webhook_services.endpoint_update(
        organization=organization_of(request), endpoint_id=endpoint_id, is_enabled=enable
    )
    messages.success(request, f"{endpoint.url} is {'enabled' if enable else 'disabled'}.")
    return redirect("dashboard:webhooks")


@require_POST
@dashboard_view(Capability.MANAGE_WEBHOOKS)
def endpoint_delete(request: HttpRequest, endpoint_id: int) -> HttpResponse:
    webhook_services.endpoint_delete(organization=organization_of(request), endpoint_id=endpoint_id)
    messages.success(request, "Endpoint deleted.")
    return redirect("dashboard:webhooks")


@require_POST
@dashboard_view(Capability.MANAGE_WEBHOOKS)
def endpoint_test(request: HttpRequest, endpoint_id: int) -> HttpResponse:
    try:
        delivery = webhook_services.endpoint_send_test_event(
            organization=organization_of(request), endpoint_id=endpoint_id
        )
    except ServiceError as exc:
        if exc.http_status == 404:
            raise
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Test event queued for {delivery.url}. See Deliveries below.")
    return redirect("dashboard:webhooks")


@require_POST
@dashboard_view(Capability.MANAGE_WEBHOOKS)
def delivery_resend(request: HttpRequest, delivery_id: int) -> HttpResponse:
    try:
        webhook_services.delivery_resend(
            organization=organization_of(request), delivery_id=delivery_id
        )
    except ServiceError as exc:
        if exc.http_status == 404:
            raise
        messages.error(request, exc.message)
    else:
        messages.success(request, "The message is being delivered again.")
    target = request.POST.get("next") or ""
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = reverse("dashboard:webhooks")
    return redirect(target)


@require_POST
@dashboard_view(Capability.MANAGE_WEBHOOKS)
def secret_rotate(request: HttpRequest) -> HttpResponse:
    webhook_services.webhook_secret_rotate(organization=organization_of(request))
    messages.success(
        request, "New signing secret created. The previous one keeps working for a while."
    )
    return redirect("dashboard:webhooks")
