"""The audit log in the admin (read-only), the operator's composed organization page, and the
audited versions of admins other apps register (groups, e-mail addresses, authenticators)."""

from __future__ import annotations

import json
from typing import Any

from allauth.account.admin import EmailAddressAdmin
from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin
from django.contrib.auth.models import Group
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from apps.accounts.admin import MembershipAdmin, UserAdmin
from apps.accounts.models import Membership, Organization, User
from apps.api_keys.admin import ApiKeyInline
from apps.billing.admin import BillingOrganizationAdmin

from .admin_tools import AuditedAdminMixin, CappedCountPaginator, bounded, csv_export
from .models import AuditEntry
from .services import audit_record


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """Who did what, when, to which object. Nobody — not even a superuser — edits it here."""

    list_display = (
        "created_at",
        "actor_label",
        "action",
        "object_link",
        "reason_short",
    )
    list_filter = ("action", "object_type")
    search_fields = ("=object_id", "actor_label", "object_repr", "reason")
    show_full_result_count = False
    paginator = CappedCountPaginator
    show_facets = admin.ShowFacets.NEVER
    fields = (
        "created_at",
        "actor_label",
        "actor",
        "action",
        "object_type",
        "object_id",
        "object_link",
        "reason",
        "before_pretty",
        "after_pretty",
    )
    readonly_fields = fields
    actions = ("export_csv",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="object")
    def object_link(self, obj: AuditEntry) -> str:
        label = obj.object_repr or f"{obj.object_type} {obj.object_id}".strip()
        if obj.object_type and obj.object_id and "." in obj.object_type:
            app_label, model = obj.object_type.split(".", 1)
            try:
                url = reverse(f"admin:{app_label}_{model}_change", args=[obj.object_id])
            except NoReverseMatch:
                return label
            return format_html('<a href="{}">{}</a>', url, label)
        return label

    @admin.display(description="reason")
    def reason_short(self, obj: AuditEntry) -> str:
        return obj.reason if len(obj.reason) <= 80 else obj.reason[:79] + "…"

    @admin.display(description="before")
    def before_pretty(self, obj: AuditEntry) -> str:
        return _pretty(obj.before)

    @admin.display(description="after")
    def after_pretty(self, obj: AuditEntry) -> str:
        return _pretty(obj.after)

    @admin.action(description="Export selected entries as CSV")
    def export_csv(
        self, request: HttpRequest, queryset: QuerySet[AuditEntry]
    ) -> StreamingHttpResponse:
        return csv_export(
            actor=request.user,
            model=AuditEntry,
            columns=[
                ("id", lambda e: e.pk),
                ("created_at", lambda e: e.created_at.isoformat()),
                ("actor", lambda e: e.actor_label),
                ("action", lambda e: e.action),
                ("object_type", lambda e: e.object_type),
                ("object_id", lambda e: e.object_id),
                ("object", lambda e: e.object_repr),
                ("reason", lambda e: e.reason),
                ("before", lambda e: json.dumps(e.before, sort_keys=True)),
                ("after", lambda e: json.dumps(e.after, sort_keys=True)),
            ],
            rows=queryset.order_by("-id").iterator(chunk_size=1000),
            filename="audit-log.csv",
        )


def _pretty(value: Any) -> str:
    if value is None:
        return "–"
    return format_html(
        '<pre class="operator-pre">{}</pre>', json.dumps(value, indent=2, sort_keys=True)
    )


class OperatorOrganizationAdmin(BillingOrganizationAdmin):
    """Accounts' organization page with billing's balance and actions, plus the API keys.

    Composed here because the operator app is the one that knows every other app; accounts
    cannot import api_keys without a cycle.
    """

    show_full_result_count = False
    paginator = CappedCountPaginator
    show_facets = admin.ShowFacets.NEVER

    def get_inlines(self, request: HttpRequest, obj: Any) -> Any:
        return (*super().get_inlines(request, obj), ApiKeyInline)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Organization]:
        # A queryset that already selects related rows makes the changelist skip
        # ``list_select_related``: name the tier here too, or it costs a query per row.
        return super().get_queryset(request).select_related("tier")


admin.site.unregister(Organization)
admin.site.register(Organization, OperatorOrganizationAdmin)


class OperatorAuthenticatorAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """Users' second factors: listed, and deletable to reset a locked-out user's MFA (audited).

    allauth's own admin shows ``data``, which holds the TOTP secret and the recovery-code seed
    (encrypted by ``apps.accounts.adapters.MFAAdapter``, still a credential). Never shown here.
    """

    list_display = ("user", "type", "created_at", "last_used_at")
    list_filter = ("type",)
    list_select_related = ("user",)
    show_full_result_count = False
    paginator = CappedCountPaginator
    show_facets = admin.ShowFacets.NEVER
    search_fields = ("user__email",)
    fields = ("user", "type", "created_at", "last_used_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


admin.site.unregister(Authenticator)
admin.site.register(Authenticator, OperatorAuthenticatorAdmin)


class OperatorGroupAdmin(AuditedAdminMixin, GroupAdmin):
    """Groups carry admin permissions: granting or revoking one is an audited action."""


admin.site.unregister(Group)
admin.site.register(Group, OperatorGroupAdmin)


class OperatorEmailAddressAdmin(AuditedAdminMixin, EmailAddressAdmin):
    """A user's e-mail addresses are how they log in and reset a password: editing one, or
    marking it verified, could hand an account to someone else, so every change is audited."""

    actions = ["make_verified"]

    # Only for those who may change addresses: allauth's action declares no permission, so
    # Django would offer it to anyone who may view the list.
    @admin.action(
        description=EmailAddressAdmin.make_verified.short_description, permissions=["change"]
    )
    def make_verified(self, request: HttpRequest, queryset: QuerySet[EmailAddress]) -> None:
        rows = bounded(self, request, queryset.filter(verified=False).select_related("user"))
        if rows is None:
            return
        ids = [row.pk for row in rows]
        super().make_verified(request, EmailAddress.objects.filter(pk__in=ids))
        verified = set(
            EmailAddress.objects.filter(pk__in=ids, verified=True).values_list("pk", flat=True)
        )
        for row in rows:
            if row.pk in verified:
                audit_record(
                    actor=request.user,
                    action="email_address.verify",
                    obj=row,
                    before={"verified": False},
                    after={"verified": True},
                )


admin.site.unregister(EmailAddress)
admin.site.register(EmailAddress, OperatorEmailAddressAdmin)


class OperatorUserAdmin(UserAdmin):
    """Accounts' user admin, without a full count of a table that grows with every sign-up."""

    show_full_result_count = False
    paginator = CappedCountPaginator
    show_facets = admin.ShowFacets.NEVER


class OperatorMembershipAdmin(MembershipAdmin):
    show_full_result_count = False
    paginator = CappedCountPaginator
    show_facets = admin.ShowFacets.NEVER


admin.site.unregister(User)
admin.site.register(User, OperatorUserAdmin)
admin.site.unregister(Membership)
admin.site.register(Membership, OperatorMembershipAdmin)
