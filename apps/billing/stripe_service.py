"""Writes for billing outside the ledger itself: Stripe Checkout and Stripe's webhook events.

Tokens still move only through ``apps.billing.ledger``; this module decides *when* (a paid
Checkout Session, a refund) and hands the ledger an idempotency key derived from the Stripe
object, so Stripe's at-least-once, any-order delivery can never credit twice:

* ``stripe:checkout:<session id>`` credits a package. ``checkout.session.completed`` (when paid)
  and ``checkout.session.async_payment_succeeded`` both try; the first wins, the other is a no-op.
* ``stripe:refund:<charge id>:<amount refunded>`` claws back one refund step of a charge.
* ``stripe:dispute:<dispute id>:withdrawn`` takes back what a dispute's withdrawn funds paid
  for, ``stripe:dispute:<dispute id>:reinstated`` gives it back when Stripe reinstates them
  (``StripeDispute`` keeps each dispute's state, whatever order its events come in).

Every verified event is stored once (unique event id) and processed in the same transaction as
the movements it causes, so a crash leaves either nothing or everything; Stripe's retry then
finds the event unprocessed, or processed and answers 200 doing nothing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import stripe
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from apps.accounts.models import MembershipTier, Organization, User
from apps.accounts.roles import Capability
from apps.accounts.selectors import membership_require, tier_get_default
from apps.accounts.services import organization_set_tier
from apps.core.db import advisory_xact_lock
from apps.core.errors import Conflict, NotFound, ServiceUnavailable, ValidationFailed

from .ledger import (
    ledger_clawback,
    ledger_dispute_reinstate,
    ledger_dispute_withdraw,
    ledger_topup,
)
from .models import (
    CheckoutKind,
    CheckoutSession,
    CheckoutStatus,
    StripeDispute,
    StripeEvent,
    TokenPackage,
)

logger = logging.getLogger(__name__)

PAYMENTS_UNAVAILABLE = (
    "Payments are not configured on this server, so tokens and plans cannot be bought here. "
    "Ask the operator to set STRIPE_SECRET_KEY."
)

#: ``payment_status`` values of a completed Checkout Session that may be fulfilled (Stripe:
#: fulfil unless it is ``unpaid``; ``no_payment_required`` is a fully discounted order).
PAID_STATUSES = frozenset({"paid", "no_payment_required"})
#: Seconds a signature's timestamp may be old when ``STRIPE_WEBHOOK_TOLERANCE`` is not positive:
#: Stripe's library would skip the check altogether, accepting replays of any age.
DEFAULT_WEBHOOK_TOLERANCE = 300
#: Subscription statuses that grant the tier of the subscribed price.
SUBSCRIPTION_GRANTING = frozenset({"active", "trialing"})
#: Statuses after which the organization falls back to the default tier. ``past_due`` and
#: ``incomplete`` change nothing: Stripe is still retrying, and a retry that succeeds must not
#: have cost the customer their tier in between.
#: How long an open Checkout is answered again instead of a new one: Stripe expires a session
#: 24 hours after it was made, so the last hour is left to the customer to finish it.
CHECKOUT_LIFETIME = timedelta(hours=23)
SUBSCRIPTION_ENDED = frozenset({"canceled", "unpaid", "incomplete_expired", "paused"})


def checkout_key(session_id: str) -> str:
    return f"stripe:checkout:{session_id}"


def refund_key(charge_id: str, amount_refunded: int) -> str:
    # Stripe reports the cumulative refunded amount, so each refund step has its own key.
    return f"stripe:refund:{charge_id}:{amount_refunded}"


def payments_enabled() -> bool:
    return bool(settings.STRIPE_SECRET_KEY)


def _stripe_client() -> stripe.StripeClient:
    if not payments_enabled():
        raise ServiceUnavailable(PAYMENTS_UNAVAILABLE, code="payments_unavailable")
    base = settings.STRIPE_API_BASE
    return stripe.StripeClient(
        settings.STRIPE_SECRET_KEY,
        base_addresses={"api": base} if base else None,
        max_network_retries=settings.STRIPE_MAX_NETWORK_RETRIES,
        # A customer waits on this call in a web request: fail in seconds, not Stripe's 80 s.
        http_client=stripe.RequestsClient(timeout=settings.STRIPE_TIMEOUT),
    )


def _create_session(params: dict[str, Any]) -> Any:
    try:
        return _stripe_client().v1.checkout.sessions.create(params=params)  # type: ignore[arg-type]
    except stripe.StripeError as exc:
        logger.warning("stripe checkout session failed", extra={"error": str(exc)})
        raise ServiceUnavailable(
            "Stripe could not start the checkout. Please try again in a moment.",
            code="payments_failed",
        ) from exc


def _customer_params(*, organization: Organization, user: User) -> dict[str, Any]:
    if organization.stripe_customer_id:
        return {"customer": organization.stripe_customer_id}
    return {"customer_email": user.email}


def checkout_return_urls() -> tuple[str, str]:
    """Where Checkout sends the customer back, success then cancel: STRIPE_SUCCESS_URL and
    STRIPE_CANCEL_URL when set, else the dashboard's billing page on PUBLIC_BASE_URL (Stripe
    fills in ``{CHECKOUT_SESSION_ID}``). Never the request's host: a client names any Host it
    likes, and Stripe would send the customer there after paying. Read when the Checkout
    starts, as the settings may change."""
    page = f"{settings.PUBLIC_BASE_URL}{reverse('dashboard:billing')}"
    return (
        settings.STRIPE_SUCCESS_URL
        or f"{page}?checkout=success&session_id={{CHECKOUT_SESSION_ID}}",
        settings.STRIPE_CANCEL_URL or f"{page}?checkout=cancel",
    )


def checkout_create(
    *,
    organization: Organization,
    package: TokenPackage,
    user: User,
    success_url: str | None = None,
    cancel_url: str | None = None,
) -> CheckoutSession:
    """Start a Stripe Checkout for a token package. The webhook credits it once paid."""
    membership_require(
        user=user, organization_id=organization.pk, capability=Capability.MANAGE_BILLING
    )
    if not package.is_active:
        raise NotFound("This token package is not on sale.")
    metadata = {
        "organization_id": str(organization.pk),
        "package_id": str(package.pk),
        "tokens": str(package.tokens),
    }
    if package.stripe_price_id:
        line_item: dict[str, Any] = {"price": package.stripe_price_id, "quantity": 1}
    else:
        line_item = {
            "quantity": 1,
            "price_data": {
                "currency": package.currency.lower(),
                "unit_amount": package.price_amount,
                "product_data": {"name": f"{package.name}: {package.tokens:,} tokens"},
            },
        }
    params: dict[str, Any] = {
        "mode": "payment",
        "client_reference_id": str(organization.pk),
        "success_url": success_url or checkout_return_urls()[0],
        "cancel_url": cancel_url or checkout_return_urls()[1],
        "line_items": [line_item],
        "metadata": metadata,
        # Carried onto the charge, so a refund can be traced back without our database.
        "payment_intent_data": {"metadata": metadata},
        **_customer_params(organization=organization, user=user),
    }
    session = _create_session(params)
    return CheckoutSession.objects.create(
        session_id=session.id,
        organization=organization,
        kind=CheckoutKind.TOPUP,
        package=package,
        tokens=package.tokens,
        amount=package.price_amount,
        currency=package.currency.lower(),
        url=session.url or "",
        created_by=user,
    )


def subscription_checkout_create(
    *,
    organization: Organization,
    tier: MembershipTier,
    user: User,
    success_url: str | None = None,
    cancel_url: str | None = None,
) -> CheckoutSession:
    """Start a Stripe Checkout subscription for a paid tier (VIP, PREMIUM).

    Once the organization pays for a plan every change goes through the customer portal: a
    second subscription Checkout would bill two subscriptions at once, so it is refused. A
    Checkout of the same plan still open (a double click, a second tab) is answered again
    rather than opening another one."""
    membership_require(
        user=user, organization_id=organization.pk, capability=Capability.MANAGE_BILLING
    )
    if not tier.stripe_price_id:
        raise ValidationFailed(f"The {tier.name} plan cannot be bought online.")
    with transaction.atomic():
        # One start at a time per organization, without its row lock (its submits take that
        # one, and Stripe is called below).
        advisory_xact_lock(f"billing:subscription-checkout:{organization.pk}")
        organization.refresh_from_db(
            fields=["stripe_customer_id", "stripe_subscription_id", "tier"]
        )
        current = organization.tier
        if organization.stripe_subscription_id or (
            organization.stripe_customer_id and current.stripe_price_id
        ):
            raise Conflict(
                f"You already pay for the {current.name} plan: change or cancel it in the "
                "billing portal, which moves the subscription you have."
            )
        open_session = (
            CheckoutSession.objects.filter(
                organization=organization,
                kind=CheckoutKind.SUBSCRIPTION,
                tier=tier,
                status=CheckoutStatus.OPEN,
                created_at__gt=timezone.now() - CHECKOUT_LIFETIME,
            )
            .exclude(url="")
            .order_by("-created_at")
            .first()
        )
        if open_session is not None:
            return open_session
        return _subscription_session(
            organization=organization,
            tier=tier,
            user=user,
            success_url=success_url,
            cancel_url=cancel_url,
        )


def _subscription_session(
    *,
    organization: Organization,
    tier: MembershipTier,
    user: User,
    success_url: str | None,
    cancel_url: str | None,
) -> CheckoutSession:
    metadata = {"organization_id": str(organization.pk), "tier": tier.code}
    params: dict[str, Any] = {
        "mode": "subscription",
        "client_reference_id": str(organization.pk),
        "success_url": success_url or checkout_return_urls()[0],
        "cancel_url": cancel_url or checkout_return_urls()[1],
        "line_items": [{"price": tier.stripe_price_id, "quantity": 1}],
        "metadata": metadata,
        # Subscription events carry this, which is how they find the organization.
        "subscription_data": {"metadata": metadata},
        **_customer_params(organization=organization, user=user),
    }
    session = _create_session(params)
    return CheckoutSession.objects.create(
        session_id=session.id,
        organization=organization,
        kind=CheckoutKind.SUBSCRIPTION,
        tier=tier,
        url=session.url or "",
        created_by=user,
    )


@dataclass(frozen=True)
class TierPrice:
    """What a plan costs, as its Stripe price says: minor units, currency, billing interval."""

    amount: int
    currency: str
    interval: str


#: Seconds a plan's price read from Stripe is kept: the billing page must not wait on Stripe.
TIER_PRICE_TTL = 3600


def tier_prices(*, tiers: list[MembershipTier]) -> dict[str, TierPrice]:
    """The price of each tier sold online (by tier code), read from Stripe and cached; a tier
    whose price cannot be read right now is left out (the page says it is sold on Stripe)."""
    found: dict[str, TierPrice] = {}
    if not payments_enabled():
        return found
    for tier in tiers:
        if not tier.stripe_price_id:
            continue
        key = f"billing:tier-price:{tier.stripe_price_id}"
        cached = cache.get(key)
        if cached is None:
            try:
                price = _stripe_client().v1.prices.retrieve(tier.stripe_price_id).to_dict()
            except stripe.StripeError as exc:
                logger.warning("stripe price lookup failed", extra={"error": str(exc)})
                continue
            recurring = price.get("recurring") or {}
            cached = {
                "amount": int(price.get("unit_amount") or 0),
                "currency": str(price.get("currency") or ""),
                "interval": str(recurring.get("interval") or ""),
            }
            cache.set(key, cached, TIER_PRICE_TTL)
        found[tier.code] = TierPrice(**cached)
    return found


def billing_portal_create(*, organization: Organization, user: User, return_url: str) -> str:
    """A Stripe customer portal session where the organization upgrades, downgrades or cancels
    its subscription; returns the URL to send the browser to."""
    membership_require(
        user=user, organization_id=organization.pk, capability=Capability.MANAGE_BILLING
    )
    if not organization.stripe_customer_id:
        raise ValidationFailed("This organization has no Stripe subscription to manage yet.")
    try:
        session = _stripe_client().v1.billing_portal.sessions.create(
            params={"customer": organization.stripe_customer_id, "return_url": return_url}
        )
    except stripe.StripeError as exc:
        logger.warning("stripe portal session failed", extra={"error": str(exc)})
        raise ServiceUnavailable(
            "Stripe could not open the billing portal. Please try again in a moment.",
            code="payments_failed",
        ) from exc
    return str(session.url)


# --- Webhook ----------------------------------------------------------------------------------


class InvalidStripeSignature(ValidationFailed):
    code = "invalid_signature"
    default_message = "The Stripe signature is missing or invalid."


class _Skip(Exception):
    """The event is valid but changes nothing here; recorded as processed with the reason."""


@dataclass(frozen=True)
class StripeEventResult:
    event: StripeEvent
    duplicate: bool
    failed: bool


def stripe_event_verify(*, payload: bytes, signature: str | None) -> dict[str, Any]:
    """Check the ``Stripe-Signature`` header and return the event as plain data."""
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        raise ServiceUnavailable(
            "Stripe webhooks are not configured (STRIPE_WEBHOOK_SECRET is empty).",
            code="payments_unavailable",
        )
    if not signature:
        raise InvalidStripeSignature()
    try:
        tolerance = int(settings.STRIPE_WEBHOOK_TOLERANCE)
        stripe.Webhook.construct_event(
            payload,
            signature,
            secret,
            tolerance=tolerance if tolerance > 0 else DEFAULT_WEBHOOK_TOLERANCE,
        )
        data = json.loads(payload)
    except (stripe.SignatureVerificationError, ValueError) as exc:
        raise InvalidStripeSignature() from exc
    if not isinstance(data, dict) or not data.get("id") or not data.get("type"):
        raise ValidationFailed("The Stripe event has no id or type.")
    return data


def stripe_event_receive(*, payload: bytes, signature: str | None) -> StripeEventResult:
    """Verify, store and process one webhook delivery, at most once per event id."""
    data = stripe_event_verify(payload=payload, signature=signature)
    event_id = str(data["id"])
    with transaction.atomic():
        # ON CONFLICT DO NOTHING: concurrent deliveries of one event wait here for the first,
        # then find it processed below.
        StripeEvent.objects.bulk_create(
            [
                StripeEvent(
                    event_id=event_id,
                    type=str(data["type"])[:100],
                    payload=data,
                    livemode=bool(data.get("livemode")),
                )
            ],
            ignore_conflicts=True,
        )
        event = StripeEvent.objects.select_for_update().get(event_id=event_id)
        if event.processed_at is not None:
            return StripeEventResult(event=event, duplicate=True, failed=False)
        # The payment's lock, in this transaction and not in the savepoint below: a skipped
        # refund (or dispute) rolls the savepoint back, and PostgreSQL releases the locks a
        # rolled-back savepoint took at once, before this event is marked processed and
        # committed. Its payment's credit could then run in between and miss it
        # (``_refunds_delivered_early`` reads processed refunds), and the refund was lost for
        # good.
        _lock_payment(_payment_of(data))
        failed = False
        try:
            with transaction.atomic():
                note = _dispatch(data)
            event.processed_at = timezone.now()
            event.error = note
        except _Skip as skip:
            event.processed_at = timezone.now()
            event.error = str(skip)
        except Exception as exc:
            # Keep the event unprocessed so Stripe's retry (or an operator) runs it again.
            logger.exception("stripe event failed", extra={"event_id": event_id})
            event.error = f"{type(exc).__name__}: {exc}"[:2000]
            failed = True
        event.save(update_fields=["processed_at", "error"])
    return StripeEventResult(event=event, duplicate=False, failed=failed)


def _dispatch(data: dict[str, Any]) -> str:
    event_type = str(data["type"])
    obj = (data.get("data") or {}).get("object") or {}
    if not isinstance(obj, dict):
        raise _Skip("The event carries no object.")
    if event_type in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
        return _checkout_paid(obj, event_type=event_type)
    if event_type == "checkout.session.async_payment_failed":
        return _checkout_closed(obj, status=CheckoutStatus.PAYMENT_FAILED, note="payment failed")
    if event_type == "checkout.session.expired":
        return _checkout_closed(obj, status=CheckoutStatus.EXPIRED, note="expired")
    if event_type in ("customer.subscription.created", "customer.subscription.updated"):
        return _subscription_changed(obj, data=data, deleted=False)
    if event_type == "customer.subscription.deleted":
        return _subscription_changed(obj, data=data, deleted=True)
    if event_type == "charge.refunded":
        return _charge_refunded(obj)
    if event_type in DISPUTE_EVENTS:
        return _dispute_event(obj, data=data)
    raise _Skip(f"Event type {event_type} is not handled.")


def _payment_of(data: dict[str, Any]) -> str:
    """The payment intent whose credit and refunds an event touches ("" when none does)."""
    if str(data.get("type")) not in _PAYMENT_EVENTS:
        return ""
    obj = (data.get("data") or {}).get("object") or {}
    return _stripe_id(obj.get("payment_intent")) if isinstance(obj, dict) else ""


DISPUTE_WITHDRAWN = "charge.dispute.funds_withdrawn"
DISPUTE_REINSTATED = "charge.dispute.funds_reinstated"
#: The dispute events handled: every one updates the ``StripeDispute``; tokens move only when
#: the funds are withdrawn or reinstated.
DISPUTE_EVENTS = frozenset(
    {
        "charge.dispute.created",
        "charge.dispute.updated",
        "charge.dispute.closed",
        DISPUTE_WITHDRAWN,
        DISPUTE_REINSTATED,
    }
)
#: Stripe's final dispute statuses: an older event never reopens a closed dispute.
DISPUTE_CLOSED_STATUSES = frozenset({"won", "lost", "warning_closed", "prevented"})

#: The events that credit a payment or claw back its refunds or disputes (``_lock_payment``).
_PAYMENT_EVENTS = frozenset(
    {
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "charge.refunded",
        *DISPUTE_EVENTS,
    }
)
#: How the skip of a refund or dispute of a payment not credited (yet) ends: the credit applies
#: the ones so skipped (``_refunds_delivered_early``, ``_disputes_delivered_early``).
NOT_CREDITED = "paid for no top-up credited here."


def _stripe_id(value: Any) -> str:
    """The id of a Stripe reference, whether an id or an expanded object ("" when neither)."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) else ""


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _checkout_record(obj: dict[str, Any]) -> CheckoutSession:
    """Our record of a session, locked; rebuilt from its metadata if we crashed before saving."""
    session_id = str(obj.get("id") or "")
    if not session_id:
        raise _Skip("The Checkout Session has no id.")
    record = (
        CheckoutSession.objects.select_for_update(of=("self",))
        .select_related("organization", "package")
        .filter(session_id=session_id)
        .first()
    )
    if record is not None:
        return record
    metadata = obj.get("metadata") or {}
    org_id = _int_or_none(metadata.get("organization_id"))
    organization = Organization.objects.filter(pk=org_id).first() if org_id else None
    if organization is None:
        raise _Skip(f"Checkout Session {session_id} names no organization of ours.")
    if obj.get("mode") == "subscription":
        CheckoutSession.objects.bulk_create(
            [
                CheckoutSession(
                    session_id=session_id,
                    organization=organization,
                    kind=CheckoutKind.SUBSCRIPTION,
                )
            ],
            ignore_conflicts=True,
        )
    else:
        package_id = _int_or_none(metadata.get("package_id"))
        package = TokenPackage.objects.filter(pk=package_id).first() if package_id else None
        tokens = _int_or_none(metadata.get("tokens")) or (package.tokens if package else 0)
        if tokens <= 0:
            raise _Skip(f"Checkout Session {session_id} names no token package of ours.")
        CheckoutSession.objects.bulk_create(
            [
                CheckoutSession(
                    session_id=session_id,
                    organization=organization,
                    kind=CheckoutKind.TOPUP,
                    package=package,
                    tokens=tokens,
                    amount=_int_or_none(obj.get("amount_total")) or 0,
                    currency=str(obj.get("currency") or ""),
                )
            ],
            ignore_conflicts=True,
        )
    return (
        CheckoutSession.objects.select_for_update(of=("self",))
        .select_related("organization", "package")
        .get(session_id=session_id)
    )


def _lock_payment(payment_intent: str) -> None:
    """Serialise the credit of a payment with the refunds of the same payment.

    Without it a refund processed at the same moment as its payment's credit could miss the
    credit (not committed yet) while the credit misses the refund (not committed yet either).
    Taken before any row lock of the payment, by both, so the two can never wait for each
    other in a cycle; held until the delivery's transaction commits (``stripe_event_receive``
    takes it before the savepoint its processing runs in: taken again inside, it is the same
    lock).
    """
    if payment_intent:
        advisory_xact_lock(f"stripe-payment:{payment_intent}")


def _checkout_paid(obj: dict[str, Any], *, event_type: str) -> str:
    _lock_payment(str(obj.get("payment_intent") or ""))
    record = _checkout_record(obj)
    if record.kind == CheckoutKind.SUBSCRIPTION:
        _link_customer(
            organization=record.organization,
            customer_id=str(obj.get("customer") or ""),
            subscription_id=str(obj.get("subscription") or ""),
        )
        CheckoutSession.objects.filter(pk=record.pk).update(
            status=CheckoutStatus.SUBSCRIBED, updated_at=timezone.now()
        )
        return ""
    if obj.get("payment_status") not in PAID_STATUSES:
        # An asynchronous method (bank debit …): async_payment_succeeded will credit it.
        CheckoutSession.objects.filter(pk=record.pk, status=CheckoutStatus.OPEN).update(
            status=CheckoutStatus.AWAITING_PAYMENT, updated_at=timezone.now()
        )
        return f"Not paid yet ({obj.get('payment_status')}); waiting for the async payment."
    package_name = record.package.name if record.package else "token package"
    entry = ledger_topup(
        organization=record.organization,
        amount=record.tokens,
        idempotency_key=checkout_key(record.session_id),
        stripe_object_id=record.session_id,
        reason=f"Stripe Checkout: {package_name}",
    )
    payment_intent = str(obj.get("payment_intent") or record.payment_intent_id or "")
    CheckoutSession.objects.filter(pk=record.pk).update(
        status=CheckoutStatus.CREDITED,
        credited_entry=entry,
        payment_intent_id=payment_intent,
        updated_at=timezone.now(),
    )
    _link_customer(organization=record.organization, customer_id=str(obj.get("customer") or ""))
    _refunds_delivered_early(session_id=record.session_id, payment_intent=payment_intent)
    _disputes_delivered_early(session_id=record.session_id, payment_intent=payment_intent)
    return ""


def _refunds_delivered_early(*, session_id: str, payment_intent: str) -> None:
    """Apply refunds of this payment that Stripe delivered before the payment itself.

    Stripe does not order deliveries (a webhook outage, then retries): a ``charge.refunded``
    that arrived before its purchase was credited had nothing to claw back and was skipped.
    Left at that, the customer would keep both the tokens and the money.
    """
    if not payment_intent:
        return
    early = StripeEvent.objects.filter(
        type="charge.refunded",
        processed_at__isnull=False,
        payload__data__object__payment_intent=payment_intent,
    ).order_by("received_at", "pk")
    for stored in early:
        charge = (stored.payload.get("data") or {}).get("object") or {}
        try:
            _charge_refunded(charge)
        except _Skip:
            continue  # accounted for already by a later step of the same charge
        StripeEvent.objects.filter(pk=stored.pk).update(
            error=f"Applied when Checkout Session {session_id} was credited."
        )


def _checkout_closed(obj: dict[str, Any], *, status: str, note: str) -> str:
    session_id = str(obj.get("id") or "")
    updated = CheckoutSession.objects.filter(
        session_id=session_id,
        status__in=(CheckoutStatus.OPEN, CheckoutStatus.AWAITING_PAYMENT),
    ).update(status=status, updated_at=timezone.now())
    if not updated:
        raise _Skip(f"Checkout Session {session_id} is unknown or already settled.")
    return f"Checkout Session {note}."


def _link_customer(
    *, organization: Organization, customer_id: str, subscription_id: str = ""
) -> None:
    changes: dict[str, Any] = {}
    if customer_id and organization.stripe_customer_id != customer_id:
        changes["stripe_customer_id"] = customer_id
    if subscription_id and organization.stripe_subscription_id != subscription_id:
        changes["stripe_subscription_id"] = subscription_id
    if changes:
        Organization.objects.filter(pk=organization.pk).update(**changes, updated_at=timezone.now())
        for field, value in changes.items():
            setattr(organization, field, value)


def _subscription_organization(obj: dict[str, Any]) -> Organization:
    metadata = obj.get("metadata") or {}
    org_id = _int_or_none(metadata.get("organization_id"))
    customer_id = str(obj.get("customer") or "")
    queryset = Organization.objects.select_for_update(no_key=True, of=("self",)).select_related(
        "tier"
    )
    organization = queryset.filter(pk=org_id).first() if org_id else None
    if organization is None and customer_id:
        organization = queryset.filter(stripe_customer_id=customer_id).first()
    if organization is None:
        raise _Skip(f"Subscription {obj.get('id')} belongs to no organization of ours.")
    return organization


def _subscription_prices(obj: dict[str, Any]) -> list[str]:
    items = (obj.get("items") or {}).get("data") or []
    prices = []
    for item in items:
        price = (item or {}).get("price") or {}
        price_id = price.get("id") if isinstance(price, dict) else price
        if price_id:
            prices.append(str(price_id))
    return prices


def _subscription_stale(*, subscription_id: str, created: int | None) -> bool:
    """Stripe does not order deliveries: an event older than one applied already is history."""
    if created is None:
        return False
    return StripeEvent.objects.filter(
        type__startswith="customer.subscription.",
        processed_at__isnull=False,
        error="",
        payload__data__object__id=subscription_id,
        payload__created__gt=created,
    ).exists()


def _subscription_changed(obj: dict[str, Any], *, data: dict[str, Any], deleted: bool) -> str:
    subscription_id = str(obj.get("id") or "")
    status = str(obj.get("status") or "")
    # The organization row lock serialises subscription events of one organization.
    organization = _subscription_organization(obj)
    if _subscription_stale(
        subscription_id=subscription_id, created=_int_or_none(data.get("created"))
    ):
        raise _Skip(f"A newer event for subscription {subscription_id} was applied already.")
    current = organization.stripe_subscription_id
    if deleted or status in SUBSCRIPTION_ENDED:
        if current and current != subscription_id:
            raise _Skip(
                f"Subscription {subscription_id} ended, but the organization's current "
                f"subscription is {current}."
            )
        default = tier_get_default()
        organization_set_tier(organization=organization, tier=default)
        Organization.objects.filter(pk=organization.pk).update(
            stripe_subscription_id="", updated_at=timezone.now()
        )
        return ""
    if status not in SUBSCRIPTION_GRANTING:
        raise _Skip(f"Subscription {subscription_id} is {status}; the tier is left as it is.")
    prices = _subscription_prices(obj)
    tier = MembershipTier.objects.filter(stripe_price_id__in=prices).exclude(stripe_price_id="")
    chosen = tier.order_by("-max_unfinished_tasks").first()
    if chosen is None:
        raise _Skip(f"No membership tier is sold with the price(s) {', '.join(prices) or '-'}.")
    organization_set_tier(organization=organization, tier=chosen)
    _link_customer(
        organization=organization,
        customer_id=str(obj.get("customer") or ""),
        subscription_id=subscription_id,
    )
    return ""


def _credited_topup(payment_intent: str) -> CheckoutSession | None:
    """The credited top-up a payment intent paid for, locked (None when there is none)."""
    if not payment_intent:
        return None
    return (
        CheckoutSession.objects.select_for_update(of=("self",))
        .select_related("organization")
        .filter(
            kind=CheckoutKind.TOPUP,
            status=CheckoutStatus.CREDITED,
            payment_intent_id=payment_intent,
        )
        .first()
    )


def _taken_back(*, tokens: int, refunded: int, disputed: int) -> int:
    """The tokens a purchase owes back for its refunds and disputes together: never more than
    it bought (a dispute of a refunded payment, a refund of a disputed one, take nothing
    twice)."""
    return min(tokens, refunded + disputed)


def _charge_refunded(obj: dict[str, Any]) -> str:
    charge_id = str(obj.get("id") or "")
    payment_intent = str(obj.get("payment_intent") or "")
    amount = _int_or_none(obj.get("amount")) or 0
    refunded = _int_or_none(obj.get("amount_refunded")) or 0
    _lock_payment(payment_intent)
    record = _credited_topup(payment_intent)
    if record is None:
        raise _Skip(f"Charge {charge_id} {NOT_CREDITED}")
    if amount <= 0 or refunded <= 0:
        raise _Skip(f"Charge {charge_id} reports nothing refunded.")
    owed_total = record.tokens * min(refunded, amount) // amount
    if owed_total <= record.tokens_refunded:
        raise _Skip(f"The refunds of charge {charge_id} are accounted for already.")
    before = _taken_back(
        tokens=record.tokens, refunded=record.tokens_refunded, disputed=record.tokens_disputed
    )
    after = _taken_back(tokens=record.tokens, refunded=owed_total, disputed=record.tokens_disputed)
    owed_now = after - before
    CheckoutSession.objects.filter(pk=record.pk).update(
        tokens_refunded=owed_total, updated_at=timezone.now()
    )
    if owed_now <= 0:
        return (
            f"The refunds of charge {charge_id} owe {owed_total} tokens, which its dispute "
            f"took back already ({record.tokens_disputed} of {record.tokens} tokens)."
        )
    currency = str(obj.get("currency") or record.currency).upper()
    ledger_clawback(
        organization=record.organization,
        amount=owed_now,
        idempotency_key=refund_key(charge_id, refunded),
        stripe_object_id=charge_id,
        reason=(
            f"Stripe refund on charge {charge_id}: {refunded} of {amount} {currency} "
            f"(minor units) refunded, {owed_now} tokens to claw back"
        ),
    )
    return ""


# --- Disputes ---------------------------------------------------------------------------------


def _dispute_event(obj: dict[str, Any], *, data: dict[str, Any]) -> str:
    """Any ``charge.dispute.*`` event: bring the dispute's record up to date and move the tokens
    its funds' withdrawal or reinstatement calls for, once per dispute, in any order.

    A dispute of a payment not credited here (yet) is skipped like such a refund, and applied
    when the payment is credited (``_disputes_delivered_early``)."""
    event_type = str(data.get("type"))
    dispute_id = _stripe_id(obj.get("id"))
    if obj.get("object") != "dispute" or not dispute_id:
        raise _Skip(f"The {event_type} event carries no dispute.")
    amount = obj.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise _Skip(f"Dispute {dispute_id} reports no disputed amount.")
    payment_intent = _stripe_id(obj.get("payment_intent"))
    charge_id = _stripe_id(obj.get("charge"))
    _lock_payment(payment_intent)
    record = _credited_topup(payment_intent)
    if record is None:
        raise _Skip(f"Dispute {dispute_id} of charge {charge_id or '-'} {NOT_CREDITED}")
    StripeDispute.objects.bulk_create(
        [
            StripeDispute(
                dispute_id=dispute_id, checkout_session=record, payment_intent_id=payment_intent
            )
        ],
        ignore_conflicts=True,
    )
    dispute = StripeDispute.objects.select_for_update().get(dispute_id=dispute_id)
    if dispute.checkout_session_id not in (None, record.pk):
        raise _Skip(
            f"Dispute {dispute_id} names payment {payment_intent}, but was recorded for "
            f"Checkout Session {dispute.checkout_session_id}."
        )
    dispute.checkout_session = record
    _dispute_merge(dispute, obj, data=data, charge_id=charge_id, payment_intent=payment_intent)
    note = _dispute_apply(dispute, record=record)
    dispute.save()
    if note is None and event_type in (DISPUTE_WITHDRAWN, DISPUTE_REINSTATED):
        return f"The funds of dispute {dispute_id} are accounted for already."
    return note or ""


def _dispute_merge(
    dispute: StripeDispute,
    obj: dict[str, Any],
    *,
    data: dict[str, Any],
    charge_id: str,
    payment_intent: str,
) -> None:
    """What this event tells about the dispute, never undoing what a newer one told."""
    event_type = str(data.get("type"))
    if dispute.withdrawn_at is None:
        # Frozen once its withdrawal took tokens back: the reinstatement gives back a share of
        # what was taken, not of a figure that changed since.
        dispute.amount = int(obj["amount"])
        currency = obj.get("currency")
        dispute.currency = currency.lower()[:3] if isinstance(currency, str) else ""
    dispute.charge_id = charge_id or dispute.charge_id
    dispute.payment_intent_id = payment_intent or dispute.payment_intent_id
    reason = obj.get("reason")
    if isinstance(reason, str) and reason:
        dispute.reason = reason[:64]
    status = obj.get("status")
    created = _int_or_none(data.get("created"))
    if isinstance(status, str) and status and _dispute_status_newer(dispute, status, created):
        dispute.status = status[:32]
        dispute.status_event_created = created
    transactions = dict(dispute.balance_transactions or {})
    transactions.update(_dispute_transactions(obj))
    dispute.balance_transactions = transactions
    if event_type in (DISPUTE_WITHDRAWN, DISPUTE_REINSTATED):
        # Funds are reinstated only after they were withdrawn.
        dispute.funds_withdrawn = True
    if event_type == DISPUTE_REINSTATED:
        dispute.funds_reinstated = True


def _dispute_status_newer(dispute: StripeDispute, status: str, created: int | None) -> bool:
    if dispute.status in DISPUTE_CLOSED_STATUSES and status not in DISPUTE_CLOSED_STATUSES:
        return False
    known = dispute.status_event_created
    return known is None or created is None or created >= known


def _dispute_transactions(obj: dict[str, Any]) -> dict[str, int]:
    """The dispute's balance transactions (id -> signed amount): Stripe lists the withdrawal
    (negative) and, once its funds come back, the reinstatement (positive)."""
    found: dict[str, int] = {}
    listed = obj.get("balance_transactions")
    for item in listed if isinstance(listed, list) else []:
        if not isinstance(item, dict):
            continue
        txn_id, amount = item.get("id"), item.get("amount")
        if isinstance(txn_id, str) and txn_id and type(amount) is int and amount != 0:
            found[txn_id] = amount
    return found


def _reinstated_share(dispute: StripeDispute) -> tuple[int, int]:
    """The share of the withdrawn funds Stripe reinstated, as (numerator, denominator), from
    the dispute's balance transactions (one currency, so their ratio holds whatever the
    charge's); all of it when they do not say (a reinstatement without its amount)."""
    amounts = list((dispute.balance_transactions or {}).values())
    withdrawn = -sum(a for a in amounts if isinstance(a, int) and a < 0)
    reinstated = sum(a for a in amounts if isinstance(a, int) and a > 0)
    if withdrawn > 0 and reinstated > 0:
        return min(reinstated, withdrawn), withdrawn
    return 1, 1


def _dispute_tokens(dispute: StripeDispute, record: CheckoutSession) -> int:
    """The tokens the disputed amount paid for: its share of the purchase, as for a refund
    (the whole purchase when the purchase's amount is unknown or in another currency)."""
    same_currency = not (dispute.currency and record.currency) or (
        dispute.currency.lower() == record.currency.lower()
    )
    if record.amount <= 0 or not same_currency:
        return record.tokens
    return record.tokens * min(dispute.amount, record.amount) // record.amount


def _dispute_apply(dispute: StripeDispute, *, record: CheckoutSession) -> str | None:
    """Move what the dispute's funds call for, once each: its withdrawal takes back its share of
    the purchase (what refunds took already excepted), its reinstatement gives back the
    reinstated share of what the withdrawal took. A reinstatement seen first (Stripe does not
    order deliveries) is applied with the withdrawal, as one movement of the difference.
    Returns None when nothing was due, else a note ("" when all is as expected)."""
    record = (
        CheckoutSession.objects.select_for_update(of=("self",))
        .select_related("organization")
        .get(pk=record.pk)
    )
    now = timezone.now()
    taken_before = _taken_back(
        tokens=record.tokens, refunded=record.tokens_refunded, disputed=record.tokens_disputed
    )
    if dispute.withdrawn_at is None:
        if not dispute.funds_withdrawn:
            return None
        owed = _dispute_tokens(dispute, record)
        if dispute.funds_reinstated:
            numerator, denominator = _reinstated_share(dispute)
            owed -= owed * numerator // denominator
            dispute.reinstated_at = now
        disputed = record.tokens_disputed + owed
        move = _taken_back(tokens=record.tokens, refunded=record.tokens_refunded, disputed=disputed)
        move -= taken_before
        dispute.withdrawn_at = now
        dispute.tokens_owed = owed
        dispute.tokens_withdrawn = move
        CheckoutSession.objects.filter(pk=record.pk).update(
            tokens_disputed=disputed, updated_at=now
        )
        if owed <= 0:
            return (
                f"Dispute {dispute.dispute_id}'s funds were withdrawn and reinstated in full "
                "before its withdrawal was applied: no tokens move."
            )
        if move <= 0:
            return (
                f"Dispute {dispute.dispute_id} owes {owed} tokens, which the refunds of the "
                f"purchase took back already."
            )
        ledger_dispute_withdraw(
            organization=record.organization,
            dispute_id=dispute.dispute_id,
            amount=move,
            reason=(
                f"Stripe dispute {dispute.dispute_id} on charge {dispute.charge_id or '-'}: "
                f"{dispute.amount} of {record.amount} {dispute.currency.upper()} (minor units) "
                f"withdrawn{' and reinstated in part' if dispute.funds_reinstated else ''}, "
                f"{move} tokens to take back"
            ),
        )
        return ""
    if dispute.reinstated_at is not None or not dispute.funds_reinstated:
        return None
    numerator, denominator = _reinstated_share(dispute)
    owed_after = dispute.tokens_owed - dispute.tokens_owed * numerator // denominator
    disputed = record.tokens_disputed - (dispute.tokens_owed - owed_after)
    reduction = taken_before - _taken_back(
        tokens=record.tokens, refunded=record.tokens_refunded, disputed=disputed
    )
    given = min(reduction, dispute.tokens_withdrawn)
    dispute.reinstated_at = now
    dispute.tokens_owed = owed_after
    dispute.tokens_reinstated = given
    CheckoutSession.objects.filter(pk=record.pk).update(tokens_disputed=disputed, updated_at=now)
    if given <= 0:
        return (
            f"Dispute {dispute.dispute_id}'s funds were reinstated; its withdrawal took no "
            f"tokens back that are not owed for the purchase's refunds, so none are given back."
        )
    ledger_dispute_reinstate(
        organization=record.organization,
        dispute_id=dispute.dispute_id,
        owed_before=dispute.tokens_withdrawn,
        owed_after=dispute.tokens_withdrawn - given,
        reason=(
            f"Stripe dispute {dispute.dispute_id} on charge {dispute.charge_id or '-'}: "
            f"funds reinstated ({dispute.status or 'status unknown'}), {given} of the "
            f"{dispute.tokens_withdrawn} tokens taken back to give back"
        ),
    )
    return ""


def _disputes_delivered_early(*, session_id: str, payment_intent: str) -> None:
    """Apply dispute events of this payment that Stripe delivered before the payment itself
    (skipped then, as such refunds are: ``_refunds_delivered_early``), in the order received."""
    if not payment_intent:
        return
    early = StripeEvent.objects.filter(
        type__in=DISPUTE_EVENTS,
        processed_at__isnull=False,
        error__endswith=NOT_CREDITED,
        payload__data__object__payment_intent=payment_intent,
    ).order_by("received_at", "pk")
    for stored in early:
        dispute = (stored.payload.get("data") or {}).get("object") or {}
        try:
            with transaction.atomic():
                _dispute_event(dispute, data=stored.payload)
        except _Skip:
            continue
        StripeEvent.objects.filter(pk=stored.pk).update(
            error=f"Applied when Checkout Session {session_id} was credited."
        )
