"""Balance, token packages through Stripe Checkout, the plan and its upgrades, the ledger."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.roles import Capability
from apps.accounts.selectors import tier_get, tier_list
from apps.billing.models import CheckoutSession, TokenPackage
from apps.billing.selectors import (
    balance_get,
    ledger_list,
    package_list_active,
    plan_get,
    price_table_get,
)
from apps.billing.stripe_service import (
    PAYMENTS_UNAVAILABLE,
    billing_portal_create,
    checkout_create,
    checkout_return_urls,
    payments_enabled,
    subscription_checkout_create,
    tier_prices,
)
from apps.core.errors import NotFound, ServiceError

from .. import presenters
from ..selectors import ledger_entries_of_tasks
from ..tenancy import can, dashboard_view, organization_of

LEDGER_PAGE_SIZE = 25


def _billing_page_url() -> str:
    """The billing page on PUBLIC_BASE_URL, never on the request's host: a client names any
    Host it likes (ALLOWED_HOSTS = ["*"], or a proxy that passes it on), and Stripe would send
    the customer there after paying. Read per request, as PUBLIC_BASE_URL may change."""
    return f"{settings.PUBLIC_BASE_URL}{reverse('dashboard:billing')}"


def _to_checkout(request: HttpRequest, start: Callable[..., CheckoutSession]) -> HttpResponse:
    """Send the browser to the Stripe Checkout ``start`` opens, which returns to this page.

    A refusal (payments down, a plan not sold online) is shown on the billing page; a package
    or plan that does not exist stays a 404.
    """
    success, cancel = checkout_return_urls()
    try:
        session = start(success_url=success, cancel_url=cancel)
    except ServiceError as exc:
        if exc.http_status == 404:
            raise
        messages.error(request, exc.message)
        return redirect("dashboard:billing")
    return redirect(session.url)


@require_GET
@dashboard_view()
def index(request: HttpRequest) -> HttpResponse:
    organization = organization_of(request)
    checkout = request.GET.get("checkout")
    if checkout == "success":
        messages.success(
            request, "Thank you! Your tokens are credited as soon as Stripe confirms the payment."
        )
    elif checkout == "cancel":
        messages.info(request, "Checkout cancelled; nothing was charged.")
    ledger = Paginator(ledger_list(organization=organization), LEDGER_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    task_ids = sorted({str(e.task_id) for e in ledger if e.task_id})
    lines = presenters.ledger_lines(
        ledger,
        ledger_entries_of_tasks(organization=organization, task_ids=task_ids),
    )
    plan = plan_get(organization=organization)
    tiers = list(tier_list())
    current = next((t for t in tiers if t.code == plan.code), None)
    return render(
        request,
        "dashboard/billing.html",
        {
            "balance": balance_get(organization=organization),
            "plan": plan,
            "tiers": tiers,
            "tier_prices": tier_prices(tiers=tiers),
            # A paying subscriber changes or cancels the plan in Stripe's customer portal (a
            # second Checkout would start a second subscription).
            "subscribed": bool(
                organization.stripe_customer_id and current and current.stripe_price_id
            ),
            "packages": list(package_list_active()),
            "prices": price_table_get(organization=organization),
            "ledger": ledger,
            "ledger_lines": lines,
            "payments_enabled": payments_enabled(),
            "payments_unavailable": PAYMENTS_UNAVAILABLE,
            "can_buy": can(request, Capability.MANAGE_BILLING),
            "nav": "billing",
        },
    )


@require_POST
@dashboard_view(Capability.MANAGE_BILLING)
def buy(request: HttpRequest) -> HttpResponse:
    try:
        package = package_list_active().get(pk=int(request.POST.get("package", "")))
    except (TokenPackage.DoesNotExist, ValueError) as exc:
        raise NotFound("This token package is not on sale.") from exc
    return _to_checkout(
        request,
        partial(
            checkout_create,
            organization=organization_of(request),
            package=package,
            user=request.user,  # type: ignore[arg-type]
        ),
    )


@require_POST
@dashboard_view(Capability.MANAGE_BILLING)
def upgrade(request: HttpRequest) -> HttpResponse:
    tier = tier_get(code=request.POST.get("tier", ""))
    return _to_checkout(
        request,
        partial(
            subscription_checkout_create,
            organization=organization_of(request),
            tier=tier,
            user=request.user,  # type: ignore[arg-type]
        ),
    )


@require_POST
@dashboard_view(Capability.MANAGE_BILLING)
def portal(request: HttpRequest) -> HttpResponse:
    """Upgrade, downgrade or cancel the subscription in Stripe's customer portal."""
    try:
        url = billing_portal_create(
            organization=organization_of(request),
            user=request.user,  # type: ignore[arg-type]
            return_url=_billing_page_url(),
        )
    except ServiceError as exc:
        messages.error(request, exc.message)
        return redirect("dashboard:billing")
    return redirect(url)
