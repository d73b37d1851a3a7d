"""Operator admin for billing (SPEC §10): prices, packages, the ledger, Stripe logs and disputes,
adjustments.

Ledger entries and Stripe records are read-only here: a correction is a new entry written by the
"adjust balance" action through ``ledger_adjust``, never an edit.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from apps.accounts.admin import OrganizationAdmin
from apps.accounts.models import Organization, User
from apps.core.errors import ServiceError
from apps.operator.admin_tools import AuditedAdminMixin, CappedCountPaginator
from apps.operator.services import audit_record

from .ledger import MAX_TOKENS, ledger_adjust, ledger_topup
from .models import (
    Balance,
    CheckoutSession,
    LedgerEntry,
    Price,
    StripeDispute,
    StripeEvent,
    TokenPackage,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Price)
class PriceAdmin(AuditedAdminMixin, admin.ModelAdmin):
    # own_account_tokens: the platform fee when the organization's own upstream account runs
    # the task (bring your own accounts); empty charges the default share of the price.
    list_display = ("action", "mode", "tokens", "own_account_tokens", "updated_at")
    list_editable = ("tokens", "own_account_tokens")
    list_filter = ("mode", "action")
    ordering = ("action", "mode")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A missing price makes every submit of that action fail; set 0 to give it away.
        return False


@admin.register(TokenPackage)
class TokenPackageAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = (
        "name",
        "tokens",
        "price_amount",
        "currency",
        "stripe_price_id",
        "is_active",
        "sort_order",
    )
    list_editable = ("is_active", "sort_order")
    list_filter = ("is_active", "currency")
    search_fields = ("name", "stripe_price_id")


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "created_at",
        "organization",
        "kind",
        "available_delta",
        "held_delta",
        "available_after_display",
        "task",
        "operator",
        "reason",
    )
    list_filter = ("kind",)
    list_select_related = ("organization", "operator")

    @admin.display(description="amount")
    def amount_display(self, obj: LedgerEntry) -> str:
        return f"{obj.amount:,}"

    @admin.display(description="Δ available", ordering="delta_available")
    def available_delta(self, obj: LedgerEntry) -> str:
        return f"{obj.delta_available:+,}"

    @admin.display(description="Δ held", ordering="delta_held")
    def held_delta(self, obj: LedgerEntry) -> str:
        return f"{obj.delta_held:+,}"

    @admin.display(description="available after", ordering="available_after")
    def available_after_display(self, obj: LedgerEntry) -> str:
        return f"{obj.available_after:,}"

    search_fields = (
        "=organization__id",
        "organization__name",
        "=task__id",
        "idempotency_key",
        "stripe_object_id",
        "reason",
    )
    date_hierarchy = "created_at"
    show_full_result_count = False  # counting a big ledger on every page view is wasted work
    paginator = CappedCountPaginator
    show_facets = admin.ShowFacets.NEVER


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnlyAdmin):
    list_display = ("event_id", "type", "received_at", "processed_at", "error", "livemode")
    list_filter = ("type", "livemode")
    search_fields = ("=event_id",)
    date_hierarchy = "received_at"
    show_full_result_count = False
    paginator = CappedCountPaginator


@admin.register(CheckoutSession)
class CheckoutSessionAdmin(ReadOnlyAdmin):
    list_display = (
        "session_id",
        "organization",
        "kind",
        "status",
        "tokens",
        "amount",
        "currency",
        "tokens_refunded",
        "tokens_disputed",
        "created_at",
    )
    list_filter = ("kind", "status")
    list_select_related = ("organization",)
    search_fields = ("=session_id", "=payment_intent_id", "organization__name")


@admin.register(StripeDispute)
class StripeDisputeAdmin(ReadOnlyAdmin):
    """Card disputes (chargebacks) of token purchases, as Stripe's events reported them, and
    the tokens their withdrawn and reinstated funds took back and gave back (ledger entries of
    kind ``dispute``, keyed ``stripe:dispute:<id>:…``)."""

    list_display = (
        "dispute_id",
        "organization",
        "status",
        "reason",
        "amount",
        "currency",
        "charge_id",
        "tokens_withdrawn",
        "tokens_reinstated",
        "withdrawn_at",
        "reinstated_at",
        "created_at",
    )
    list_filter = ("status", "funds_withdrawn", "funds_reinstated")
    list_select_related = ("checkout_session__organization",)
    search_fields = (
        "=dispute_id",
        "=charge_id",
        "=payment_intent_id",
        "checkout_session__organization__name",
    )
    date_hierarchy = "created_at"

    @admin.display(description="organization", ordering="checkout_session__organization")
    def organization(self, obj: StripeDispute) -> str:
        session = obj.checkout_session
        return str(session.organization) if session is not None else "-"


class AdjustBalanceForm(forms.Form):
    amount = forms.IntegerField(
        min_value=-MAX_TOKENS,
        max_value=MAX_TOKENS,
        help_text="Signed tokens: positive credits, negative debits (never below 0 available).",
    )
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Required. Stored on the ledger entry with your name.",
    )
    # One token per rendered form: submitting the same form twice adjusts once.
    token = forms.UUIDField(widget=forms.HiddenInput)

    def clean_amount(self) -> int:
        amount = self.cleaned_data["amount"]
        if amount == 0:
            raise forms.ValidationError("The amount must not be zero.")
        return int(amount)

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("A reason is required.")
        return str(reason)


def _adjust_balance(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Organization]
) -> HttpResponse | None:
    organizations = queryset.order_by("pk")
    if "apply" in request.POST:
        form = AdjustBalanceForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            _move_each(
                modeladmin,
                request,
                organizations,
                move=lambda organization, operator: ledger_adjust(
                    organization=organization,
                    amount=data["amount"],
                    reason=data["reason"],
                    operator=operator,
                    idempotency_key=f"admin-adjust:{data['token']}",
                ),
                audit_action="organization.adjust_balance",
                failed="not adjusted",
                done=lambda entry: f"adjusted by {entry.delta_available:+,} tokens",
            )
            return None
    else:
        form = AdjustBalanceForm(initial={"token": uuid.uuid4()})
    return _action_page(
        modeladmin,
        request,
        organizations,
        form=form,
        title="Adjust balance",
        action_name="adjust_balance",
        template="admin/billing/adjust_balance.html",
    )


def _move_each(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    organizations: Iterable[Organization],
    *,
    move: Callable[[Organization, User], LedgerEntry],
    audit_action: str,
    failed: str,
    done: Callable[[LedgerEntry], str],
) -> None:
    """One ledger movement per organization, each with its audit record; one message each.

    An organization the ledger refuses (a negative adjustment below zero) is reported and
    skipped; the others still move.
    """
    operator = request.user
    assert isinstance(operator, User)
    for organization in organizations:
        try:
            # The entry and its audit record commit together or not at all.
            with transaction.atomic():
                entry = move(organization, operator)
                _audit_ledger_entry(operator, audit_action, entry)
        except ServiceError as exc:
            modeladmin.message_user(
                request, f"{organization}: {failed}. {exc.message}", messages.ERROR
            )
            continue
        modeladmin.message_user(
            request,
            f"{organization}: {done(entry)} "
            f"(ledger entry {entry.pk}); available is now {entry.available_after:,}.",
            messages.SUCCESS,
        )


def _action_page(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    organizations: QuerySet[Organization] | list[Organization],
    *,
    form: forms.Form,
    title: str,
    action_name: str,
    template: str,
) -> TemplateResponse:
    """The action's form, above the selected organizations with their available balance."""
    balances = dict(
        Balance.objects.filter(organization__in=organizations).values_list(
            "organization_id", "available"
        )
    )
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "opts": modeladmin.model._meta,
        "form": form,
        "organizations": [(org, balances.get(org.pk, 0)) for org in organizations],
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "action_name": action_name,
    }
    return TemplateResponse(request, template, context)


def _audit_ledger_entry(operator: User, action: str, entry: LedgerEntry) -> None:
    """One audit record per ledger entry: a form submitted twice records once, like the entry."""
    audit_record(
        actor=operator,
        action=action,
        obj=entry.organization,
        before={
            "available": entry.available_after - entry.delta_available,
            "held": entry.held_after - entry.delta_held,
        },
        after={
            "available": entry.available_after,
            "held": entry.held_after,
            "ledger_entry": entry.pk,
            "amount": entry.delta_available,
        },
        reason=entry.reason,
        dedupe_key=f"ledger-entry:{entry.pk}",
    )


class GrantTokensForm(forms.Form):
    amount = forms.IntegerField(
        min_value=1,
        max_value=MAX_TOKENS,
        help_text="Tokens to credit, recorded as a top-up made by you (a promotion, an "
        "invoice paid by bank transfer).",
    )
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Required. Stored on the ledger entry with your name.",
    )
    # One token per rendered form: submitting the same form twice grants once.
    token = forms.UUIDField(widget=forms.HiddenInput)

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("A reason is required.")
        return str(reason)


def _grant_tokens(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Organization]
) -> HttpResponse | None:
    organizations = list(queryset.order_by("pk")[:51])
    if len(organizations) > 50:
        modeladmin.message_user(
            request, "Grant tokens to at most 50 organizations at once.", messages.ERROR
        )
        return None
    if "apply" in request.POST:
        form = GrantTokensForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            _move_each(
                modeladmin,
                request,
                organizations,
                move=lambda organization, operator: ledger_topup(
                    organization=organization,
                    amount=data["amount"],
                    reason=data["reason"],
                    operator=operator,
                    idempotency_key=f"admin-grant:{data['token']}",
                ),
                audit_action="organization.grant_tokens",
                failed="not credited",
                done=lambda entry: f"granted {entry.delta_available:,} tokens",
            )
            return None
    else:
        form = GrantTokensForm(initial={"token": uuid.uuid4()})
    return _action_page(
        modeladmin,
        request,
        organizations,
        form=form,
        title="Grant tokens",
        action_name="grant_tokens",
        template="admin/billing/grant_tokens.html",
    )


class BillingOrganizationAdmin(OrganizationAdmin):
    """The accounts app's Organization admin, plus the balance and the money actions."""

    actions = ("adjust_balance", "grant_tokens")

    def get_list_display(self, request: HttpRequest) -> Any:
        return (*super().get_list_display(request), "available_tokens", "held_tokens")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Organization]:
        return super().get_queryset(request).select_related("balance")

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = tuple(super().get_fields(request, obj))
        return (*fields, "available_tokens", "held_tokens") if obj is not None else fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return (*super().get_readonly_fields(request, obj), "available_tokens", "held_tokens")

    @admin.display(description="available", ordering="balance__available")
    def available_tokens(self, obj: Organization) -> str:
        balance = getattr(obj, "balance", None)
        return f"{balance.available if balance else 0:,}"

    @admin.display(description="held", ordering="balance__held")
    def held_tokens(self, obj: Organization) -> str:
        balance = getattr(obj, "balance", None)
        return f"{balance.held if balance else 0:,}"

    def has_adjust_balance_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("billing.adjust_balance")

    @admin.action(
        description="Adjust balance (writes a ledger entry with a reason)",
        permissions=["adjust_balance"],
    )
    def adjust_balance(
        self, request: HttpRequest, queryset: QuerySet[Organization]
    ) -> HttpResponse | None:
        return _adjust_balance(self, request, queryset)

    @admin.action(
        description="Grant tokens (a top-up entry with a reason)",
        permissions=["adjust_balance"],
    )
    def grant_tokens(
        self, request: HttpRequest, queryset: QuerySet[Organization]
    ) -> HttpResponse | None:
        return _grant_tokens(self, request, queryset)


# Extend, not replace: accounts keeps owning its admin; billing adds what only billing knows.
admin.site.unregister(Organization)
admin.site.register(Organization, BillingOrganizationAdmin)
