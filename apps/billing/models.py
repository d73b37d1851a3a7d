"""Prices, balances and the token ledger.

Money is integer tokens (35,000 tokens = 1 CNY) and moves only through ``apps.billing.ledger``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from apps.accounts.models import Organization
from apps.core.cache import ConfigQuerySet
from apps.tasks.enums import PRICE_KEY_CHOICES, Mode

#: The process-wide copy of the price table (``apps.billing.selectors.price_get``).
PRICES_CACHE = "prices"


class PriceQuerySet(ConfigQuerySet):
    cache_name = PRICES_CACHE


class Price(models.Model):
    """Tokens charged for one successful task of an action in a mode (SPEC §3).

    ``own_account_tokens`` is the platform fee table: what a task costs when one of the
    organization's own upstream accounts ran it (bring your own accounts). Empty: the
    ``OWN_ACCOUNT_FEE_PERCENT`` share of ``tokens`` (so a price row added later is never free).
    """

    action = models.CharField(max_length=16, choices=PRICE_KEY_CHOICES)
    mode = models.CharField(max_length=8, choices=Mode.choices)
    tokens = models.PositiveBigIntegerField(help_text="0 is allowed (free promotions).")
    own_account_tokens = models.PositiveBigIntegerField(
        "own-account fee",
        null=True,
        blank=True,
        help_text="Platform fee when the organization's own upstream account runs the task; "
        "empty: the default share of the price.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    objects = PriceQuerySet.as_manager()

    class Meta:
        ordering = ("action", "mode")
        constraints = [
            models.UniqueConstraint(fields=["action", "mode"], name="unique_price_per_action_mode")
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.mode}: {self.tokens} tokens"


class Balance(models.Model):
    """The cached sum of an organization's ledger entries.

    Changes only in the same transaction as the ledger entry that explains it, under a row lock;
    the CHECK constraints make a negative balance impossible even for buggy code.
    """

    organization = models.OneToOneField(
        Organization, on_delete=models.CASCADE, primary_key=True, related_name="balance"
    )
    available = models.BigIntegerField(default=0)
    held = models.BigIntegerField(default=0)
    #: Tokens of refunded purchases that were held by unfinished tasks when the refund came:
    #: taken back as those holds are released (``ledger_clawback``). Never more than ``held``;
    #: what a capture spends of it is forgiven, as spent tokens are.
    clawback_pending = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(available__gte=0), name="balance_available_non_negative"
            ),
            models.CheckConstraint(
                condition=models.Q(held__gte=0), name="balance_held_non_negative"
            ),
            models.CheckConstraint(
                condition=models.Q(clawback_pending__gte=0)
                & models.Q(clawback_pending__lte=models.F("held")),
                name="balance_clawback_pending_within_held",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organization_id}: {self.available} available, {self.held} held"


class EntryKind(models.TextChoices):
    TOPUP = "topup", "Top-up"
    SIGNUP_GRANT = "signup_grant", "Sign-up grant"
    HOLD = "hold", "Hold"
    CAPTURE = "capture", "Capture"
    RELEASE = "release", "Release"
    ADJUSTMENT = "adjustment", "Adjustment"
    REFUND = "refund", "Refund"
    #: A card dispute (chargeback): its withdrawal takes the purchased tokens back like a refund
    #: (``ledger_dispute_withdraw``), its reinstatement gives back what that took
    #: (``ledger_dispute_reinstate``).
    DISPUTE = "dispute", "Dispute"


class LedgerEntry(models.Model):
    """One movement of tokens. Append-only: never updated, never deleted.

    Invariants (checked by ``manage.py ledger_check``):

    * For every organization, ``Balance.available == sum(delta_available)`` and
      ``Balance.held == sum(delta_held)`` over its entries, so available + held is the sum of
      all movements; ``available >= 0`` and ``held >= 0`` always (database CHECKs).
    * ``(organization, idempotency_key)`` is unique. Replaying a movement with the same key
      returns the first entry and moves nothing, which is how a Stripe event credits at most once.
    * A task's capture and release share the key ``task:<id>:settle``: the unique constraint,
      not an ``if`` in Python, guarantees a finished task is settled exactly once — capture or
      release, never both, never twice — whichever of success, failure, cancel, timeout or the
      sweeper gets there first. A task its organization's own upstream account ran is captured
      at the platform fee; the rest of its hold goes back in a release keyed
      ``task:<id>:rest``, written with the capture under the same lock (the audit checks that
      capture and rest add up to the hold).
    * A correction is a new entry (``adjustment`` with the operator and a reason).
    """

    # Indexed by ``ledger_org_recent`` and the unique key, which both start with it.
    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="ledger_entries", db_index=False
    )
    kind = models.CharField(max_length=16, choices=EntryKind.choices, db_index=True)
    delta_available = models.BigIntegerField()
    delta_held = models.BigIntegerField(default=0)
    available_after = models.BigIntegerField()
    held_after = models.BigIntegerField()
    idempotency_key = models.CharField(max_length=200)
    task = models.ForeignKey(
        "tasks.Task", on_delete=models.PROTECT, null=True, blank=True, related_name="ledger_entries"
    )
    stripe_object_id = models.CharField(max_length=255, blank=True, db_index=True)
    # Indexed where set (``ledger_operator``): only an operator's adjustment has one.
    operator = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ("-id",)
        verbose_name_plural = "ledger entries"
        permissions = [("adjust_balance", "Can adjust an organization's balance")]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "idempotency_key"], name="unique_ledger_idempotency_key"
            )
        ]
        indexes = [
            models.Index(fields=["organization", "-id"], name="ledger_org_recent"),
            models.Index(
                fields=["operator"],
                name="ledger_operator",
                condition=models.Q(operator__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return (
            f"{self.kind} {self.delta_available:+d}/{self.delta_held:+d} ({self.organization_id})"
        )

    @property
    def amount(self) -> int:
        """The size of the movement as users think of it (a hold of 14000 is 14000)."""
        if self.kind in (EntryKind.CAPTURE, EntryKind.RELEASE):
            return -self.delta_held
        if self.kind == EntryKind.HOLD:
            return self.delta_held
        return self.delta_available


class TokenPackage(models.Model):
    """A bundle of tokens an operator sells through Stripe Checkout (SPEC §8)."""

    name = models.CharField(max_length=100)
    tokens = models.PositiveBigIntegerField()
    price_amount = models.PositiveIntegerField(
        help_text="Price in the currency's minor unit (fen, cents)."
    )
    currency = models.CharField(max_length=3, default="cny", help_text="ISO 4217, lower case.")
    stripe_price_id = models.CharField(
        max_length=128,
        blank=True,
        help_text="Optional Stripe price; without it Checkout is given the amount directly.",
    )
    is_active = models.BooleanField(default=True)
    sort_order = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("sort_order", "tokens", "id")
        constraints = [
            models.CheckConstraint(
                condition=models.Q(tokens__gt=0), name="package_tokens_positive"
            ),
            models.CheckConstraint(
                condition=models.Q(price_amount__gt=0), name="package_price_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.tokens} tokens)"


class CheckoutKind(models.TextChoices):
    TOPUP = "topup", "Token top-up"
    SUBSCRIPTION = "subscription", "Tier subscription"


class CheckoutStatus(models.TextChoices):
    OPEN = "open", "Open"
    AWAITING_PAYMENT = "awaiting_payment", "Completed, payment pending"
    CREDITED = "credited", "Credited"
    SUBSCRIBED = "subscribed", "Subscribed"
    PAYMENT_FAILED = "payment_failed", "Payment failed"
    EXPIRED = "expired", "Expired"


class CheckoutSession(models.Model):
    """A Stripe Checkout Session we created, and what became of it.

    ``tokens`` is copied from the package when the session is created: the customer gets what
    they were shown, even if an operator edits the package before Stripe reports the payment.
    The credit itself is the ledger entry with key ``stripe:checkout:<session_id>``, so however
    many events arrive for the session it is credited once.
    """

    session_id = models.CharField(max_length=255, unique=True)
    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="checkout_sessions"
    )
    kind = models.CharField(max_length=16, choices=CheckoutKind.choices)
    package = models.ForeignKey(
        TokenPackage, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    tier = models.ForeignKey(
        "accounts.MembershipTier",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    tokens = models.PositiveBigIntegerField(default=0)
    amount = models.PositiveIntegerField(default=0, help_text="Minor units.")
    currency = models.CharField(max_length=3, blank=True)
    status = models.CharField(
        max_length=20, choices=CheckoutStatus.choices, default=CheckoutStatus.OPEN
    )
    url = models.URLField(max_length=2048, blank=True)
    payment_intent_id = models.CharField(max_length=255, blank=True, db_index=True)
    credited_entry = models.OneToOneField(
        LedgerEntry, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    tokens_refunded = models.PositiveBigIntegerField(
        default=0, help_text="Tokens owed back by refunds so far (clawed back or shortfall)."
    )
    tokens_disputed = models.PositiveBigIntegerField(
        default=0,
        help_text="Tokens owed back by disputes whose funds Stripe withdrew, net of "
        "reinstatements. With the refunds, never more than the purchase's tokens are taken.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"{self.session_id} ({self.status})"


class StripeEvent(models.Model):
    """Every webhook event Stripe delivered, verified. The unique id makes a replay a no-op."""

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100, db_index=True)
    payload = models.JSONField()
    livemode = models.BooleanField(default=False)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, help_text="Why processing failed or was skipped.")

    class Meta:
        ordering = ("-received_at", "-id")

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class StripeDispute(models.Model):
    """A card dispute (chargeback) Stripe reported, and what it did to the tokens it paid for.

    One row per Stripe dispute (``dp_…``), kept up to date by every ``charge.dispute.*`` event
    whatever order they come in. ``balance_transactions`` gathers the dispute's balance
    transactions seen so far (id -> signed amount: the withdrawal is negative, a reinstatement
    positive), so an older event never undoes what a newer one told. Tokens move only on
    ``funds_withdrawn`` and ``funds_reinstated`` (``apps.billing.stripe_service``):
    ``tokens_owed`` is what the dispute currently counts against its purchase,
    ``tokens_withdrawn`` what its withdrawal asked the ledger to take back (after the refunds of
    the purchase, which together never take more than was bought) and ``tokens_reinstated`` what
    its reinstatement took off that again.
    """

    dispute_id = models.CharField(max_length=255, unique=True)
    checkout_session = models.ForeignKey(
        CheckoutSession,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="disputes",
        help_text="The token purchase the disputed charge paid for, once it is credited here.",
    )
    charge_id = models.CharField(max_length=255, blank=True)
    payment_intent_id = models.CharField(max_length=255, blank=True, db_index=True)
    amount = models.PositiveBigIntegerField(default=0, help_text="Disputed amount, minor units.")
    currency = models.CharField(max_length=3, blank=True)
    status = models.CharField(max_length=32, blank=True, help_text="Stripe's dispute status.")
    status_event_created = models.BigIntegerField(
        null=True, blank=True, help_text="When the event that set the status was created."
    )
    reason = models.CharField(max_length=64, blank=True, help_text="The cardholder's reason.")
    balance_transactions = models.JSONField(default=dict, blank=True)
    funds_withdrawn = models.BooleanField(
        default=False, help_text="Stripe reported the funds withdrawn (funds_withdrawn)."
    )
    funds_reinstated = models.BooleanField(
        default=False, help_text="Stripe reported the funds reinstated (funds_reinstated)."
    )
    withdrawn_at = models.DateTimeField(
        null=True, blank=True, help_text="When the withdrawal was applied to the tokens."
    )
    reinstated_at = models.DateTimeField(
        null=True, blank=True, help_text="When the reinstatement was applied to the tokens."
    )
    tokens_owed = models.PositiveBigIntegerField(default=0)
    tokens_withdrawn = models.PositiveBigIntegerField(default=0)
    tokens_reinstated = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-created_at", "-id")

    def __str__(self) -> str:
        return f"{self.dispute_id} ({self.status or 'unknown'})"
