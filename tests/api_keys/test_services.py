from __future__ import annotations

import hashlib
import math
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.api_keys.models import ApiKey
from apps.api_keys.selectors import api_key_get, api_key_list
from apps.api_keys.services import (
    MAX_ALLOWED_IPS,
    ApiKeyRejected,
    api_key_authenticate,
    api_key_create,
    api_key_revoke,
    api_key_update,
)
from apps.core.errors import NotFound, ValidationFailed

pytestmark = pytest.mark.django_db

KEY_FORMAT = re.compile(r"^mjg_(live|test)_[A-Za-z0-9]{32}$")


def test_live_key_format_and_storage(organization, owner):
    issued = api_key_create(organization=organization, name=" CI ", created_by=owner)
    plaintext = issued.plaintext
    assert KEY_FORMAT.match(plaintext)
    assert plaintext.startswith("mjg_live_")
    # 32 characters from 62 symbols: comfortably over the 160 bits SPEC §2 asks for.
    assert 32 * math.log2(62) >= 160
    stored = ApiKey.objects.get(pk=issued.api_key.pk)
    assert stored.name == "CI"
    assert stored.prefix == plaintext[:17]
    assert stored.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert stored.is_test is False
    assert stored.created_by == owner
    assert stored.scopes() == ["midjourney", "billing_read"]


def test_test_key_format(organization):
    issued = api_key_create(organization=organization, name="sandbox", is_test=True)
    assert issued.plaintext.startswith("mjg_test_")
    assert KEY_FORMAT.match(issued.plaintext)
    assert issued.api_key.is_test is True
    assert issued.api_key.prefix == issued.plaintext[:17]


def test_keys_are_random(organization):
    keys = {api_key_create(organization=organization, name=f"k{i}").plaintext for i in range(50)}
    assert len(keys) == 50
    # Every one of the 62 symbols shows up somewhere in 50 x 32 random characters.
    assert len({c for key in keys for c in key[len("mjg_live_") :]}) > 55


def test_a_key_needs_a_name(organization):
    with pytest.raises(ValidationFailed) as excinfo:
        api_key_create(organization=organization, name="   ")
    assert excinfo.value.details == {"field": "name"}
    assert not ApiKey.objects.exists()


def test_expiry_must_be_in_the_future(organization):
    with pytest.raises(ValidationFailed) as excinfo:
        api_key_create(
            organization=organization, name="old", expires_at=timezone.now() - timedelta(1)
        )
    assert excinfo.value.message == "The expiry must be in the future."
    assert not ApiKey.objects.exists()


def test_ip_allow_list_is_normalised(organization):
    issued = api_key_create(
        organization=organization, name="office", allowed_ips=["10.1.2.3/8", " 192.0.2.1 ", ""]
    )
    assert issued.api_key.allowed_ips == ["10.0.0.0/8", "192.0.2.1/32"]


def test_ip_allow_list_keeps_each_network_once(organization):
    issued = api_key_create(
        organization=organization,
        name="office",
        allowed_ips=["192.0.2.1", "192.0.2.1/32", "10.9.9.9/8", "10.0.0.0/8", "2001:db8::1"],
    )
    assert issued.api_key.allowed_ips == ["192.0.2.1/32", "10.0.0.0/8", "2001:db8::1/128"]


def test_ip_allow_list_has_a_limit_on_every_path(organization, live_key):
    too_many = [f"10.0.{n // 250}.{n % 250}" for n in range(MAX_ALLOWED_IPS + 1)]
    with pytest.raises(ValidationFailed) as excinfo:
        api_key_create(organization=organization, name="office", allowed_ips=too_many)
    assert excinfo.value.details == {"field": "allowed_ips"}
    assert "at most 100" in excinfo.value.message
    assert not ApiKey.objects.filter(name="office").exists()
    with pytest.raises(ValidationFailed):
        api_key_update(api_key=live_key.api_key, allowed_ips=too_many)
    live_key.api_key.refresh_from_db()
    assert live_key.api_key.allowed_ips == []
    assert (
        len(
            api_key_create(
                organization=organization, name="full", allowed_ips=too_many[:MAX_ALLOWED_IPS]
            ).api_key.allowed_ips
        )
        == MAX_ALLOWED_IPS
    )


def test_ip_allow_list_limit_counts_networks_not_lines(organization):
    issued = api_key_create(
        organization=organization,
        name="office",
        allowed_ips=["203.0.113.7"] * 500 + [f"10.0.0.{n}/8" for n in range(200)],
    )
    assert issued.api_key.allowed_ips == ["203.0.113.7/32", "10.0.0.0/8"]
    with pytest.raises(ValidationFailed) as excinfo:  # a paste far beyond: not even parsed
        api_key_create(
            organization=organization,
            name="paste",
            allowed_ips=[f"10.{n // 65536}.{n // 256 % 256}.{n % 256}" for n in range(5000)],
        )
    assert "(5000 given)" in excinfo.value.message


def test_invalid_ip_is_refused(organization):
    with pytest.raises(ValidationFailed) as excinfo:
        api_key_create(organization=organization, name="office", allowed_ips=["10.0.0.300"])
    assert excinfo.value.message == "'10.0.0.300' is not an IP address or CIDR network."
    assert not ApiKey.objects.exists()


def test_authenticate_returns_the_key_and_its_organization(organization, live_key):
    api_key = api_key_authenticate(raw_key=live_key.plaintext, client_ip="203.0.113.5")
    assert api_key.pk == live_key.api_key.pk
    assert api_key.organization == organization
    stored = ApiKey.objects.get(pk=api_key.pk)
    assert stored.last_used_at is not None
    assert stored.last_used_ip == "203.0.113.5"


def test_last_used_is_written_at_most_once_per_resolution(live_key, settings):
    settings.API_KEY_LAST_USED_RESOLUTION = timedelta(minutes=5)
    api_key_authenticate(raw_key=live_key.plaintext, client_ip="203.0.113.5")
    first = ApiKey.objects.get(pk=live_key.api_key.pk).last_used_at
    api_key_authenticate(raw_key=live_key.plaintext, client_ip="203.0.113.6")
    stored = ApiKey.objects.get(pk=live_key.api_key.pk)
    assert (stored.last_used_at, stored.last_used_ip) == (first, "203.0.113.5")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda key: key[:-1] + ("A" if key[-1] != "A" else "B"),  # same prefix, wrong secret
        lambda key: "mjg_live_" + "x" * 32,  # unknown prefix
        lambda key: key.replace("mjg_live_", "mjg_test_"),  # other scheme
        lambda key: key[9:],  # no scheme
        lambda key: "",
    ],
)
def test_wrong_keys_are_rejected(live_key, mangle):
    with pytest.raises(ApiKeyRejected) as excinfo:
        api_key_authenticate(raw_key=mangle(live_key.plaintext), client_ip=None)
    assert (excinfo.value.code, excinfo.value.http_status) == ("invalid_api_key", 401)
    assert ApiKey.objects.get(pk=live_key.api_key.pk).last_used_at is None


def test_revocation_takes_effect_at_once(live_key):
    api_key_authenticate(raw_key=live_key.plaintext, client_ip=None)
    revoked = api_key_revoke(api_key=ApiKey.objects.get(pk=live_key.api_key.pk))
    assert revoked.revoked_at is not None
    with pytest.raises(ApiKeyRejected) as excinfo:
        api_key_authenticate(raw_key=live_key.plaintext, client_ip=None)
    assert excinfo.value.code == "api_key_revoked"
    # Revoking again keeps the first revocation time.
    again = api_key_revoke(api_key=ApiKey.objects.get(pk=live_key.api_key.pk))
    assert again.revoked_at == ApiKey.objects.get(pk=live_key.api_key.pk).revoked_at


def test_expired_key_is_rejected(organization):
    issued = api_key_create(
        organization=organization, name="short", expires_at=timezone.now() + timedelta(hours=1)
    )
    assert api_key_authenticate(raw_key=issued.plaintext, client_ip=None).pk == issued.api_key.pk
    ApiKey.objects.filter(pk=issued.api_key.pk).update(expires_at=timezone.now())
    with pytest.raises(ApiKeyRejected) as excinfo:
        api_key_authenticate(raw_key=issued.plaintext, client_ip=None)
    assert (excinfo.value.code, excinfo.value.message) == (
        "api_key_expired",
        "The API key has expired.",
    )


def test_key_of_a_disabled_organization_is_rejected(organization, live_key):
    organization.is_active = False
    organization.save()
    with pytest.raises(ApiKeyRejected) as excinfo:
        api_key_authenticate(raw_key=live_key.plaintext, client_ip=None)
    assert excinfo.value.code == "org_disabled"


def test_ip_allow_list_is_enforced(organization):
    issued = api_key_create(organization=organization, name="office", allowed_ips=["10.0.0.0/8"])
    assert api_key_authenticate(raw_key=issued.plaintext, client_ip="10.9.8.7")
    for ip in ("192.0.2.1", None, "not-an-ip"):
        with pytest.raises(ApiKeyRejected) as excinfo:
            api_key_authenticate(raw_key=issued.plaintext, client_ip=ip)
        assert (excinfo.value.code, excinfo.value.http_status) == ("ip_not_allowed", 403)


def test_update_changes_flags(live_key):
    api_key = api_key_update(
        api_key=live_key.api_key,
        name="renamed",
        can_midjourney=False,
        read_only=True,
        allowed_ips=["2001:db8::/32"],
    )
    stored = ApiKey.objects.get(pk=api_key.pk)
    assert (stored.name, stored.can_midjourney, stored.read_only) == ("renamed", False, True)
    assert stored.allowed_ips == ["2001:db8::/32"]
    assert stored.scopes() == ["billing_read", "read_only"]
    with pytest.raises(ValidationFailed):
        api_key_update(api_key=stored, name=" ")
    assert ApiKey.objects.get(pk=api_key.pk).name == "renamed"


def test_selectors_are_scoped_to_the_organization(organization, live_key, outsider_key):
    assert list(api_key_list(organization=organization)) == [live_key.api_key]
    assert api_key_get(organization=organization, key_id=live_key.api_key.pk) == live_key.api_key
    for key_id in (outsider_key.api_key.pk, "abc", 999_999):
        with pytest.raises(NotFound):
            api_key_get(organization=organization, key_id=key_id)


def test_revoked_keys_can_be_hidden_from_the_list(organization, live_key, make_key):
    other = make_key(organization, name="other")
    api_key_revoke(api_key=live_key.api_key)
    assert list(api_key_list(organization=organization, include_revoked=False)) == [other.api_key]


def test_update_keeps_what_is_left_out_and_none_clears(organization):
    soon = timezone.now() + timedelta(days=1)
    issued = api_key_create(
        organization=organization, name="ci", allowed_ips=["10.0.0.0/8"], expires_at=soon
    )
    api_key_update(api_key=issued.api_key, name="renamed")
    stored = ApiKey.objects.get(pk=issued.api_key.pk)
    assert (stored.name, stored.allowed_ips, stored.expires_at) == ("renamed", ["10.0.0.0/8"], soon)
    api_key_update(api_key=stored, expires_at=None)
    stored = ApiKey.objects.get(pk=issued.api_key.pk)
    assert (stored.allowed_ips, stored.expires_at) == (["10.0.0.0/8"], None)
    api_key_update(api_key=stored, allowed_ips=None)
    assert ApiKey.objects.get(pk=issued.api_key.pk).allowed_ips == []
