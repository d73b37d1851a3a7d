"""Upstream accounts in the operator admin (SPEC §5, §10).

Credentials are write-only: the form has a field that replaces them and never renders what is
stored (not even masked), and nothing in the list, the history or an export shows them. Saves
go through ``upstream_account_create`` / ``upstream_account_update``, which validate the
engine's options and keep credentials out of the plain ``options``.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils import timezone
from django.utils.html import format_html

from apps.core.errors import ServiceError
from apps.operator.admin_tools import (
    AuditedAdminMixin,
    action_form_page,
    bounded,
    csv_export,
)
from apps.operator.services import audit_record
from apps.tasks.enums import Mode, Status
from apps.tasks.models import Task

from .base import engine_names
from .models import Health, UpstreamAccount
from .own_services import own_account_update_by_operator
from .services import (
    upstream_account_clean,
    upstream_account_create,
    upstream_account_set_enabled,
    upstream_account_set_health,
    upstream_account_update,
)

#: The per-mode counters cover this window (a lifetime count would scan every task ever run).
COUNTER_WINDOW = timedelta(hours=24)


class ModesField(forms.MultipleChoiceField):
    """Checkboxes; a single JSON list (``["FAST", "RELAX"]``) is accepted too, for scripts."""

    def to_python(self, value: Any) -> list[str]:
        if isinstance(value, list | tuple) and len(value) == 1:
            value = value[0]
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    parsed = json.loads(text)
                except ValueError:
                    raise forms.ValidationError("Modes must be a JSON list.") from None
                return [str(item) for item in parsed] if isinstance(parsed, list) else []
            return [text] if text else []
        return super().to_python(value)


class UpstreamAccountForm(forms.ModelForm):
    # Validated by the service (one message for the form, the command and the API alike).
    engine = forms.CharField(widget=forms.Select(choices=()))
    modes = ModesField(
        choices=Mode.choices, widget=forms.CheckboxSelectMultiple, help_text="Modes served."
    )
    options = forms.JSONField(
        required=False,
        initial=dict,
        help_text='Engine options as a JSON object, e.g. {"duration": 5} for the sandbox or '
        '{"base_url": "https://…"} for mjproxy. Credentials do not belong here.',
    )
    new_secrets = forms.CharField(
        label="Set credentials",
        required=False,
        strip=True,
        # render_value=False: a stored or just-typed credential never comes back to the page.
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text='Write-only. A JSON object such as {"secret": "…"}; it replaces the stored '
        "credentials. Leave empty to keep them.",
    )
    clear_secrets = forms.BooleanField(
        label="Remove stored credentials", required=False, help_text="Takes effect on save."
    )

    class Meta:
        model = UpstreamAccount
        fields = ("name", "engine", "modes", "concurrency", "queue_size", "run_timeout_seconds")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["engine"].widget.choices = [(name, name) for name in engine_names()]
        if self.instance.pk is not None:
            self.fields["engine"].disabled = True
            self.fields["engine"].help_text = "Fixed once created: its jobs belong to it."
            self.fields["options"].initial = self.instance.options
            self.fields["modes"].initial = list(self.instance.modes or [])
        self.secrets_to_set: dict[str, Any] | None = None

    def clean_new_secrets(self) -> dict[str, Any] | None:
        raw = self.cleaned_data.get("new_secrets") or ""
        if not raw:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            # Never echo the input: it is a credential.
            raise forms.ValidationError("Credentials must be a JSON object.") from None
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise forms.ValidationError("Credentials must be a JSON object.")
        return value

    def clean_options(self) -> dict[str, Any]:
        value = self.cleaned_data.get("options")
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise forms.ValidationError("Options must be a JSON object.")
        return value

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data
        secrets: dict[str, Any] | None = data.get("new_secrets")
        if data.get("clear_secrets"):
            secrets = {}
        if secrets is None and self.instance.pk is not None:
            secrets = dict(self.instance.secrets or {})
        try:
            clean = upstream_account_clean(
                engine=self.instance.engine if self.instance.pk else data["engine"],
                name=data["name"],
                modes=list(data["modes"]),
                concurrency=data["concurrency"],
                queue_size=data["queue_size"],
                run_timeout_seconds=data["run_timeout_seconds"],
                options=data.get("options") or {},
                secrets=secrets,
            )
        except ServiceError as exc:
            raise forms.ValidationError(exc.message) from None
        data["options"] = clean.options
        self.secrets_to_set = clean.secrets
        return data


def _count(status_filter: Q) -> Coalesce:
    """Tasks of the row's account matching ``status_filter``: a correlated COUNT that walks
    the ``(upstream_account, status)`` index, one per row, no join fan-out."""
    subquery = (
        Task.objects.filter(status_filter, upstream_account=OuterRef("pk"))
        .order_by()
        .values("upstream_account")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(subquery, output_field=IntegerField()), Value(0))


@admin.register(UpstreamAccount)
class UpstreamAccountAdmin(AuditedAdminMixin, admin.ModelAdmin):
    form = UpstreamAccountForm
    list_display = (
        "account_display",
        "engine",
        "modes_display",
        "is_enabled",
        "health_display",
        "running_display",
        "submitted_count",
        "success_rate",
        "mode_counters",
        "last_used_at",
        "last_error_short",
    )
    list_filter = ("is_enabled", "health", "engine", "is_sandbox_pool", "owner")
    search_fields = ("name", "owner__name")
    list_select_related = ("owner",)
    ordering = ("name",)
    actions = (
        "enable",
        "disable",
        "mark_healthy",
        "set_health",
        "export_csv",
    )
    readonly_fields = (
        "owner",
        "credentials_state",
        "is_enabled",
        "is_sandbox_pool",
        "health",
        "health_reason",
        "health_changed_at",
        "cooldown_until",
        "running_display",
        "submitted_count",
        "total_submitted",
        "total_succeeded",
        "total_failed",
        "success_rate",
        "consecutive_failures",
        "mode_counters",
        "last_error",
        "last_used_at",
        "created_at",
        "updated_at",
    )

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        settings_fields = (
            "name",
            "engine",
            "modes",
            "concurrency",
            "queue_size",
            "run_timeout_seconds",
            "options",
        )
        credentials = ("credentials_state", "new_secrets", "clear_secrets")
        if obj is None:
            return (
                (None, {"fields": settings_fields}),
                ("Credentials", {"fields": credentials[1:2]}),
            )
        return (
            (None, {"fields": settings_fields}),
            ("Credentials", {"fields": credentials}),
            (
                "State",
                {
                    "fields": (
                        "is_enabled",
                        "is_sandbox_pool",
                        "health",
                        "health_reason",
                        "health_changed_at",
                        "cooldown_until",
                        "consecutive_failures",
                        "last_error",
                        "last_used_at",
                    )
                },
            ),
            (
                "Load and counters",
                {
                    "fields": (
                        "running_display",
                        "submitted_count",
                        "total_submitted",
                        "total_succeeded",
                        "total_failed",
                        "success_rate",
                        "mode_counters",
                        "created_at",
                        "updated_at",
                    )
                },
            ),
        )

    def get_queryset(self, request: HttpRequest) -> QuerySet[UpstreamAccount]:
        since = timezone.now() - COUNTER_WINDOW
        annotations: dict[str, Any] = {
            "running_n": _count(Q(status=Status.IN_PROGRESS)),
            "submitted_n": _count(Q(status=Status.SUBMITTED)),
        }
        for mode in Mode.values:
            recent = Q(mode=mode, finished_at__gte=since)
            annotations[f"ok_{mode}"] = _count(recent & Q(status=Status.SUCCESS))
            annotations[f"fail_{mode}"] = _count(recent & Q(status=Status.FAILURE))
        return super().get_queryset(request).annotate(**annotations)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Deleting an account strands its tasks' history; disable it instead.
        return False

    # --- columns ---------------------------------------------------------------------------

    @admin.display(description="account", ordering="name")
    def account_display(self, obj: UpstreamAccount) -> str:
        """The name, and under it whose it is: a tenant's own account names its owner (one
        column instead of two keeps the list inside 1280 px)."""
        owner = obj.owner.name if obj.owner_id and obj.owner else "shared pool"
        return format_html('{}<div class="small quiet">{}</div>', obj.name, owner)

    @admin.display(description="modes")
    def modes_display(self, obj: UpstreamAccount) -> str:
        return ", ".join(obj.modes or [])

    @admin.display(description="health", ordering="health")
    def health_display(self, obj: UpstreamAccount) -> str:
        if obj.health == Health.HEALTHY:
            return obj.get_health_display()
        reason = f": {obj.health_reason}" if obj.health_reason else ""
        return f"{obj.get_health_display()}{reason}"

    @admin.display(description="running")
    def running_display(self, obj: UpstreamAccount) -> str:
        return f"{getattr(obj, 'running_n', 0)} / {obj.concurrency}"

    @admin.display(description="assigned")
    def submitted_count(self, obj: UpstreamAccount) -> int:
        return int(getattr(obj, "submitted_n", 0))

    @admin.display(description="success rate")
    def success_rate(self, obj: UpstreamAccount) -> str:
        finished = obj.total_succeeded + obj.total_failed
        if not finished:
            return "–"
        return f"{100 * obj.total_succeeded / finished:.1f} % of {finished:,}"

    @admin.display(description="24 h ok/failed")
    def mode_counters(self, obj: UpstreamAccount) -> str:
        parts = []
        for mode in Mode.values:
            ok = int(getattr(obj, f"ok_{mode}", 0) or 0)
            failed = int(getattr(obj, f"fail_{mode}", 0) or 0)
            if mode in (obj.modes or []) or ok or failed:
                parts.append(f"{mode} {ok}/{failed}")
        return ", ".join(parts) or "–"

    @admin.display(description="last error")
    def last_error_short(self, obj: UpstreamAccount) -> str:
        text = obj.last_error or ""
        return text if len(text) <= 80 else text[:79] + "…"

    @admin.display(description="stored credentials")
    def credentials_state(self, obj: UpstreamAccount) -> str:
        stored: dict[str, Any] = obj.secrets or {}  # type: ignore[assignment]
        names = sorted(stored)
        if not names:
            return "none"
        return format_html(
            '{} <span class="operator-secret-note">(values are never shown)</span>',
            ", ".join(f"{name} (set)" for name in names),
        )

    # --- saving ------------------------------------------------------------------------------

    def perform_save(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        """Through the services; the mixin around this records the audit entry."""
        data = form.cleaned_data
        if change:
            changes: dict[str, Any] = {
                "name": data["name"],
                "modes": list(data["modes"]),
                "concurrency": data["concurrency"],
                "queue_size": data["queue_size"],
                "run_timeout_seconds": data["run_timeout_seconds"],
                "options": data["options"],
                "secrets": form.secrets_to_set,
            }
            if obj.owner_id is None:
                upstream_account_update(account=obj, **changes)
                return
            # A tenant's own account: a mode taken from its last account serving it fails the
            # tenant's queued own-only tasks of that mode, as the tenant's own change does.
            _, failed = own_account_update_by_operator(account=obj, **changes)
            if failed:
                self.message_user(
                    request,
                    f"{len(failed)} queued own-only task(s) of {obj.owner} failed: none of its "
                    "own accounts serves their mode any more.",
                    messages.WARNING,
                )
            return
        created = upstream_account_create(
            engine=data["engine"],
            name=data["name"],
            modes=list(data["modes"]),
            concurrency=data["concurrency"],
            queue_size=data["queue_size"],
            run_timeout_seconds=data["run_timeout_seconds"],
            options={**data["options"], **(form.secrets_to_set or {})},
        )
        obj.pk = created.pk
        obj._state.adding = False
        obj.refresh_from_db()

    # --- actions -----------------------------------------------------------------------------

    def _set_enabled(
        self, request: HttpRequest, queryset: QuerySet[UpstreamAccount], enabled: bool
    ) -> None:
        rows = bounded(self, request, queryset)
        if rows is None:
            return
        changed = 0
        for account in rows:
            if account.is_enabled == enabled:
                continue
            upstream_account_set_enabled(account=account, enabled=enabled)
            audit_record(
                actor=request.user,
                action="upstream_account.enable" if enabled else "upstream_account.disable",
                obj=account,
                before={"is_enabled": not enabled},
                after={"is_enabled": enabled},
            )
            changed += 1
        word = "Enabled" if enabled else "Disabled"
        note = "" if enabled else " No new tasks are dispatched to them; running jobs finish."
        self.message_user(request, f"{word} {changed} account(s).{note}", messages.SUCCESS)

    @admin.action(description="Enable selected accounts", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[UpstreamAccount]) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable selected accounts", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet[UpstreamAccount]) -> None:
        self._set_enabled(request, queryset, False)

    def _apply_health(
        self, request: HttpRequest, rows: list[UpstreamAccount], health: str, reason: str
    ) -> None:
        for account in rows:
            before = {"health": account.health, "health_reason": account.health_reason}
            upstream_account_set_health(account=account, health=health, reason=reason)
            audit_record(
                actor=request.user,
                action="upstream_account.set_health",
                obj=account,
                before=before,
                after={"health": account.health, "health_reason": account.health_reason},
                reason=reason,
            )
        label = Health(health).label
        self.message_user(request, f"Set {len(rows)} account(s) to {label}.", messages.SUCCESS)

    @admin.action(description="Mark selected accounts healthy", permissions=["change"])
    def mark_healthy(self, request: HttpRequest, queryset: QuerySet[UpstreamAccount]) -> None:
        rows = bounded(self, request, queryset)
        if rows is not None:
            self._apply_health(request, rows, Health.HEALTHY, "Marked healthy by an operator.")

    @admin.action(description="Set health state (with a reason)…", permissions=["change"])
    def set_health(
        self, request: HttpRequest, queryset: QuerySet[UpstreamAccount]
    ) -> HttpResponse | None:
        rows = bounded(self, request, queryset)
        if rows is None:
            return None
        form = HealthForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            self._apply_health(
                request, rows, form.cleaned_data["health"], form.cleaned_data["reason"]
            )
            return None
        return action_form_page(
            self,
            request,
            rows=rows,
            form=form,
            action_name="set_health",
            title="Set health state",
            intro="Only healthy accounts (and cooled-down ones) receive new tasks. The reason "
            "is shown on the account and stored in the audit log.",
            submit_label="Set health",
        )

    @admin.action(description="Export selected accounts as CSV (no credentials)")
    def export_csv(
        self, request: HttpRequest, queryset: QuerySet[UpstreamAccount]
    ) -> StreamingHttpResponse:
        return csv_export(
            actor=request.user,
            model=UpstreamAccount,
            columns=[
                ("id", lambda a: a.pk),
                ("name", lambda a: a.name),
                ("engine", lambda a: a.engine),
                ("modes", lambda a: ",".join(a.modes or [])),
                ("concurrency", lambda a: a.concurrency),
                ("enabled", lambda a: a.is_enabled),
                ("health", lambda a: a.health),
                ("health_reason", lambda a: a.health_reason),
                ("running", lambda a: getattr(a, "running_n", 0)),
                ("total_submitted", lambda a: a.total_submitted),
                ("total_succeeded", lambda a: a.total_succeeded),
                ("total_failed", lambda a: a.total_failed),
                ("last_error", lambda a: a.last_error),
                ("last_used_at", lambda a: a.last_used_at),
            ],
            rows=queryset,
            filename="upstream-accounts.csv",
        )


class HealthForm(forms.Form):
    health = forms.ChoiceField(choices=Health.choices)
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Required. Shown on the account and stored in the audit log.",
    )

    def clean_reason(self) -> str:
        reason = " ".join(str(self.cleaned_data["reason"]).split())
        if not reason:
            raise forms.ValidationError("A reason is required.")
        return reason
