"""Operator views of webhooks (SPEC §10). Secrets are never shown; resend goes through the service."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.core.errors import ServiceError
from apps.operator.admin_tools import AuditedAdminMixin, CappedCountPaginator, bounded
from apps.operator.services import audit_record

from .models import SUBSCRIBABLE_EVENT_TYPES, WebhookDelivery, WebhookEndpoint, WebhookEvent
from .services import delivery_resend, endpoint_update


class WebhookEndpointForm(forms.ModelForm):
    class Meta:
        model = WebhookEndpoint
        fields = ("description", "event_types", "is_enabled")

    def clean_event_types(self) -> Any:
        value = self.cleaned_data["event_types"]
        if not isinstance(value, list) or not all(
            isinstance(t, str) and t in SUBSCRIBABLE_EVENT_TYPES for t in value
        ):
            raise forms.ValidationError(
                "A list of event types from: " + ", ".join(SUBSCRIBABLE_EVENT_TYPES) + "."
            )
        return value


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """Operators may pause an endpoint or change its subscriptions; its URL is the customer's
    (changed by them, through the URL guard). Saving goes through ``endpoint_update``, so
    enabling an endpoint clears its failure record exactly as in the dashboard."""

    form = WebhookEndpointForm
    list_display = (
        "url",
        "organization",
        "is_enabled",
        "disabled_reason",
        "failing_since",
        "created_at",
    )
    list_filter = ("is_enabled",)
    list_select_related = ("organization",)
    show_full_result_count = False
    paginator = CappedCountPaginator
    show_facets = admin.ShowFacets.NEVER
    search_fields = ("url", "description", "organization__name")
    readonly_fields = (
        "organization",
        "url",
        "disabled_reason",
        "disabled_at",
        "failing_since",
        "created_at",
        "updated_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Endpoints are created by their organization, through the URL guard of the service.
        return False

    def perform_save(
        self, request: HttpRequest, obj: WebhookEndpoint, form: Any, change: bool
    ) -> None:
        saved = endpoint_update(
            organization=obj.organization,
            endpoint_id=obj.pk,
            description=obj.description,
            event_types=obj.event_types,
            is_enabled=obj.is_enabled,
        )
        for field in ("is_enabled", "disabled_reason", "disabled_at", "failing_since"):
            setattr(obj, field, getattr(saved, field))


class DeliveryInline(admin.TabularInline):
    model = WebhookDelivery
    extra = 0
    can_delete = False
    fields = ("attempt", "trigger", "state", "attempted_at", "status_code", "latency_ms", "error")
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    list_display = ("msg_id", "event_type", "organization", "task_ref", "state", "created_at")
    list_filter = ("state", "event_type")
    list_select_related = ("organization",)
    show_full_result_count = False
    paginator = CappedCountPaginator
    show_facets = admin.ShowFacets.NEVER
    search_fields = ("msg_id", "task__id", "url", "organization__name")
    readonly_fields = [f.name for f in WebhookEvent._meta.fields]
    inlines = (DeliveryInline,)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # The outbox and its attempt log are evidence; the retention purge removes old ones.
        return False

    @admin.display(description="task", ordering="task_id")
    def task_ref(self, obj: WebhookEvent) -> str:
        # The id alone: rendering the task itself would load a task row per line.
        return obj.task_id or "—"


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    """The attempt log. Read-only; the resend action adds an attempt through the service."""

    list_display = (
        "id",
        "event",
        "organization",
        "attempt",
        "trigger",
        "state",
        "status_code",
        "latency_ms",
        "attempted_at",
        "next_attempt_at",
    )
    list_filter = ("state", "trigger")
    list_select_related = ("event", "organization")
    show_full_result_count = False
    paginator = CappedCountPaginator
    show_facets = admin.ShowFacets.NEVER
    search_fields = ("event__msg_id", "event__task__id", "url", "organization__name")
    readonly_fields = [
        f.name
        for f in WebhookDelivery._meta.fields
        if f.name not in ("claim_token", "dispatched_until", "claimed_until")
    ]
    exclude = ("claim_token", "dispatched_until", "claimed_until")
    actions = ("resend",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # Inspection only: saving the page would write a stale copy over a worker's outcome.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_resend_permission(self, request: HttpRequest) -> bool:
        # The page is read-only for everyone; resending is a write and needs the change right.
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    @admin.action(
        description="Resend the messages of the selected deliveries", permissions=["resend"]
    )
    def resend(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        rows = bounded(self, request, queryset.select_related("organization", "event"))
        if rows is None:
            return
        resent = 0
        for delivery in rows:
            try:
                attempt = delivery_resend(
                    organization=delivery.organization, delivery_id=delivery.pk
                )
            except ServiceError as exc:
                self.message_user(request, f"Delivery {delivery.pk}: {exc.message}", messages.ERROR)
                continue
            audit_record(
                actor=request.user,
                action="webhook_delivery.resend",
                obj=delivery.event,
                before={"delivery": delivery.pk, "state": delivery.state},
                after={"delivery": attempt.pk, "state": attempt.state},
            )
            resent += 1
        self.message_user(request, f"Resent {resent} message(s).", messages.SUCCESS)
