"""People, organizations (the tenants), memberships, invitations and membership tiers."""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from apps.core.errors import ValidationFailed
from apps.core.models import TimeStampedModel
from apps.core.text import refuse_control_characters


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def _create_user(self, email: str, password: str | None, **extra: Any) -> User:
        if not email:
            raise ValueError("An e-mail address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self._create_user(email, password, **extra)


class User(AbstractUser):
    """Logs in with an e-mail address; there is no username."""

    username = None  # type: ignore[assignment]
    first_name = None  # type: ignore[assignment]
    last_name = None  # type: ignore[assignment]
    email = models.EmailField("e-mail address", unique=True)
    name = models.CharField(max_length=150, blank=True)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    objects: ClassVar[UserManager] = UserManager()  # type: ignore[assignment]

    def __str__(self) -> str:
        return self.email


class MembershipTier(models.Model):
    """How many unfinished tasks an organization may have at once (SPEC §1). Operator-editable."""

    code = models.SlugField(max_length=32, unique=True, help_text="FREE, VIP, PREMIUM …")
    name = models.CharField(max_length=64)
    max_unfinished_tasks = models.PositiveIntegerField()
    allowed_modes = models.JSONField(
        default=list, blank=True, help_text="Modes this tier may use; empty means all modes."
    )
    stripe_price_id = models.CharField(
        max_length=128, blank=True, help_text="Stripe price of the subscription that grants it."
    )
    is_default = models.BooleanField(default=False)
    sort_order = models.PositiveSmallIntegerField(default=0)
    max_own_accounts = models.PositiveSmallIntegerField(
        "own upstream accounts",
        default=0,
        help_text="Upstream accounts an organization of this tier may add and run its own "
        "tasks on (bring your own accounts); 0 does not allow any.",
    )

    class Meta:
        ordering = ("sort_order", "code")
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"],
                condition=models.Q(is_default=True),
                name="single_default_tier",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.max_unfinished_tasks} unfinished tasks)"

    def allows_mode(self, mode: str) -> bool:
        return not self.allowed_modes or mode in self.allowed_modes

    @property
    def allows_own_accounts(self) -> bool:
        return self.max_own_accounts > 0


ORGANIZATION_NAME_MAX_LENGTH = 120


def organization_name_clean(name: str) -> str:
    """An organization's name as it is stored: trimmed, cut to its length, one line.

    The name goes into invitation mails' subjects (a header: a line break there is a header
    injection, which Django refuses with ``BadHeaderError``) and into every page and mail that
    names the organization. Raises ``ValidationFailed``; every writer of the name calls it (the
    services, the admin's form through ``Organization.clean``).
    """
    name = name.strip()
    if not name:
        raise ValidationFailed("An organization needs a name.", details={"field": "name"})
    refuse_control_characters(name, what="The organization name")
    return name[:ORGANIZATION_NAME_MAX_LENGTH].rstrip()


class Organization(TimeStampedModel):
    """The tenant: everything a customer owns hangs off exactly one organization."""

    name = models.CharField(max_length=ORGANIZATION_NAME_MAX_LENGTH)
    tier = models.ForeignKey(MembershipTier, on_delete=models.PROTECT, related_name="+")
    is_personal = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)
    stripe_customer_id = models.CharField(max_length=64, blank=True, db_index=True)
    stripe_subscription_id = models.CharField(max_length=64, blank=True)
    #: Tasks of this organization in an unfinished status (``apps.tasks.enums``
    #: ``UNFINISHED_STATUSES``), what the tier limit compares against. Kept by a PostgreSQL
    #: trigger on the task table (migration ``tasks.0006``) in the very transaction that
    #: inserts a task or changes its status, so no code path can forget it;
    #: ``manage.py ledger_check`` verifies it against a COUNT. Never written by the application.
    unfinished_tasks = models.IntegerField(default=0, editable=False)

    class Meta:
        ordering = ("name", "id")

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if not self.name:
            return  # the field's own check says it is required
        try:
            self.name = organization_name_clean(self.name)
        except ValidationFailed as exc:
            raise ValidationError({"name": exc.message}) from exc

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Never write ``unfinished_tasks`` back: the copy in memory may be stale, the trigger
        owns the column."""
        if not self._state.adding and kwargs.get("update_fields") is None:
            kwargs["update_fields"] = [
                f.name
                for f in self._meta.concrete_fields
                if not f.primary_key and f.name != "unfinished_tasks"
            ]
        super().save(*args, **kwargs)


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"


class Membership(TimeStampedModel):
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "organization"], name="unique_membership")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"


def hash_invitation_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Invitation(TimeStampedModel):
    """An e-mailed invitation. Only the token's hash is stored; the link carries the token."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="invitations"
    )
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "email"],
                condition=models.Q(accepted_at__isnull=True, revoked_at__isnull=True),
                name="one_open_invitation_per_email",
            )
        ]

    def __str__(self) -> str:
        return f"Invitation of {self.email} to {self.organization}"

    @property
    def is_open(self) -> bool:
        return (
            self.accepted_at is None
            and self.revoked_at is None
            and self.expires_at > timezone.now()
        )
