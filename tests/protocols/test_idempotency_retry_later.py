"""Idempotency-Key: "try again later" refusals are never stored, whatever the wire status.

mj-proxy answers a tier limit (code 23) and a short balance (code 4) as HTTP 200, as the
reference proxy does; the idempotency layer decides on the domain error's own status (429,
402), so a retry with the same key runs again once a slot has freed or the balance was topped
up (docs/api.md, "Idempotency-Key").
"""

from __future__ import annotations

import pytest

from apps.core.models import IdempotencyRecord
from apps.tasks.enums import Status
from apps.tasks.models import Task

pytestmark = pytest.mark.django_db

IMAGINE = "/mj/submit/imagine"


def _imagine(client, prompt, key):
    response = client.post(IMAGINE, {"prompt": prompt}, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 200, response.content
    return response


def test_mjproxy_tier_limit_refusal_is_answered_afresh_and_runs_once_a_slot_frees(
    funded, live_key, client_for
):
    client = client_for(live_key)
    held = [_imagine(client, f"a fox number {n}", f"fox-{n}").json() for n in range(3)]  # FREE: 3
    assert [body["code"] for body in held] == [22, 22, 22], held

    refused = _imagine(client, "one more fox", "retry-me")
    again = _imagine(client, "one more fox", "retry-me")
    for answer in (refused, again):
        assert answer.json()["code"] == 23
        assert answer.json()["properties"]["retryAfter"] == 15
        assert answer["Retry-After"] == "15"
        assert "Idempotent-Replayed" not in answer
    assert not IdempotencyRecord.objects.filter(key="retry-me").exists()
    assert Task.objects.filter(organization=funded).count() == 3

    # A slot frees; the client retries the very same request with the same key.
    assert client.post(f"/mj/task/{held[0]['result']}/cancel").json()["code"] == 1
    assert Task.objects.get(pk=held[0]["result"]).status == Status.CANCEL
    accepted = _imagine(client, "one more fox", "retry-me")
    assert "Idempotent-Replayed" not in accepted
    assert accepted.json()["code"] == 22, accepted.json()
    assert Task.objects.filter(organization=funded).count() == 4
    replayed = _imagine(client, "one more fox", "retry-me")
    assert replayed["Idempotent-Replayed"] == "true"
    assert replayed.content == accepted.content
    assert Task.objects.filter(organization=funded).count() == 4


def test_mjproxy_insufficient_balance_refusal_runs_again_after_a_top_up(
    organization, live_key, client_for, fund
):
    client = client_for(live_key)
    poor = _imagine(client, "a red fox", "topup-then-retry")
    assert poor.json()["code"] == 4
    assert "balance" in poor.json()["description"].lower()
    assert not IdempotencyRecord.objects.filter(key="topup-then-retry").exists()
    assert Task.objects.filter(organization=organization).count() == 0

    fund(organization, 1_000_000)
    retried = _imagine(client, "a red fox", "topup-then-retry")
    assert "Idempotent-Replayed" not in retried
    assert retried.json()["code"] == 22, retried.json()
    assert Task.objects.filter(organization=organization).count() == 1
