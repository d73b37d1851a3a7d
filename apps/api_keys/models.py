"""API keys: stored as a lookup prefix and a hash; the plaintext is shown once (SPEC §2)."""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.accounts.models import Organization
from apps.core.models import TimeStampedModel
from apps.tasks.enums import Pool

LIVE_SCHEME = "mjg_live_"
TEST_SCHEME = "mjg_test_"
#: Characters of the random part kept in clear as the lookup prefix (about 48 bits: enough to
#: find the row, far too little to guess the other 190 bits).
PREFIX_RANDOM_CHARS = 8


def hash_key(raw_key: str) -> str:
    """SHA-256 is right here: the key carries 190 bits of entropy, so no slow KDF is needed."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


class ApiKey(TimeStampedModel):
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=32, db_index=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    is_test = models.BooleanField(default=False, editable=False)
    can_midjourney = models.BooleanField(
        "midjourney", default=True, help_text="Submit, fetch and list Midjourney tasks."
    )
    read_only = models.BooleanField(
        default=False, help_text="May fetch and list but not submit or change anything."
    )
    can_read_billing = models.BooleanField(
        "billing read", default=True, help_text="Read the balance, ledger, prices and plan."
    )
    remix = models.BooleanField(
        "remix by default",
        default=False,
        help_text="Variations, rerolls and pans open a prompt step (remix) unless the request "
        "says otherwise.",
    )
    pool = models.CharField(
        "upstream pool",
        max_length=16,
        choices=Pool.choices,
        default=Pool.SHARED,
        help_text="Whose upstream accounts run this key's new tasks unless the request says: "
        "the shared pool, the organization's own accounts, or its own then the shared pool.",
    )
    allowed_ips = models.JSONField(
        default=list, blank=True, help_text="IP addresses or CIDR networks; empty allows any."
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        ordering = ("-created_at",)
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    #: Columns a plain ``save()`` of an existing key never writes back: the copy in memory may
    #: be older than a revocation (``api_key_revoke`` updates the row alone) or the last use,
    #: and writing it back would undo them.
    GUARDED_FIELDS = frozenset({"revoked_at", "last_used_at", "last_used_ip"})

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding and kwargs.get("update_fields") is None:
            kwargs["update_fields"] = [
                f.name
                for f in self._meta.concrete_fields
                if not f.primary_key and f.name not in self.GUARDED_FIELDS
            ]
        super().save(*args, **kwargs)

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_active(self) -> bool:
        return not self.is_revoked and not self.is_expired

    def ip_allowed(self, ip: str | None) -> bool:
        if not self.allowed_ips:
            return True
        if not ip:
            return False
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        for network in self.allowed_ips:
            try:
                if address in ipaddress.ip_network(network, strict=False):
                    return True
            except ValueError:
                continue
        return False

    def scopes(self) -> list[str]:
        flags = []
        if self.can_midjourney:
            flags.append("midjourney")
        if self.can_read_billing:
            flags.append("billing_read")
        if self.read_only:
            flags.append("read_only")
        return flags
