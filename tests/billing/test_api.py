"""Native API: ``/api/v1/ledger``, ``/api/v1/prices``, ``/api/v1/plan`` (and ``/balance``)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from apps.accounts.models import MembershipTier
from apps.billing.ledger import ledger_capture, ledger_hold, ledger_release, ledger_topup
from apps.billing.models import LedgerEntry, Price

from .helpers import new_task, snapshot

pytestmark = pytest.mark.django_db

LEDGER = "/api/v1/ledger"
PRICES = "/api/v1/prices"
PLAN = "/api/v1/plan"
BALANCE = "/api/v1/balance"


def client_for(key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key.plaintext}")
    return client


@pytest.fixture
def history(organization):
    """topup, hold A, hold B, capture A, release B — newest last."""
    ledger_topup(organization=organization, amount=50_000, idempotency_key="t", reason="wire")
    a = new_task(organization, status="SUCCESS")
    b = new_task(organization, status="FAILURE")
    ledger_hold(task=a, amount=14_000)
    ledger_hold(task=b, amount=7_000)
    ledger_capture(task=a)
    ledger_release(task=b)
    return a, b


def test_ledger_lists_entries_newest_first_with_every_field(key_client, organization, history):
    a, b = history
    response = key_client.get(LEDGER)
    assert response.status_code == 200
    body = response.json()
    assert (body["next"], body["previous"]) == (None, None)
    rows = [
        {k: v for k, v in row.items() if k not in ("id", "created_at")} for row in body["results"]
    ]
    assert rows == [
        {
            "kind": "release",
            "amount": 7_000,
            "delta_available": 7_000,
            "delta_held": -7_000,
            "available_after": 36_000,
            "held_after": 0,
            "task": b.pk,
            "reason": "",
        },
        {
            "kind": "capture",
            "amount": 14_000,
            "delta_available": 0,
            "delta_held": -14_000,
            "available_after": 29_000,
            "held_after": 7_000,
            "task": a.pk,
            "reason": "",
        },
        {
            "kind": "hold",
            "amount": 7_000,
            "delta_available": -7_000,
            "delta_held": 7_000,
            "available_after": 29_000,
            "held_after": 21_000,
            "task": b.pk,
            "reason": "",
        },
        {
            "kind": "hold",
            "amount": 14_000,
            "delta_available": -14_000,
            "delta_held": 14_000,
            "available_after": 36_000,
            "held_after": 14_000,
            "task": a.pk,
            "reason": "",
        },
        {
            "kind": "topup",
            "amount": 50_000,
            "delta_available": 50_000,
            "delta_held": 0,
            "available_after": 50_000,
            "held_after": 0,
            "task": None,
            "reason": "wire",
        },
    ]
    ids = [row["id"] for row in body["results"]]
    assert ids == sorted(ids, reverse=True)
    assert ids == list(
        LedgerEntry.objects.filter(organization=organization)
        .order_by("-id")
        .values_list("id", flat=True)
    )
    assert all(row["created_at"].endswith("Z") for row in body["results"])


def test_ledger_pages_with_an_opaque_cursor(key_client, organization, history):
    first = key_client.get(LEDGER, {"limit": 2}).json()
    assert [row["kind"] for row in first["results"]] == ["release", "capture"]
    assert first["previous"] is None
    second = key_client.get(first["next"]).json()
    assert [row["kind"] for row in second["results"]] == ["hold", "hold"]
    # New entries arriving between pages neither shift nor repeat what follows.
    ledger_topup(organization=organization, amount=1, idempotency_key="late")
    third = key_client.get(second["next"]).json()
    assert [row["kind"] for row in third["results"]] == ["topup"]
    assert third["results"][0]["amount"] == 50_000
    assert third["next"] is None


def test_ledger_filters_by_kind_and_task(key_client, history):
    a, b = history
    holds = key_client.get(LEDGER, {"kind": "hold"}).json()["results"]
    assert [(row["kind"], row["task"]) for row in holds] == [("hold", b.pk), ("hold", a.pk)]
    of_a = key_client.get(LEDGER, {"task": a.pk}).json()["results"]
    assert [(row["kind"], row["task"]) for row in of_a] == [("capture", a.pk), ("hold", a.pk)]
    both = key_client.get(LEDGER, {"task": b.pk, "kind": "release"}).json()["results"]
    assert [(row["kind"], row["task"]) for row in both] == [("release", b.pk)]
    assert key_client.get(LEDGER, {"task": "123"}).json()["results"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"kind": "bogus"}, "kind"),
        ({"kind": "HOLD"}, "kind"),
        ({"task": "not-a-task-id"}, "task"),
        ({"task": "1" * 33}, "task"),
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
    ],
)
def test_ledger_bad_filter_is_400_in_the_native_format(key_client, history, params, field):
    response = key_client.get(LEDGER, params)
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["code"] == "validation_error"
    assert body["error"]["message"] == "The request is invalid."
    assert list(body["error"]["details"]) == [field]


def test_ledger_bad_cursor_is_400(key_client, history):
    response = key_client.get(LEDGER, {"cursor": "definitely-not-a-cursor"})
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "validation_error",
            "message": "The cursor is invalid.",
            "details": {"cursor": "Use a cursor this API returned."},
        }
    }


def test_outsider_never_sees_our_entries(organization, history, outsider_key, other_organization):
    a, _ = history
    ledger_topup(organization=other_organization, amount=5, idempotency_key="theirs")
    before = snapshot(organization)
    client = client_for(outsider_key)
    rows = client.get(LEDGER).json()["results"]
    assert [(row["kind"], row["amount"]) for row in rows] == [("topup", 5)]
    # Naming our task id in the filter answers exactly like a task that does not exist.
    assert client.get(LEDGER, {"task": a.pk}).json() == {
        "next": None,
        "previous": None,
        "results": [],
    }
    assert client.get(BALANCE).json() == {"available": 5, "held": 0}
    assert snapshot(organization) == before


def test_a_key_without_billing_read_is_refused(organization, make_key, history):
    key = make_key(organization, can_read_billing=False)
    client = client_for(key)
    for url in (LEDGER, PRICES, PLAN, BALANCE):
        response = client.get(url)
        assert response.status_code == 403, url
        assert response.json()["error"]["message"] == "API key lacks the billing read permission"


def test_no_key_is_401(api_client, history):
    for url in (LEDGER, PRICES, PLAN):
        response = api_client.get(url)
        assert response.status_code == 401, url
        assert response.json()["error"]["code"] == "not_authenticated"


def test_writes_are_not_allowed(key_client, organization, history):
    before = snapshot(organization)
    for url in (LEDGER, PRICES, PLAN):
        assert key_client.post(url, {}, format="json").status_code == 405
    assert snapshot(organization) == before


def test_prices_table(key_client):
    Price.objects.filter(action="SHORTEN", mode="RELAX").update(tokens=0)
    response = key_client.get(PRICES)
    assert response.status_code == 200
    body = response.json()
    assert body["unit"] == "tokens"
    assert body["tokens_per_cny"] == 35_000
    assert body["modes"] == ["FAST", "RELAX", "TURBO"]
    assert body["allowed_modes"] == ["FAST", "RELAX", "TURBO"]
    assert body["prices"] == {
        "BLEND": {"FAST": 14000, "RELAX": 7000, "TURBO": 28000},
        "DESCRIBE": {"FAST": 3500, "RELAX": 1750, "TURBO": 7000},
        "EDIT": {"FAST": 14000, "RELAX": 7000, "TURBO": 28000},
        "IMAGINE": {"FAST": 14000, "RELAX": 7000, "TURBO": 28000},
        "IMAGINE_DRAFT": {"FAST": 7000, "RELAX": 3500, "TURBO": 14000},
        "PAN": {"FAST": 14000, "RELAX": 7000, "TURBO": 28000},
        "REROLL": {"FAST": 14000, "RELAX": 7000, "TURBO": 28000},
        "RETEXTURE": {"FAST": 14000, "RELAX": 7000, "TURBO": 28000},
        "SHORTEN": {"FAST": 3500, "RELAX": 0, "TURBO": 7000},
        "SWAP_FACE": {"FAST": 3500, "RELAX": 1750, "TURBO": 7000},
        "UPSCALE": {"FAST": 3500, "RELAX": 1750, "TURBO": 7000},
        "VARIATION": {"FAST": 14000, "RELAX": 7000, "TURBO": 28000},
        "ZOOM": {"FAST": 14000, "RELAX": 7000, "TURBO": 28000},
        # A batch of four clips: 8x an image job (Midjourney's relative GPU cost).
        "VIDEO": {"FAST": 112000, "RELAX": 56000, "TURBO": 224000},
        # HD (720p): 3.2x SD's GPU time; Midjourney makes no HD video in Relax.
        "VIDEO_HD": {"FAST": 358400, "TURBO": 716800},
    }


def test_prices_show_the_modes_the_tier_allows(key_client, organization):
    free = organization.tier
    free.allowed_modes = ["RELAX"]
    free.save()
    assert key_client.get(PRICES).json()["allowed_modes"] == ["RELAX"]


def test_plan_shows_tier_and_unfinished_tasks(key_client, organization, other_organization):
    for status in (
        "NOT_START",
        "SUBMITTED",
        "IN_PROGRESS",
        "SUCCESS",
        "FAILURE",
        "CANCEL",
        "MODAL",
    ):
        new_task(organization, status=status)
    new_task(other_organization, status="IN_PROGRESS")
    response = key_client.get(PLAN)
    assert response.status_code == 200
    assert response.json() == {
        "code": "FREE",
        "name": "Free",
        "max_unfinished_tasks": 3,
        "allowed_modes": ["FAST", "RELAX", "TURBO"],
        "unfinished_tasks": 3,
    }


def test_plan_follows_the_tier(key_client, organization, outsider_key):
    organization.tier = MembershipTier.objects.get(code="PREMIUM")
    organization.save()
    assert key_client.get(PLAN).json()["code"] == "PREMIUM"
    assert key_client.get(PLAN).json()["max_unfinished_tasks"] == 50
    # The outsider's own plan, never ours.
    assert client_for(outsider_key).get(PLAN).json()["code"] == "FREE"
