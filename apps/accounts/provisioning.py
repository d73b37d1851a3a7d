"""Provisioning a whole tenant in one call: used by ``createtenant`` and the demo seed."""

from __future__ import annotations

from dataclasses import dataclass

from allauth.account.models import EmailAddress
from django.db import transaction

from apps.api_keys.services import IssuedKey, api_key_create
from apps.billing.ledger import ledger_topup
from apps.core.errors import ValidationFailed

from .models import Membership, Organization, Role, User
from .selectors import tier_get
from .services import organization_rename, organization_set_tier, user_create


@dataclass(frozen=True)
class ProvisionedTenant:
    user: User
    organization: Organization
    issued_key: IssuedKey


def email_mark_verified(*, user: User) -> None:
    EmailAddress.objects.update_or_create(
        user=user, email=user.email, defaults={"verified": True, "primary": True}
    )


@transaction.atomic
def tenant_provision(
    *,
    email: str,
    tier_code: str = "FREE",
    tokens: int = 0,
    password: str | None = None,
    organization_name: str | None = None,
    key_name: str = "Default key",
) -> ProvisionedTenant:
    """Create a verified user, their organization on a tier, a token top-up and a live key."""
    if tokens < 0:
        raise ValidationFailed("--tokens cannot be negative.")
    tier = tier_get(code=tier_code)
    user = user_create(email=email, password=password, grant_signup_tokens=False)
    email_mark_verified(user=user)
    membership = Membership.objects.select_related("organization").get(user=user, role=Role.OWNER)
    organization = membership.organization
    if organization_name:
        organization_rename(actor=user, organization=organization, name=organization_name)
    organization_set_tier(organization=organization, tier=tier)
    if tokens:
        ledger_topup(
            organization=organization,
            amount=tokens,
            idempotency_key="provision:initial-tokens",
            reason="Initial tokens (createtenant)",
        )
    issued = api_key_create(
        organization=organization, name=key_name, created_by=user, can_midjourney=True
    )
    return ProvisionedTenant(user=user, organization=organization, issued_key=issued)
