"""A change to an upstream account's settings: ``updated_at`` moves with every change, and the
callback URL given to jobs in flight (mjgate's generated ``callback_token``) survives new
credentials, by the tenant or by an operator."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.utils import timezone

from apps.accounts.models import MembershipTier, Organization
from apps.engines.base import get_engine
from apps.engines.models import UpstreamAccount
from apps.engines.own_services import own_account_create, own_account_update
from apps.engines.services import upstream_account_set_enabled, upstream_account_update
from apps.tasks.jobs import account_view
from tests.factories import UpstreamAccountFactory

pytestmark = pytest.mark.django_db

MJPROXY = {"base_url": "https://mj.example.com", "callbacks": True}
PROGRESS = {"id": "job-1", "status": "IN_PROGRESS", "progress": "40%"}


@pytest.fixture
def premium(organization: Organization) -> Organization:
    organization.tier = MembershipTier.objects.get(code="PREMIUM")
    organization.save(update_fields=["tier"])
    return organization


def _auth(client: Any, key: Any) -> Any:
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key.plaintext}")
    return client


def _callback_path(account: UpstreamAccount) -> str:
    """The callback URL a job submitted now is given (as the engine builds it), its path."""
    account.refresh_from_db()
    return urlsplit(get_engine("mjproxy").notify_hook(account_view(account))).path


def _callback(path: str) -> int:
    return Client().post(path, PROGRESS, content_type="application/json").status_code


def _own(premium: Organization) -> UpstreamAccount:
    return own_account_create(
        organization=premium,
        engine="mjproxy",
        name="mine",
        modes=["FAST"],
        options=MJPROXY,
        secrets={"secret": "old-secret"},
    )


def _operator_update(account: UpstreamAccount, secrets: dict[str, Any] | None) -> None:
    account.refresh_from_db()
    upstream_account_update(
        account=account,
        name=account.name,
        modes=list(account.modes),
        concurrency=account.concurrency,
        queue_size=account.queue_size,
        run_timeout_seconds=account.run_timeout_seconds,
        options=dict(account.options),
        secrets=secrets,
    )


def test_a_tenants_new_secret_keeps_the_callback_url_until_it_clears_them(premium):
    account = _own(premium)
    path = _callback_path(account)  # the first submit generates the token
    assert _callback(path) == 200
    own_account_update(organization=premium, account_id=account.pk, secrets={"secret": "new"})
    account.refresh_from_db()
    assert account.secrets["secret"] == "new"
    assert _callback(path) == 200
    assert _callback_path(account) == path
    # Clearing every credential (``{}``) drops the generated token too.
    own_account_update(organization=premium, account_id=account.pk, secrets={})
    account.refresh_from_db()
    assert account.secrets == {}
    assert _callback(path) == 403


def test_an_operators_new_secret_keeps_the_callback_url_and_a_given_token_wins():
    account = UpstreamAccountFactory(mjproxy=True, options=MJPROXY)
    path = _callback_path(account)
    _operator_update(account, {"secret": "rotated"})
    assert account.secrets["secret"] == "rotated"
    assert _callback(path) == 200
    _operator_update(account, None)  # kept as stored
    assert _callback(path) == 200
    _operator_update(account, {"secret": "rotated", "callback_token": "chosen-by-the-operator"})
    assert _callback(path) == 403
    assert _callback_path(account) != path
    _operator_update(account, {})
    assert account.secrets == {}


def test_a_tenants_patch_and_switch_move_updated_at(api_client, premium, live_key):
    account = _own(premium)
    client = _auth(api_client, live_key)
    for change in ({"concurrency": 5}, {"is_enabled": False}):
        long_ago = timezone.now() - timedelta(days=3)
        UpstreamAccount.objects.filter(pk=account.pk).update(updated_at=long_ago)
        response = client.patch(f"/api/v1/upstream-accounts/{account.pk}", change, format="json")
        assert response.status_code == 200, response.content
        account.refresh_from_db()
        assert account.updated_at > long_ago, change


def test_an_operators_switch_moves_updated_at():
    account = UpstreamAccountFactory()
    long_ago = timezone.now() - timedelta(days=3)
    UpstreamAccount.objects.filter(pk=account.pk).update(updated_at=long_ago)
    upstream_account_set_enabled(account=account, enabled=False)
    stored = UpstreamAccount.objects.get(pk=account.pk)
    assert (stored.is_enabled, stored.updated_at > long_ago) == (False, True)
    assert account.updated_at == stored.updated_at
