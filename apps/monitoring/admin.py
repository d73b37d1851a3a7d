"""Alert thresholds and the alert log in the operator admin."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from apps.core.errors import ValidationFailed
from apps.core.http import check_url
from apps.operator.admin_tools import AuditedAdminMixin

from .models import Alert, AlertSettings
from .services import alert_settings_set_slack_url


class AlertSettingsForm(forms.ModelForm):
    new_slack_webhook_url = forms.URLField(
        label="Slack-compatible webhook URL",
        required=False,
        assume_scheme="https",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Write-only. An incoming-webhook URL (Slack, Mattermost, Rocket.Chat …); "
        'alerts are posted as {"text": …}.',
    )
    clear_slack_webhook_url = forms.BooleanField(required=False, label="Remove the webhook URL")

    class Meta:
        model = AlertSettings
        fields = (
            "queue_wait_minutes",
            "success_rate_percent",
            "success_rate_min_tasks",
            "webhooks_disabled_count",
            "ledger_check_minutes",
            "email_staff",
        )

    def clean_new_slack_webhook_url(self) -> str:
        url = self.cleaned_data.get("new_slack_webhook_url") or ""
        if url:
            # The same guard deliveries use, so a refused URL is said now, not at the first alert.
            try:
                check_url(url)
            except ValidationFailed as exc:
                raise forms.ValidationError(exc.message) from None
        return url


@admin.register(AlertSettings)
class AlertSettingsAdmin(AuditedAdminMixin, admin.ModelAdmin):
    form = AlertSettingsForm
    readonly_fields = ("webhook_state", "ledger_checked_at", "ledger_drifts")
    fieldsets = (
        (
            "Thresholds",
            {
                "fields": (
                    "queue_wait_minutes",
                    "success_rate_percent",
                    "success_rate_min_tasks",
                    "webhooks_disabled_count",
                    "ledger_check_minutes",
                )
            },
        ),
        (
            "Where alerts go",
            {
                "fields": (
                    "email_staff",
                    "webhook_state",
                    "new_slack_webhook_url",
                    "clear_slack_webhook_url",
                )
            },
        ),
        ("Ledger audit", {"fields": ("ledger_checked_at", "ledger_drifts")}),
    )

    @admin.display(description="Webhook")
    def webhook_state(self, obj: AlertSettings) -> str:
        return "set (never shown)" if obj.slack_webhook_url_encrypted else "none"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return not AlertSettings.objects.exists()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def perform_save(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().perform_save(request, obj, form, change)
        data = form.cleaned_data
        if data.get("clear_slack_webhook_url"):
            alert_settings_set_slack_url(settings=obj, url="")
        elif data.get("new_slack_webhook_url"):
            alert_settings_set_slack_url(settings=obj, url=data["new_slack_webhook_url"])


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ("title", "kind", "opened_at", "resolved_at", "is_open")
    list_filter = ("kind", ("resolved_at", admin.EmptyFieldListFilter))
    search_fields = ("title", "key")
    readonly_fields = ("key", "kind", "title", "detail", "opened_at", "resolved_at", "notified")

    @admin.display(boolean=True, description="Open")
    def is_open(self, obj: Alert) -> bool:
        return obj.is_open

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The alert log is a record: alerts resolve themselves, nobody deletes them.
        return False
