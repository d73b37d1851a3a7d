from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.operator.admin_tools import AuditedAdminMixin, CappedCountPaginator, bounded
from apps.operator.services import audit_record

from .models import ApiKey
from .services import api_key_revoke

#: What an operator sees of a key. Never the hash: the plaintext was shown once, to its owner.
KEY_FIELDS = (
    "name",
    "prefix",
    "is_test",
    "can_midjourney",
    "read_only",
    "can_read_billing",
    "allowed_ips",
    "expires_at",
    "last_used_at",
    "revoked_at",
)


@admin.register(ApiKey)
class ApiKeyAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """Keys are issued by their owners; operators inspect and revoke. Hashes are never shown."""

    list_display = (
        "name",
        "prefix",
        "organization",
        "is_test",
        "can_midjourney",
        "read_only",
        "last_used_at",
        "expires_at",
        "revoked_at",
    )
    list_filter = ("is_test", "can_midjourney", "read_only")
    list_select_related = ("organization",)
    search_fields = ("name", "prefix", "organization__name")
    exclude = ("key_hash",)
    readonly_fields = (
        "organization",
        "prefix",
        "is_test",
        "last_used_at",
        "last_used_ip",
        "created_by",
        "created_at",
        "revoked_at",
    )
    show_full_result_count = False
    paginator = CappedCountPaginator
    show_facets = admin.ShowFacets.NEVER
    actions = ("revoke_keys",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        rows = bounded(self, request, queryset.select_related("organization"))
        if rows is None:
            return
        count = 0
        for api_key in rows:
            if api_key.revoked_at is None:
                api_key_revoke(api_key=api_key)
                audit_record(
                    actor=request.user,
                    action="api_key.revoke",
                    obj=api_key,
                    before={"revoked_at": None},
                    after={"revoked_at": api_key.revoked_at},
                )
                count += 1
        self.message_user(request, f"Revoked {count} key(s).", messages.SUCCESS)


class ApiKeyInline(admin.TabularInline):
    """The organization's keys, read-only; revoke them from the key list or the key's page."""

    model = ApiKey
    extra = 0
    can_delete = False
    fields = KEY_FIELDS
    readonly_fields = KEY_FIELDS
    show_change_link = True
    ordering = ("-created_at",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
