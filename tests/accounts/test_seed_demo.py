from __future__ import annotations

import json
from io import StringIO

import pytest
from allauth.account.models import EmailAddress
from django.core.management import call_command
from rest_framework.test import APIClient

from apps.accounts.demo import DEMO_PASSWORD
from apps.accounts.models import Membership, Organization, Role, User
from apps.api_keys.models import ApiKey
from apps.billing.models import Balance, LedgerEntry
from apps.engines.models import UpstreamAccount
from tests.factories import UpstreamAccountFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    settings.PUBLIC_BASE_URL = "http://127.0.0.1:8000"


def _seed() -> dict[str, str]:
    out = StringIO()
    call_command("seed_demo", stdout=out)
    fields = {}
    for line in out.getvalue().splitlines():
        label, sep, value = line.strip().partition(": ")
        if sep:
            fields[label.strip()] = value.strip()
    return fields


def _state() -> tuple[int, ...]:
    return tuple(
        model.objects.count()
        for model in (User, Organization, Membership, ApiKey, LedgerEntry, EmailAddress)
    )


def test_seed_prints_logins_and_working_keys(tmp_path):
    fields = _seed()
    assert fields["Operator admin"] == (
        f"http://127.0.0.1:8000/admin/  (admin@example.com / {DEMO_PASSWORD})"
    )
    assert fields["Demo tenant"] == f"demo@example.com / {DEMO_PASSWORD}  (organization Demo)"
    assert fields["Dashboard"] == "http://127.0.0.1:8000/"
    live, test = fields["Live API key"], fields["Test API key"]
    assert live.startswith("mjg_live_")
    assert test.startswith("mjg_test_")
    response = APIClient().get("/api/v1/balance", HTTP_MJ_API_SECRET=live)
    assert response.status_code == 200
    assert response.json() == {"available": 1_000_000, "held": 0}
    assert APIClient().get("/api/v1/balance", HTTP_MJ_API_SECRET=test).status_code == 200
    # The plaintexts are remembered only in the local var folder, readable by the owner alone.
    keys_file = tmp_path / "demo-keys.json"
    assert json.loads(keys_file.read_text()) == {"live": live, "test": test}
    assert keys_file.stat().st_mode & 0o777 == 0o600


def test_seed_creates_an_operator_and_a_vip_tenant():
    _seed()
    operator = User.objects.get(email="admin@example.com")
    assert (operator.is_staff, operator.is_superuser) == (True, True)
    assert operator.check_password(DEMO_PASSWORD)
    tenant = User.objects.get(email="demo@example.com")
    assert (tenant.is_staff, tenant.is_superuser) == (False, False)
    assert tenant.check_password(DEMO_PASSWORD)
    assert set(EmailAddress.objects.filter(verified=True).values_list("email", flat=True)) == {
        "admin@example.com",
        "demo@example.com",
    }
    membership = Membership.objects.select_related("organization__tier").get(user=tenant)
    assert membership.role == Role.OWNER
    assert membership.organization.name == "Demo"
    assert membership.organization.tier.code == "VIP"


def test_seed_is_idempotent():
    first = _seed()
    state = _state()
    second = _seed()
    assert _state() == state
    assert second["Live API key"] == first["Live API key"]
    assert second["Test API key"] == first["Test API key"]
    organization = Organization.objects.get(name="Demo")
    assert Balance.objects.get(organization=organization).available == 1_000_000


def test_seed_replaces_a_revoked_demo_key():
    first = _seed()
    ApiKey.objects.filter(is_test=False).update(revoked_at="2020-01-01T00:00:00Z")
    second = _seed()
    assert second["Live API key"] != first["Live API key"]
    response = APIClient().get("/api/v1/balance", HTTP_MJ_API_SECRET=second["Live API key"])
    assert response.status_code == 200


def test_seed_refuses_to_run_with_production_settings(settings):
    from django.core.management.base import CommandError

    settings.MJGATE_PRODUCTION = True
    before = _state()
    with pytest.raises(CommandError, match="does not run with production settings"):
        call_command("seed_demo", stdout=StringIO())
    assert _state() == before
    assert not User.objects.filter(email="admin@example.com").exists()


def test_seed_keeps_its_banner_for_devrun_and_names_the_mailbox(tmp_path, settings):
    settings.MAILBOX_DIR = str(tmp_path / "mailbox")
    fields = _seed()
    assert fields["Mailbox"].startswith("http://127.0.0.1:8000/dev/mailbox/")
    banner = tmp_path / "demo-banner.txt"
    text = banner.read_text()
    assert "mjgate demo is ready" in text and fields["Live API key"] in text
    assert banner.stat().st_mode & 0o777 == 0o600  # it holds the keys


def test_seed_names_no_mailbox_without_one(settings):
    settings.MAILBOX_DIR = None
    assert "Mailbox" not in _seed()


def test_a_tenants_own_account_named_sandbox_demo_does_not_stop_the_seed(organization):
    """A tenant may name its own account anything; the seed still creates the shared sandbox
    account the newcomer's first imagine needs, and leaves the tenant's alone."""
    mine = UpstreamAccountFactory(name="sandbox-demo", owner=organization)
    _seed()
    shared = UpstreamAccount.objects.get(name="sandbox-demo", owner=None)
    assert (shared.engine, shared.modes) == ("sandbox", ["FAST", "RELAX", "TURBO"])
    assert UpstreamAccount.objects.get(pk=mine.pk).owner_id == organization.pk
