from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.api_keys.models import ApiKey
from apps.api_keys.services import api_key_revoke

pytestmark = pytest.mark.django_db

BALANCE = "/api/v1/balance"


@pytest.mark.parametrize(
    "header",
    [
        {"HTTP_MJ_API_SECRET": "{key}"},
        {"HTTP_AUTHORIZATION": "Bearer {key}"},
        {"HTTP_AUTHORIZATION": "bearer {key}"},
        {"HTTP_TT_API_KEY": "{key}"},
    ],
)
def test_each_header_authenticates(live_key, fund, organization, header):
    fund(organization, 1234)
    client = APIClient()
    response = client.get(
        BALANCE, **{k: v.format(key=live_key.plaintext) for k, v in header.items()}
    )
    assert response.status_code == 200
    assert response.json() == {"available": 1234, "held": 0}


def test_header_names_are_case_insensitive(live_key, live_server_url_client):
    # Django folds header names to HTTP_* keys, so raw mixed-case names on the wire work.
    for name in ("MJ-API-SECRET", "Mj-Api-Secret", "tt-api-key", "TT-API-KEY"):
        status, body = live_server_url_client(BALANCE, {name: live_key.plaintext})
        assert status == 200, (name, body)


@pytest.fixture
def live_server_url_client(live_server):
    import json
    import urllib.error
    import urllib.request

    def get(path, headers):
        request = urllib.request.Request(live_server.url + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    return get


def test_missing_key_is_401_with_instructions():
    response = APIClient().get(BALANCE)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "not_authenticated"
    assert "mj-api-secret" in error["message"]


def test_wrong_key_is_401(live_key):
    wrong = live_key.plaintext[:-4] + "AAAA"
    response = APIClient().get(BALANCE, HTTP_MJ_API_SECRET=wrong)
    assert response.status_code == 401
    assert response.json()["error"] == {
        "code": "invalid_api_key",
        "message": "The API key is not valid.",
        "details": None,
    }


def test_garbage_key_is_401():
    response = APIClient().get(BALANCE, HTTP_AUTHORIZATION="Bearer hello")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_revoked_key_is_refused_immediately(key_client, live_key):
    assert key_client.get(BALANCE).status_code == 200
    api_key_revoke(api_key=live_key.api_key)
    response = key_client.get(BALANCE)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "api_key_revoked"
    assert response.json()["error"]["message"] == "The API key has been revoked."


def test_expired_key_is_401(live_key, key_client):
    ApiKey.objects.filter(pk=live_key.api_key.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    response = key_client.get(BALANCE)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "api_key_expired"


def test_ip_allow_list(organization, make_key):
    issued = make_key(organization, allowed_ips=["10.0.0.0/8"])
    client = APIClient()
    refused = client.get(BALANCE, HTTP_MJ_API_SECRET=issued.plaintext, REMOTE_ADDR="192.0.2.7")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "ip_not_allowed"
    assert "192.0.2.7" in refused.json()["error"]["message"]
    allowed = client.get(BALANCE, HTTP_MJ_API_SECRET=issued.plaintext, REMOTE_ADDR="10.1.2.3")
    assert allowed.status_code == 200


def test_key_without_billing_flag_cannot_read_balance(organization, make_key):
    issued = make_key(organization, can_read_billing=False)
    response = APIClient().get(BALANCE, HTTP_MJ_API_SECRET=issued.plaintext)
    assert response.status_code == 403
    assert response.json()["error"]["message"] == "API key lacks the billing read permission"


def test_balance_is_scoped_to_the_keys_organization(
    organization, other_organization, fund, outsider_key
):
    fund(organization, 5000)
    fund(other_organization, 7)
    response = APIClient().get(BALANCE, HTTP_MJ_API_SECRET=outsider_key.plaintext)
    assert response.json() == {"available": 7, "held": 0}


def test_last_used_is_recorded(live_key, key_client):
    assert ApiKey.objects.get(pk=live_key.api_key.pk).last_used_at is None
    key_client.get(BALANCE, REMOTE_ADDR="127.0.0.9")
    refreshed = ApiKey.objects.get(pk=live_key.api_key.pk)
    assert refreshed.last_used_at is not None
    assert refreshed.last_used_ip == "127.0.0.9"
