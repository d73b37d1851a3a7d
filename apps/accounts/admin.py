from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from apps.operator.admin_tools import AuditedAdminMixin

from .models import Invitation, Membership, MembershipTier, Organization, User


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ("user",)
    fields = ("user", "role", "created_at")
    readonly_fields = ("created_at",)


@admin.register(User)
class UserAdmin(AuditedAdminMixin, BaseUserAdmin):
    ordering = ("email",)
    list_display = ("email", "name", "is_staff", "is_active", "date_joined")
    search_fields = ("email", "name")
    list_filter = ("is_staff", "is_superuser", "is_active")
    fieldsets = (
        (None, {"fields": ("email", "password", "name")}),
        (
            "Permissions",
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)
    inlines = (MembershipInline,)


@admin.register(MembershipTier)
class MembershipTierAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = (
        "code",
        "name",
        "max_unfinished_tasks",
        "allowed_modes",
        "max_own_accounts",
        "stripe_price_id",
        "is_default",
        "sort_order",
    )
    list_editable = ("max_unfinished_tasks",)
    ordering = ("sort_order",)


@admin.register(Organization)
class OrganizationAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("name", "tier", "is_personal", "is_active", "created_at")
    list_filter = ("tier", "is_personal", "is_active")
    list_select_related = ("tier",)
    search_fields = ("name", "memberships__user__email", "stripe_customer_id")
    fields = (
        "name",
        "tier",
        "is_personal",
        "is_active",
        "stripe_customer_id",
        "stripe_subscription_id",
        "created_at",
    )
    readonly_fields = ("is_personal", "created_at")
    inlines = (MembershipInline,)
    show_full_result_count = False


@admin.register(Membership)
class MembershipAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("user", "organization", "role", "created_at")
    list_filter = ("role",)
    list_select_related = ("user", "organization")
    search_fields = ("user__email", "organization__name")
    autocomplete_fields = ("user", "organization")


@admin.register(Invitation)
class InvitationAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = (
        "email",
        "organization",
        "role",
        "created_at",
        "expires_at",
        "accepted_at",
        "revoked_at",
    )
    list_select_related = ("organization",)
    search_fields = ("email", "organization__name")
    exclude = ("token_hash",)
    readonly_fields = (
        "organization",
        "email",
        "role",
        "invited_by",
        "expires_at",
        "accepted_at",
        "accepted_by",
        "revoked_at",
    )

    def has_add_permission(self, request: object) -> bool:
        return False
