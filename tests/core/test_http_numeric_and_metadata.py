"""Issue 19: numeric host spellings are refused at submit, and link-local / cloud metadata
addresses stay refused even with ``WEBHOOKS_ALLOW_PRIVATE_ADDRESSES``."""

from __future__ import annotations

from typing import Any

import pytest

from apps.core import http as outbound
from apps.core import http_wire
from apps.core.http import UnsafeURL, check_url, safe_download, safe_request
from apps.tasks.models import Task
from apps.webhooks.models import WebhookEndpoint
from tests.protocols.conftest import client_for, funded, snapshot  # noqa: F401

NUMERIC_LOOPBACK = [
    "http://2130706433/",  # 127.0.0.1 as one decimal number
    "http://0/",  # 0.0.0.0, the local host on Linux
    "http://0x7f000001/",
    "http://0x7f.1/",
    "http://127.1/",
    "http://017700000001/",  # octal
    "http://0177.0.0.01/",
    "http://2130706433./hook",
    "http://167772161/",  # 10.0.0.1
]

METADATA = [
    "http://169.254.169.254/latest/meta-data/",
    "http://2852039166/",  # 169.254.169.254 as a number
    "http://0xa9fea9fe/",
    "http://[fd00:ec2::254]/",
    "http://100.100.100.200/",
    "http://[::ffff:169.254.169.254]/",
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 form
    "http://[fe80::1]/",
    "http://169.254.1.1/",
]


@pytest.mark.parametrize("url", NUMERIC_LOOPBACK)
def test_numeric_spellings_are_refused_without_dns(url):
    with pytest.raises(UnsafeURL) as refused:
        check_url(url, allow_private=False, resolve_host=False)
    # httpx itself refuses some octal spellings as invalid; the others are read as addresses.
    assert "non-public address" in refused.value.message or "not valid" in refused.value.message


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://2130706433/", "127.0.0.1"),
        ("http://0/", "0.0.0.0"),  # noqa: S104
        ("http://0x7f.1/", "127.0.0.1"),
    ],
)
def test_numeric_spellings_are_read_as_the_address_they_stand_for(url, address):
    checked = check_url(url, allow_private=True, resolve_host=False)
    assert (checked.host, checked.addresses) == (address, (address,))


@pytest.mark.parametrize(
    "url", ["http://1.2.3.4.5/", "http://08.1/", "http://a.1/", "http://256.1.1.1/"]
)
def test_malformed_numeric_hosts_are_invalid(url):
    with pytest.raises(UnsafeURL) as refused:
        check_url(url, allow_private=True, resolve_host=False)
    assert "not valid" in refused.value.message


def test_names_that_merely_contain_digits_are_still_names():
    checked = check_url("http://123.example.com/", allow_private=False, resolve_host=False)
    assert (checked.host, checked.addresses) == ("123.example.com", ())
    assert check_url("http://8.8.8.8/", resolve_host=False).addresses == ("8.8.8.8",)


@pytest.mark.parametrize("url", METADATA)
def test_metadata_and_link_local_stay_refused_with_private_allowed(url, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True
    with pytest.raises(UnsafeURL) as refused:
        check_url(url, resolve_host=False)
    assert "never allowed" in refused.value.message
    with pytest.raises(UnsafeURL):
        check_url(url, allow_private=True)


def test_private_allowed_still_opens_loopback_and_private(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True
    assert check_url("http://127.0.0.1:9/", resolve_host=False).addresses == ("127.0.0.1",)
    assert check_url("http://10.1.2.3/", resolve_host=False).addresses == ("10.1.2.3",)


def test_a_metadata_name_is_refused_after_resolution(settings, monkeypatch):
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True
    monkeypatch.setattr(
        outbound.socket,
        "getaddrinfo",
        lambda *a, **k: [(outbound.socket.AF_INET, 1, 6, "", ("169.254.169.254", 80))],
    )
    with pytest.raises(UnsafeURL):
        check_url("http://metadata.google.internal/computeMetadata/v1/")


def test_no_socket_is_opened_to_metadata_even_with_private_allowed(settings, monkeypatch):
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True
    opened: list[Any] = []
    monkeypatch.setattr(http_wire, "open_socket", lambda *a, **k: opened.append(a))
    for url in METADATA:
        with pytest.raises(UnsafeURL):
            safe_request("POST", url, content=b"{}")
        with pytest.raises(UnsafeURL):
            safe_download(url, max_bytes=1024)
    assert opened == []


# --- at submit, in every dialect --------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("hook", ["http://2130706433/", "http://0/", "http://0x7f.1/cb"])
def test_mjproxy_submit_refuses_a_numeric_loopback_hook(funded, live_key, client_for, hook):  # noqa: F811
    before = snapshot(funded)
    response = client_for(live_key).post(
        "/mj/submit/imagine", {"prompt": "a fox", "notifyHook": hook}, format="json"
    )
    assert response.status_code == 200
    body = response.json()
    assert body["code"] == 4
    assert body["description"].startswith("The notify hook is not allowed: ")
    assert snapshot(funded) == before


@pytest.mark.django_db
def test_ttapi_and_native_refuse_a_numeric_hook(funded, live_key, client_for):  # noqa: F811
    before = snapshot(funded)
    client = client_for(live_key)
    ttapi = client.post(
        "/midjourney/v1/imagine", {"prompt": "a fox", "hookUrl": "http://0/"}, format="json"
    )
    assert ttapi.status_code == 400
    assert ttapi.json()["status"] == "FAILED"
    native = client.post(
        "/api/v1/tasks",
        {"action": "IMAGINE", "prompt": "a fox", "webhook_url": "http://2130706433/"},
        format="json",
    )
    assert native.status_code == 400, native.content
    assert snapshot(funded) == before
    assert Task.objects.count() == 0


@pytest.mark.django_db
def test_a_numeric_webhook_endpoint_is_refused(organization, live_key, client_for):  # noqa: F811
    response = client_for(live_key).post(
        "/api/v1/webhooks/endpoints", {"url": "http://2130706433/hook"}, format="json"
    )
    assert response.status_code == 400, response.content
    assert WebhookEndpoint.objects.count() == 0
