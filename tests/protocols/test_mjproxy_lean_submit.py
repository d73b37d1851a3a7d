"""A plain mj-proxy submit skips DRF's request cycle and answers exactly as DRF's path does
(issue 15, P1: ``SubmitView.dispatch``).

Each request is sent twice, once on the plain path and once with it turned off (DRF's own
dispatch), and both answers must be the same: status, every header, body (a new task's id
and queue figures aside).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client
from rest_framework.views import APIView

from apps.accounts.models import MembershipTier, Organization
from apps.api_keys.services import IssuedKey
from apps.billing.selectors import balance_get
from apps.core.ratelimit import MAX_REQUEST_BODY_BYTES
from apps.protocols.mjproxy import views
from apps.tasks.models import BannedWord, Task

pytestmark = pytest.mark.django_db

IMAGINE = "/mj/submit/imagine"


@pytest.fixture
def drf_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each time a view wraps its request in DRF's ``Request``."""
    calls: list[str] = []
    original = APIView.initialize_request

    def spy(self: APIView, request: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(request.path)
        return original(self, request, *args, **kwargs)

    monkeypatch.setattr(APIView, "initialize_request", spy)
    return calls


def _post(key: str | None, body: bytes | str, path: str = IMAGINE, **extra: Any) -> Any:
    headers = {"HTTP_MJ_API_SECRET": key} if key else {}
    return Client().post(path, body, content_type="application/json", **headers, **extra)


def test_a_plain_submit_never_makes_a_drf_request(funded, live_key, drf_calls):
    MembershipTier.objects.filter(pk=funded.tier_id).update(max_unfinished_tasks=10)
    response = _post(live_key.plaintext, json.dumps({"prompt": "a red fox"}))
    assert response.status_code == 200
    assert response.json()["code"] in (1, 22)
    assert drf_calls == []
    # What DRF's cycle is still needed for takes it: an Idempotency-Key, a negotiation.
    _post(live_key.plaintext, json.dumps({"prompt": "a fox"}), HTTP_IDEMPOTENCY_KEY="k1")
    _post(live_key.plaintext, json.dumps({"prompt": "a fox"}), HTTP_ACCEPT="application/json")
    _post(live_key.plaintext, json.dumps({"prompt": "a fox"}), path=f"{IMAGINE}?format=json")
    assert drf_calls == [IMAGINE] * 3
    assert Task.objects.filter(organization=funded).count() == 4


def _answer(response: Any) -> tuple[int, dict[str, str], bytes]:
    return response.status_code, dict(response.headers), response.content


def _both(send: Callable[[], Any], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """``send()`` on the plain path, then on DRF's (a fresh rate-limit window for each)."""
    cache.clear()
    plain = send()
    with monkeypatch.context() as patch:
        patch.setattr(views, "_lean_possible", lambda view, request, kwargs: False)
        cache.clear()
        drf = send()
    return plain, drf


ERRORS: dict[str, tuple[dict[str, Any], bytes | str]] = {
    "no key": ({"key": None}, json.dumps({"prompt": "a fox"})),
    "unknown key": ({"key": "mjg_live_nope"}, json.dumps({"prompt": "a fox"})),
    "not JSON": ({}, b"{not json"),
    "a JSON array": ({}, b"[1, 2]"),
    "no body": ({}, b""),
    "no prompt": ({}, json.dumps({"state": "s"})),
    "a prompt of another type": ({}, json.dumps({"prompt": ["a", "fox"]})),
    "a bad enableRemix": ({}, json.dumps({"prompt": "a fox", "enableRemix": "maybe"})),
    "a NUL in the body": ({}, b'{"prompt": "a \\u0000 fox"}'),
    "a bad hook": ({}, json.dumps({"prompt": "a fox", "notifyHook": "ftp://x"})),
    "a banned word": ({}, json.dumps({"prompt": "some gore here"})),
    "a too large body": ({"CONTENT_LENGTH": str(MAX_REQUEST_BODY_BYTES + 1)}, b"{}"),
    "a bad mode": ({}, json.dumps({"prompt": "a fox", "mode": "WARP"})),
    "unicode": ({}, json.dumps({"prompt": "\u2028 ünï \U0001f98a --ar 3:2 --seed x"})),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_every_refusal_is_answered_as_on_drfs_path(
    case: str, funded: Organization, live_key: IssuedKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    BannedWord.objects.create(word="gore")
    options, body = ERRORS[case]
    options = dict(options)
    key = options.pop("key", live_key.plaintext)
    before = balance_get(organization=funded)
    plain, drf = _both(lambda: _post(key, body, **options), monkeypatch)
    assert _answer(plain) == _answer(drf)
    assert plain.status_code != 200 or plain.json()["code"] not in (1, 22)
    assert not Task.objects.filter(organization=funded).exists()
    assert balance_get(organization=funded) == before


def test_keys_without_the_right_flags_are_refused_as_on_drfs_path(funded, make_key, monkeypatch):
    for flags in ({"read_only": True}, {"can_midjourney": False}):
        key = make_key(funded, **flags).plaintext
        plain, drf = _both(lambda key=key: _post(key, json.dumps({"prompt": "a"})), monkeypatch)
        assert plain.status_code == 403
        assert _answer(plain) == _answer(drf)
    assert not Task.objects.filter(organization=funded).exists()


def test_the_rate_limit_and_the_tier_limit_answer_as_on_drfs_path(
    funded, live_key, monkeypatch, settings
):
    settings.API_RATE_LIMIT = 1

    def twice() -> Any:
        _post(live_key.plaintext, json.dumps({"prompt": "first"}))
        return _post(live_key.plaintext, json.dumps({"prompt": "second"}))

    plain, drf = _both(twice, monkeypatch)
    assert plain.status_code == 429
    assert _answer(plain) == _answer(drf)
    settings.API_RATE_LIMIT = 0
    MembershipTier.objects.filter(pk=funded.tier_id).update(max_unfinished_tasks=2)
    plain, drf = _both(lambda: _post(live_key.plaintext, '{"prompt": "over"}'), monkeypatch)
    assert plain.json()["code"] == 23
    assert _answer(plain) == _answer(drf)


def test_an_accepted_submit_is_answered_as_on_drfs_path(funded, live_key, monkeypatch):
    body = json.dumps({"prompt": "a red fox --ar 3:2", "state": "s", "botType": "NIJI_JOURNEY"})
    plain, drf = _both(lambda: _post(live_key.plaintext, body), monkeypatch)
    assert (plain.status_code, dict(plain.headers)) == (drf.status_code, dict(drf.headers))
    plain_body, drf_body = plain.json(), drf.json()
    assert plain_body["code"] == drf_body["code"] == 22  # no account runs here: both queue
    tasks = Task.objects.filter(organization=funded).order_by("created_at")
    assert [t.pk for t in tasks] == [plain_body["result"], drf_body["result"]]
    assert [t.prompt for t in tasks] == ["a red fox --ar 3:2 --niji"] * 2
    assert plain_body["description"] == "In queue, there are 0 tasks ahead"
    assert drf_body["description"] == "In queue, there are 1 tasks ahead"
    assert (
        plain.content == json.dumps(plain_body, ensure_ascii=False, separators=(",", ":")).encode()
    )
