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


# --- several key headers: the documented rule (apps/core/authentication.presented_key) ---------


def _last_used(*issued):
    return [ApiKey.objects.get(pk=i.api_key.pk).last_used_at for i in issued]


def test_our_key_wins_over_another_services_bearer_token(live_key, fund, organization):
    """Chat UIs and gateways may send their own Authorization: Bearer next to mj-api-secret."""
    fund(organization, 50)
    for other in ("Bearer sk-openai-0123456789", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x"):
        response = APIClient().get(
            BALANCE, HTTP_AUTHORIZATION=other, HTTP_MJ_API_SECRET=live_key.plaintext
        )
        assert response.status_code == 200, response.json()
        assert response.json() == {"available": 50, "held": 0}
    response = APIClient().get(
        BALANCE, HTTP_AUTHORIZATION="Bearer sk-openai-0", HTTP_TT_API_KEY=live_key.plaintext
    )
    assert response.status_code == 200


def test_the_same_key_in_several_headers_is_fine(live_key):
    response = APIClient().get(
        BALANCE,
        HTTP_MJ_API_SECRET=live_key.plaintext,
        HTTP_TT_API_KEY=live_key.plaintext,
        HTTP_AUTHORIZATION=f"Bearer {live_key.plaintext}",
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"HTTP_MJ_API_SECRET": "{mine}", "HTTP_AUTHORIZATION": "Bearer {theirs}"},
        {"HTTP_MJ_API_SECRET": "{theirs}", "HTTP_TT_API_KEY": "{mine}"},
        {"HTTP_TT_API_KEY": "{mine}", "HTTP_AUTHORIZATION": "bearer {theirs}"},
    ],
)
def test_two_different_keys_are_refused_and_touch_nothing(live_key, outsider_key, headers):
    values = {
        k: v.format(mine=live_key.plaintext, theirs=outsider_key.plaintext)
        for k, v in headers.items()
    }
    response = APIClient().get(BALANCE, **values)
    assert response.status_code == 401
    assert response.json()["error"] == {
        "code": "ambiguous_api_key",
        "message": "The request carries different API keys in its key headers; send one key.",
        "details": None,
    }
    assert _last_used(live_key, outsider_key) == [None, None]
    mj = APIClient().get("/mj/task/list", **values)
    assert mj.status_code == 401
    assert _last_used(live_key, outsider_key) == [None, None]


def test_a_wrong_mjgate_key_beside_a_foreign_bearer_is_invalid(live_key):
    response = APIClient().get(
        BALANCE,
        HTTP_AUTHORIZATION="Bearer sk-openai-0",
        HTTP_MJ_API_SECRET=live_key.plaintext[:-4] + "AAAA",
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    "headers",
    [
        {"HTTP_MJ_API_SECRET": "  {key}\t"},
        {"HTTP_AUTHORIZATION": "Bearer    {key}  "},
        {"HTTP_AUTHORIZATION": "Bearer\t{key}"},
        {"HTTP_AUTHORIZATION": "Basic dXNlcjpwYXNz", "HTTP_TT_API_KEY": "{key}"},
        {"HTTP_AUTHORIZATION": "Bearer ", "HTTP_MJ_API_SECRET": "", "HTTP_TT_API_KEY": "{key}"},
    ],
)
def test_surrounding_whitespace_and_other_schemes_are_ignored(live_key, headers):
    response = APIClient().get(
        BALANCE, **{k: v.format(key=live_key.plaintext) for k, v in headers.items()}
    )
    assert response.status_code == 200, response.json()


def test_blank_key_headers_count_as_no_key():
    response = APIClient().get(
        BALANCE, HTTP_MJ_API_SECRET="  ", HTTP_AUTHORIZATION="Bearer", HTTP_TT_API_KEY=""
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_a_key_of_a_disabled_organization_is_refused_and_not_touched(live_key, organization, fund):
    fund(organization, 10)
    organization.is_active = False
    organization.save(update_fields=["is_active"])
    response = APIClient().get(BALANCE, HTTP_MJ_API_SECRET=live_key.plaintext)
    assert response.status_code == 401
    assert response.json()["error"] == {
        "code": "org_disabled",
        "message": "The organization of this API key is disabled.",
        "details": None,
    }
    assert _last_used(live_key) == [None]
    submit = APIClient().post(
        "/mj/submit/imagine",
        {"prompt": "a cat"},
        format="json",
        HTTP_MJ_API_SECRET=live_key.plaintext,
    )
    assert submit.status_code == 401
    from apps.tasks.models import Task

    assert Task.objects.count() == 0
    from apps.billing.models import Balance

    assert Balance.objects.get(organization=organization).available == 10
