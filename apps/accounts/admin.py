from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from apps.operator.admin_tools import AuditedAdminMixin

from .models import Invitation, Membership, MembershipTier, Organization, User
from .services import LastOwner, organizations_keep_owner


class LastOwnerRefusedMixin(admin.ModelAdmin):
    """Shows a ``LastOwner`` refusal as an error on the page instead of a server error.

    The admin's writes that could take an organization's last owner away run inside
    ``organizations_keep_owner`` (see the admins below), which raises it. By the time it gets
    here the whole form or deletion was rolled back, its audit entries and admin log included:
    nothing changed, so nothing is said to have.
    """

    def _refused(self, request: HttpRequest, exc: LastOwner, url: str) -> HttpResponseRedirect:
        self.message_user(request, f"Nothing was changed. {exc.message}", messages.ERROR)
        return HttpResponseRedirect(url)

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except LastOwner as exc:
            return self._refused(request, exc, request.get_full_path())

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)
        except LastOwner as exc:
            opts = self.opts
            change = reverse(
                f"admin:{opts.app_label}_{opts.model_name}_change",
                args=[object_id],
                current_app=self.admin_site.name,
            )
            return self._refused(request, exc, change)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if request.method != "POST" or "delete_selected" not in request.POST.getlist("action"):
            return super().changelist_view(request, extra_context)
        try:
            # The action logs each deletion before it deletes: one transaction, so a refused
            # deletion leaves no log entry saying it happened.
            with transaction.atomic():
                return super().changelist_view(request, extra_context)
        except LastOwner as exc:
            return self._refused(request, exc, request.get_full_path())


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ("user",)
    fields = ("user", "role", "created_at")
    readonly_fields = ("created_at",)


@admin.register(User)
class UserAdmin(AuditedAdminMixin, LastOwnerRefusedMixin, BaseUserAdmin):
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

    # A user's memberships, and the user, go only if each active organization of theirs keeps
    # an owner (``organizations_keep_owner``).

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if formset.model is not Membership:
            super().save_formset(request, form, formset, change)
            return
        with organizations_keep_owner(user_ids=[form.instance.pk]):
            super().save_formset(request, form, formset, change)

    def delete_model(self, request: HttpRequest, obj: User) -> None:
        with organizations_keep_owner(user_ids=[obj.pk]):
            super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        with organizations_keep_owner(user_ids=list(queryset.values_list("pk", flat=True))):
            super().delete_queryset(request, queryset)


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
class OrganizationAdmin(AuditedAdminMixin, LastOwnerRefusedMixin, admin.ModelAdmin):
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

    # Deleting a whole organization takes its memberships with it and is not guarded; its
    # members' roles, and enabling it, are (``organizations_keep_owner``). The organization is
    # saved before its inline: enabling one that has no owner needs the owner saved first.

    def perform_save(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if not change:
            super().perform_save(request, obj, form, change)
            return
        with organizations_keep_owner(organization_ids=[obj.pk]):
            super().perform_save(request, obj, form, change)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if formset.model is not Membership:
            super().save_formset(request, form, formset, change)
            return
        with organizations_keep_owner(organization_ids=[form.instance.pk]):
            super().save_formset(request, form, formset, change)


@admin.register(Membership)
class MembershipAdmin(AuditedAdminMixin, LastOwnerRefusedMixin, admin.ModelAdmin):
    list_display = ("user", "organization", "role", "created_at")
    list_filter = ("role",)
    list_select_related = ("user", "organization")
    search_fields = ("user__email", "organization__name")
    autocomplete_fields = ("user", "organization")

    # A change of role (or of organization) and a removal keep an owner in each active
    # organization concerned (``organizations_keep_owner``); an added membership takes none away.

    def perform_save(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if not change:
            super().perform_save(request, obj, form, change)
            return
        with organizations_keep_owner(
            membership_ids=[obj.pk], organization_ids=[obj.organization_id]
        ):
            super().perform_save(request, obj, form, change)

    def delete_model(self, request: HttpRequest, obj: Membership) -> None:
        with organizations_keep_owner(membership_ids=[obj.pk]):
            super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Membership]) -> None:
        with organizations_keep_owner(membership_ids=list(queryset.values_list("pk", flat=True))):
            super().delete_queryset(request, queryset)


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
