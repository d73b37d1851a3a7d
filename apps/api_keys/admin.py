from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from .models import ApiKey
from .services import api_key_revoke


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
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
    actions = ("revoke_keys",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Revoke selected keys")
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count = 0
        for api_key in queryset:
            if api_key.revoked_at is None:
                api_key_revoke(api_key=api_key)
                count += 1
        self.message_user(request, f"Revoked {count} key(s).", messages.SUCCESS)
