"""The idempotent demo seed behind the README run command.

Creates a demo operator, a demo tenant with tokens and API keys, and (see ``seed_upstreams``)
a sandbox upstream account so a newcomer's first imagine produces an image. The demo keys'
plaintexts are kept in ``var/demo-keys.json`` (local development only) so that re-running the
seed prints the same working keys instead of minting new ones.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction

from apps.api_keys.models import ApiKey, hash_key
from apps.api_keys.services import api_key_create
from apps.billing.ledger import ledger_topup
from apps.engines.models import UpstreamAccount
from apps.engines.services import upstream_account_create

from .models import Membership, Organization, Role, User
from .provisioning import email_mark_verified
from .selectors import tier_get
from .services import organization_set_tier, user_create

DEMO_OPERATOR_EMAIL = "admin@example.com"
DEMO_TENANT_EMAIL = "demo@example.com"
DEMO_PASSWORD = "mjgate-demo"  # noqa: S105 - a published demo login for local development
DEMO_TOKENS = 1_000_000


@dataclass(frozen=True)
class DemoSeed:
    operator_email: str
    tenant_email: str
    password: str
    organization: Organization
    live_key: str
    test_key: str


def _keys_file() -> Path:
    return Path(settings.VAR_DIR) / "demo-keys.json"


def _load_keys() -> dict[str, str]:
    try:
        data = json.loads(_keys_file().read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)}


def _save_keys(keys: dict[str, str]) -> None:
    path = _keys_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(keys, indent=2))
    os.chmod(path, 0o600)


def _ensure_user(email: str, *, staff: bool) -> User:
    user = User.objects.filter(email=email).first()
    if user is None:
        user = user_create(
            email=email,
            password=DEMO_PASSWORD,
            is_staff=staff,
            is_superuser=staff,
            grant_signup_tokens=False,
        )
    email_mark_verified(user=user)
    return user


def _ensure_key(
    organization: Organization, user: User, name: str, *, is_test: bool, remembered: str | None
) -> str:
    if remembered:
        active = ApiKey.objects.filter(
            organization=organization, key_hash=hash_key(remembered), revoked_at__isnull=True
        ).exists()
        if active:
            return remembered
    issued = api_key_create(organization=organization, name=name, created_by=user, is_test=is_test)
    return issued.plaintext


@transaction.atomic
def demo_seed() -> DemoSeed:
    _ensure_user(DEMO_OPERATOR_EMAIL, staff=True)
    tenant = _ensure_user(DEMO_TENANT_EMAIL, staff=False)
    organization = Membership.objects.get(user=tenant, role=Role.OWNER).organization
    if organization.name != "Demo":
        organization.name = "Demo"
        organization.save(update_fields=["name", "updated_at"])
    organization_set_tier(organization=organization, tier=tier_get(code="VIP"))
    ledger_topup(
        organization=organization,
        amount=DEMO_TOKENS,
        idempotency_key="demo-seed:tokens",
        reason="Demo tokens",
    )
    keys = _load_keys()
    live = _ensure_key(
        organization, tenant, "Demo live key", is_test=False, remembered=keys.get("live")
    )
    test = _ensure_key(
        organization, tenant, "Demo test key", is_test=True, remembered=keys.get("test")
    )
    _save_keys({"live": live, "test": test})
    seed_upstreams()
    return DemoSeed(
        operator_email=DEMO_OPERATOR_EMAIL,
        tenant_email=DEMO_TENANT_EMAIL,
        password=DEMO_PASSWORD,
        organization=organization,
        live_key=live,
        test_key=test,
    )


def seed_upstreams() -> None:
    """A sandbox upstream account serving every mode, so the first imagine just works."""
    # The platform's (shared) account: a tenant's own account may carry the same name.
    if not UpstreamAccount.objects.filter(name="sandbox-demo", owner=None).exists():
        upstream_account_create(
            engine="sandbox",
            name="sandbox-demo",
            modes=["FAST", "RELAX", "TURBO"],
            concurrency=3,
            options={"duration": "8"},
        )
