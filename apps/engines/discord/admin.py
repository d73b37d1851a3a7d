"""The discord engine's tables in the operator admin, read-only: who holds which account's
gateway, and what each interaction became (for support: a task's nonce, messages, errors)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import DiscordJob, GatewayLease


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(GatewayLease)
class GatewayLeaseAdmin(ReadOnlyAdmin):
    list_display = ("account", "holder", "expires_at", "user_id", "sequence")
    list_select_related = ("account",)
    search_fields = ("holder", "account__name")


@admin.register(DiscordJob)
class DiscordJobAdmin(ReadOnlyAdmin):
    list_display = ("nonce", "task_id", "account", "action", "phase", "progress", "error_code")
    list_filter = ("phase", "action", "error_code")
    list_select_related = ("account",)
    search_fields = ("=nonce", "=task_id", "=message_id", "=result_message_id")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
