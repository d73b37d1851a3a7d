"""client_ip: which address an API key's IP allow-list and last_used_ip see."""

from __future__ import annotations

import pytest
from django.test import RequestFactory
from rest_framework.test import APIClient

from apps.api_keys.models import ApiKey
from apps.core.net import client_ip

BALANCE = "/api/v1/balance"


def _ip(settings, hops: int, forwarded: str | None, remote: str = "10.9.9.9") -> str | None:
    settings.TRUSTED_PROXY_COUNT = hops
    meta = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded
    return client_ip(RequestFactory().get("/", **meta))


@pytest.mark.parametrize(
    ("hops", "forwarded", "expected"),
    [
        (0, "1.1.1.1", "10.9.9.9"),  # no proxy trusted: the header is the client's word
        (1, None, "10.9.9.9"),  # reached us directly
        (1, "1.1.1.1", "1.1.1.1"),
        (1, "6.6.6.6, 1.1.1.1", "1.1.1.1"),  # the left entry is forged by the client
        (2, "6.6.6.6, 1.1.1.1, 2.2.2.2", "1.1.1.1"),
        (2, "1.1.1.1", "10.9.9.9"),  # fewer hops than proxies: judged by the peer
        (1, " 1.1.1.1 , ", "1.1.1.1"),
        (1, "203.0.113.9:51234", "203.0.113.9"),
        (1, "[2001:db8::1]:443", "2001:db8::1"),
        (1, "2001:DB8::1", "2001:db8::1"),
        (1, "::ffff:203.0.113.9", "203.0.113.9"),
        (1, "unknown", None),
        (1, "1.1.1.1, not-an-address", None),
        (1, "fe80::1%eth0", "fe80::1"),
    ],
)
def test_client_ip(settings, hops, forwarded, expected):
    assert _ip(settings, hops, forwarded) == expected


def test_ipv4_mapped_socket_peer_is_an_ipv4_address(settings):
    assert _ip(settings, 0, None, remote="::ffff:10.1.2.3") == "10.1.2.3"
    assert _ip(settings, 0, None, remote="") is None


@pytest.mark.django_db
def test_a_dual_stack_peer_matches_an_ipv4_allow_list(organization, make_key):
    issued = make_key(organization, allowed_ips=["10.0.0.0/8"])
    response = APIClient().get(
        BALANCE, HTTP_MJ_API_SECRET=issued.plaintext, REMOTE_ADDR="::ffff:10.1.2.3"
    )
    assert response.status_code == 200
    assert ApiKey.objects.get(pk=issued.api_key.pk).last_used_ip == "10.1.2.3"


@pytest.mark.django_db
def test_an_unreadable_forwarded_hop_is_no_address(settings, organization, make_key):
    """Before: the raw header value went to last_used_ip (a 500 on PostgreSQL's inet column)."""
    settings.TRUSTED_PROXY_COUNT = 1
    open_key = make_key(organization)
    response = APIClient().get(
        BALANCE, HTTP_MJ_API_SECRET=open_key.plaintext, HTTP_X_FORWARDED_FOR="unknown"
    )
    assert response.status_code == 200
    assert ApiKey.objects.get(pk=open_key.api_key.pk).last_used_ip is None
    listed = make_key(organization, allowed_ips=["0.0.0.0/0", "::/0"])
    refused = APIClient().get(
        BALANCE, HTTP_MJ_API_SECRET=listed.plaintext, HTTP_X_FORWARDED_FOR="unknown"
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "ip_not_allowed"
    assert ApiKey.objects.get(pk=listed.api_key.pk).last_used_at is None


@pytest.mark.django_db
def test_the_proxy_hop_decides_the_allow_list(settings, organization, make_key):
    settings.TRUSTED_PROXY_COUNT = 1
    issued = make_key(organization, allowed_ips=["198.51.100.0/24"])
    forged = APIClient().get(
        BALANCE,
        HTTP_MJ_API_SECRET=issued.plaintext,
        HTTP_X_FORWARDED_FOR="198.51.100.7, 203.0.113.50",
    )
    assert forged.status_code == 403
    assert ApiKey.objects.get(pk=issued.api_key.pk).last_used_at is None
    allowed = APIClient().get(
        BALANCE,
        HTTP_MJ_API_SECRET=issued.plaintext,
        HTTP_X_FORWARDED_FOR="203.0.113.50, 198.51.100.7:40000",
    )
    assert allowed.status_code == 200
    assert ApiKey.objects.get(pk=issued.api_key.pk).last_used_ip == "198.51.100.7"
