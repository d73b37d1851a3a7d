"""No silently ignored input in the native API (issue 14): every writable field of every
request serializer is honoured or refused, unknown fields are refused by name, key
permissions and webhook events mean what the caller sent."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone
from rest_framework import serializers
from rest_framework.test import APIClient

from apps.accounts.models import MembershipTier
from apps.api_keys.models import ApiKey
from apps.engines.models import UpstreamAccount
from apps.protocols.v1 import billing_views, upload_views, upstream_views, webhook_views
from apps.protocols.v1 import serializers as v1_serializers
from apps.tasks.enums import Action, Mode, Pool, Status
from apps.tasks.events import task_changed
from apps.tasks.models import Task
from apps.webhooks.models import WebhookDelivery, WebhookEndpoint
from tests.factories import UpstreamAccountFactory
from tests.tasks.helpers import button_id, png_data_url, run_to_completion

from .conftest import snapshot

pytestmark = pytest.mark.django_db

HOOK = "https://93.184.216.34/hook"  # a public address: no DNS needed


@pytest.fixture
def api(live_key) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {live_key.plaintext}")
    return client


def created_task(response) -> Task:
    assert response.status_code == 201, response.json()
    return Task.objects.get(pk=response.json()["id"])


def refused(response, field: str) -> None:
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert field in str(error["details"]) or field in error["message"], error


# --- key permissions ---------------------------------------------------------------------------


def test_key_permissions_object_is_honoured(api, organization):
    answer = api.post(
        "/api/v1/keys", {"name": "bot", "permissions": {"midjourney": False}}, format="json"
    )
    assert answer.status_code == 201, answer.json()
    key = ApiKey.objects.get(pk=answer.json()["id"])
    assert (key.can_midjourney, key.read_only, key.can_read_billing) == (False, False, True)
    assert answer.json()["midjourney"] is False
    assert answer.json()["permissions"] == {
        "midjourney": False,
        "read_only": False,
        "billing_read": True,
    }
    # The created key really lacks the permission.
    bot = APIClient()
    bot.credentials(HTTP_AUTHORIZATION=f"Bearer {answer.json()['secret']}")
    assert bot.get("/api/v1/tasks").status_code == 403

    patched = api.patch(
        f"/api/v1/keys/{key.pk}",
        {"permissions": {"read_only": True, "billing_read": False}},
        format="json",
    )
    assert patched.status_code == 200, patched.json()
    key.refresh_from_db()
    assert (key.can_midjourney, key.read_only, key.can_read_billing) == (False, True, False)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "k", "permissions": {"midjourney": False, "admin": True}}, "admin"),
        ({"name": "k", "permissions": {"midjourny": False}}, "midjourny"),
        ({"name": "k", "permissions": ["midjourney"]}, "permissions"),
        ({"name": "k", "midjourney": True, "permissions": {"midjourney": False}}, "permissions"),
        ({"name": "k", "scopes": ["tasks"]}, "scopes"),
        ({"name": "k", "is_active": False}, "is_active"),
    ],
)
def test_unknown_or_contradictory_permissions_are_refused(api, organization, body, field):
    before = ApiKey.objects.count()
    refused(api.post("/api/v1/keys", body, format="json"), field)
    assert ApiKey.objects.count() == before


# --- webhook endpoint events -------------------------------------------------------------------


def test_webhook_endpoint_events_are_honoured(api, organization):
    answer = api.post(
        "/api/v1/webhooks/endpoints",
        {"url": HOOK, "events": ["task.succeeded"]},
        format="json",
    )
    assert answer.status_code == 201, answer.json()
    assert answer.json()["event_types"] == ["task.succeeded"]
    endpoint = WebhookEndpoint.objects.get(pk=answer.json()["id"])
    assert endpoint.event_types == ["task.succeeded"]
    task = Task.objects.create(organization=organization, action=Action.IMAGINE)
    with transaction.atomic():
        created = task_changed(task=task, event_type="task.created")
        succeeded = task_changed(task=task, event_type="task.succeeded")
    sent = WebhookDelivery.objects.filter(endpoint=endpoint)
    assert not sent.filter(event__in=created).exists()
    assert sent.filter(event__in=succeeded).count() == 1

    patched = api.patch(
        f"/api/v1/webhooks/endpoints/{endpoint.pk}", {"events": ["task.failed"]}, format="json"
    )
    assert patched.status_code == 200 and patched.json()["event_types"] == ["task.failed"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": HOOK, "events": ["task.exploded"]}, "task.exploded"),
        ({"url": HOOK, "events": ["task.failed"], "event_types": ["task.failed"]}, "events"),
        ({"url": HOOK, "secret": "mine"}, "secret"),
        ({"url": HOOK, "enabled": False}, "enabled"),
    ],
)
def test_unknown_webhook_fields_and_events_are_refused(api, organization, body, field):
    response = api.post("/api/v1/webhooks/endpoints", body, format="json")
    assert response.status_code == 400, response.json()
    assert field in str(response.json()["error"])
    assert not WebhookEndpoint.objects.exists()


# --- tasks --------------------------------------------------------------------------------------


def test_a_native_press_refuses_what_it_cannot_take(api, funded, sandbox):
    grid = created_task(
        api.post("/api/v1/tasks", {"action": "IMAGINE", "prompt": "a fox"}, format="json")
    )
    run_to_completion(grid.pk)
    before = snapshot(funded)
    for body, field in [
        ({"parent": grid.pk, "button": "U1", "prompt": "a blue fox"}, "prompt"),
        ({"parent": grid.pk, "button": "U1", "images": [png_data_url()]}, "images"),
        ({"parent": grid.pk, "button": "U1", "dimensions": "SQUARE"}, "dimensions"),
    ]:
        response = api.post("/api/v1/tasks", body, format="json")
        refused(response, field)
    message = api.post(
        "/api/v1/tasks", {"parent": grid.pk, "button": "U1", "prompt": "x"}, format="json"
    ).json()["error"]["message"]
    assert message.startswith("This button takes no prompt: only variations, rerolls and pans")
    assert snapshot(funded) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "DESCRIBE", "images": [png_data_url()], "prompt": "ignored?"}, "prompt"),
        ({"action": "IMAGINE", "prompt": "a fox", "dimensions": "SQUARE"}, "dimensions"),
        ({"action": "SHORTEN", "prompt": "a fox", "images": [png_data_url()]}, "images"),
        ({"action": "IMAGINE", "prompt": "a fox", "notifyHook": HOOK}, "notifyHook"),
        ({"action": "IMAGINE", "prompt": "a fox", "hook_url": HOOK}, "hook_url"),
        ({"action": "IMAGINE", "prompt": "a fox", "enableRemix": True}, "enableRemix"),
        ({"action": "IMAGINE", "prompt": "a fox", "remix": "sometimes"}, "remix"),
    ],
)
def test_fields_an_action_does_not_take_are_refused(api, funded, body, field):
    before = snapshot(funded)
    refused(api.post("/api/v1/tasks", body, format="json"), field)
    assert snapshot(funded) == before


# --- the walk: every writable field of every native request serializer ------------------------

#: Serializers that only render answers (never given request data).
OUTPUT_ONLY = {
    "ButtonSerializer",
    "TaskSerializer",
    "TaskPageSerializer",
    "ApiKeySerializer",
    "ApiKeyCreatedSerializer",
    "EndpointSerializer",
    "EndpointCreatedSerializer",
    "DeliverySerializer",
    "DeliveryDetailSerializer",
    "LedgerEntrySerializer",
    "LedgerPageSerializer",
    "UpstreamAccountSerializer",
}
#: Query-string serializers: their fields are filters, walked by ``QUERY_PROBES``.
QUERY = {"TaskListQuerySerializer", "LedgerQuerySerializer", "DeliveryQuerySerializer"}


def request_serializers() -> dict[str, type[serializers.Serializer]]:
    found: dict[str, type[serializers.Serializer]] = {}
    for module in (v1_serializers, webhook_views, billing_views, upload_views, upstream_views):
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, serializers.BaseSerializer)
                and value.__module__ == module.__name__
            ):
                found[name] = value
    return found


def writable_fields(serializer: type[serializers.Serializer]) -> set[str]:
    return {name for name, field in serializer().fields.items() if not field.read_only}


class Walk:
    """What a probe needs: an API client, a funded organization with a sandbox account."""

    def __init__(self, api: APIClient, organization: Any) -> None:
        self.api = api
        self.organization = organization

    def task(self, body: dict[str, Any]) -> Task:
        return created_task(self.api.post("/api/v1/tasks", body, format="json"))

    def grid(self) -> Task:
        return run_to_completion(self.task({"action": "IMAGINE", "prompt": "a barn"}).pk)

    def upscale(self) -> Task:
        grid = self.grid()
        return run_to_completion(self.task({"parent": grid.pk, "button": "U1"}).pk)

    def modal(self, button: str) -> Task:
        upscale = self.upscale()
        task = self.task({"parent": upscale.pk, "button": button})
        assert task.status == Status.MODAL
        return task

    def key(self, body: dict[str, Any]) -> ApiKey:
        answer = self.api.post("/api/v1/keys", {"name": "walk", **body}, format="json")
        assert answer.status_code == 201, answer.json()
        return ApiKey.objects.get(pk=answer.json()["id"])

    def patch_key(self, body: dict[str, Any]) -> ApiKey:
        key = self.key({})
        answer = self.api.patch(f"/api/v1/keys/{key.pk}", body, format="json")
        assert answer.status_code == 200, answer.json()
        key.refresh_from_db()
        return key

    def premium(self) -> None:
        """The organization's plan includes own upstream accounts."""
        self.organization.tier = MembershipTier.objects.get(code="PREMIUM")
        self.organization.save(update_fields=["tier"])

    def account(self, body: dict[str, Any]) -> UpstreamAccount:
        self.premium()
        base = {
            "name": "walk",
            "engine": "mjproxy",
            "modes": ["FAST"],
            "options": {"base_url": "https://mj.example.com"},
        }
        answer = self.api.post("/api/v1/upstream-accounts", {**base, **body}, format="json")
        assert answer.status_code == 201, answer.json()
        return UpstreamAccount.objects.get(pk=answer.json()["id"])

    def patch_account(self, body: dict[str, Any]) -> UpstreamAccount:
        account = self.account({"secrets": {"secret": "before"}})
        answer = self.api.patch(f"/api/v1/upstream-accounts/{account.pk}", body, format="json")
        assert answer.status_code == 200, answer.json()
        account.refresh_from_db()
        return account

    def endpoint(self, body: dict[str, Any]) -> WebhookEndpoint:
        answer = self.api.post("/api/v1/webhooks/endpoints", {"url": HOOK, **body}, format="json")
        assert answer.status_code == 201, answer.json()
        return WebhookEndpoint.objects.get(pk=answer.json()["id"])

    def patch_endpoint(self, body: dict[str, Any]) -> WebhookEndpoint:
        endpoint = self.endpoint({})
        answer = self.api.patch(f"/api/v1/webhooks/endpoints/{endpoint.pk}", body, format="json")
        assert answer.status_code == 200, answer.json()
        endpoint.refresh_from_db()
        return endpoint


def _own_pool(walk: Walk) -> None:
    walk.premium()
    UpstreamAccountFactory(name="walk-own", owner=walk.organization)
    task = walk.task({"action": "IMAGINE", "prompt": "a fox", "pool": "own"})
    assert (task.pool, task.price, task.own_fee) == (Pool.OWN, 2800, 2800)


def _modal_prompt(walk: Walk) -> None:
    task = walk.modal("CUSTOM_ZOOM")
    answer = walk.api.post(
        f"/api/v1/tasks/{task.pk}/modal", {"prompt": "a barn --zoom 1.5"}, format="json"
    )
    assert answer.status_code == 200, answer.json()
    task.refresh_from_db()
    assert (task.status, task.params["zoom_factor"]) == (Status.NOT_START, 1.5)


def _modal_mask(walk: Walk) -> None:
    task = walk.modal("VARY_REGION")
    answer = walk.api.post(
        f"/api/v1/tasks/{task.pk}/modal", {"mask": png_data_url((255, 255, 255))}, format="json"
    )
    assert answer.status_code == 200, answer.json()
    task.refresh_from_db()
    assert task.status == Status.NOT_START and task.params["mask"].startswith("inputs/")


def _press(walk: Walk) -> None:
    grid = walk.grid()
    task = walk.task({"parent": grid.pk, "button": "V2"})
    assert (task.parent_id, task.custom_id) == (grid.pk, button_id(grid, label="V2"))
    assert task.action == Action.VARIATION


def _remix(walk: Walk) -> None:
    grid = walk.grid()
    task = walk.task({"parent": grid.pk, "button": "V2", "remix": True})
    assert (task.status, task.params["remix"]) == (Status.MODAL, True)
    plain = walk.task({"parent": grid.pk, "button": "V2", "remix": False})
    assert plain.status != Status.MODAL and "remix" not in plain.params
    family = walk.task({"action": "IMAGINE", "prompt": "a barn", "remix": True})
    assert family.params["remix_mode"] is True


def _video(body: dict[str, Any]) -> Callable[[Walk], dict[str, Any]]:
    def probe(walk: Walk) -> dict[str, Any]:
        return dict(walk.task({"action": "VIDEO", "images": [png_data_url()], **body}).params)

    return probe


def _video_parent(walk: Walk) -> None:
    grid = walk.grid()
    task = walk.task({"action": "VIDEO", "parent": grid.pk, "index": 3})
    assert (task.action, task.parent_id, task.params["index"]) == (Action.VIDEO, grid.pk, 3)


def _video_extend(walk: Walk) -> None:
    video = run_to_completion(
        walk.task({"action": "VIDEO", "images": [png_data_url()], "batch_size": 1}).pk
    )
    task = walk.task({"action": "VIDEO", "parent": video.pk, "extend": True, "index": 1})
    assert task.params["extend"] is True and task.params["variant"] == "extend"


LATER = (timezone.now() + timedelta(days=30)).replace(microsecond=0)

#: (serializer, field) → a probe proving the field is honoured (or, where it cannot be, that
#: it is refused). A field added without a probe fails ``test_every_writable_field_is_walked``.
BODY_PROBES: dict[tuple[str, str], Callable[[Walk], None]] = {
    ("TaskCreateSerializer", "action"): lambda w: (
        None if w.task({"action": "SHORTEN", "prompt": "a fox"}).action == Action.SHORTEN else 1 / 0
    ),
    ("TaskCreateSerializer", "prompt"): lambda w: _eq(
        w.task({"action": "IMAGINE", "prompt": "a fox --ar 2:1"}).prompt_en, "a fox --ar 2:1"
    ),
    ("TaskCreateSerializer", "images"): lambda w: _eq(
        len(w.task({"action": "BLEND", "images": [png_data_url()] * 3}).inputs), 3
    ),
    ("TaskCreateSerializer", "mode"): lambda w: _eq(
        w.task({"action": "IMAGINE", "prompt": "a fox", "mode": "RELAX"}).mode, Mode.RELAX
    ),
    ("TaskCreateSerializer", "dimensions"): lambda w: _eq(
        w.task(
            {"action": "BLEND", "images": [png_data_url()] * 2, "dimensions": "PORTRAIT"}
        ).params["dimensions"],
        "PORTRAIT",
    ),
    ("TaskCreateSerializer", "parent"): _press,
    ("TaskCreateSerializer", "button"): _press,
    ("TaskCreateSerializer", "webhook_url"): lambda w: _eq(
        w.task({"action": "IMAGINE", "prompt": "a fox", "webhook_url": HOOK}).notify_hook, HOOK
    ),
    ("TaskCreateSerializer", "metadata"): lambda w: _eq(
        w.task({"action": "IMAGINE", "prompt": "a fox", "metadata": {"order": 7}}).metadata,
        {"order": 7},
    ),
    ("TaskCreateSerializer", "remix"): _remix,
    ("TaskCreateSerializer", "pool"): _own_pool,
    ("TaskCreateSerializer", "mask"): lambda w: _eq(
        w.task(
            {
                "action": "EDIT",
                "prompt": "a barn",
                "images": [png_data_url()],
                "mask": png_data_url((255, 255, 255)),
            }
        ).params["mask"][:7],
        "inputs/",
    ),
    ("TaskCreateSerializer", "motion"): lambda w: _eq(
        _video({"motion": "high"})(w)["motion"], "high"
    ),
    ("TaskCreateSerializer", "batch_size"): lambda w: _eq(
        _video({"batch_size": 2})(w)["batch_size"], 2
    ),
    ("TaskCreateSerializer", "loop"): lambda w: _eq(_video({"loop": True})(w)["loop"], True),
    ("TaskCreateSerializer", "resolution"): lambda w: _eq(
        _video({"resolution": "720p", "mode": "FAST"})(w)["resolution"], "720p"
    ),
    ("TaskCreateSerializer", "end_image"): lambda w: _eq(
        _video({"end_image": png_data_url()})(w)["end_frame"], True
    ),
    ("TaskCreateSerializer", "index"): _video_parent,
    ("TaskCreateSerializer", "extend"): _video_extend,
    ("TaskModalSerializer", "prompt"): _modal_prompt,
    ("UploadSerializer", "images"): lambda w: _eq(
        len(
            w.api.post("/api/v1/uploads", {"images": [png_data_url()] * 2}, format="json").json()[
                "urls"
            ]
        ),
        2,
    ),
    ("TaskModalSerializer", "mask"): _modal_mask,
    ("ApiKeyCreateSerializer", "name"): lambda w: _eq(w.key({"name": "named"}).name, "named"),
    ("ApiKeyCreateSerializer", "is_test"): lambda w: _eq(w.key({"is_test": True}).is_test, True),
    ("ApiKeyCreateSerializer", "midjourney"): lambda w: _eq(
        w.key({"midjourney": False}).can_midjourney, False
    ),
    ("ApiKeyCreateSerializer", "read_only"): lambda w: _eq(
        w.key({"read_only": True}).read_only, True
    ),
    ("ApiKeyCreateSerializer", "billing_read"): lambda w: _eq(
        w.key({"billing_read": False}).can_read_billing, False
    ),
    ("ApiKeyCreateSerializer", "remix"): lambda w: _eq(w.key({"remix": True}).remix, True),
    ("ApiKeyCreateSerializer", "pool"): lambda w: (
        w.premium(),
        _eq(w.key({"pool": "own_then_shared"}).pool, Pool.OWN_THEN_SHARED),
    ),
    ("ApiKeyUpdateSerializer", "pool"): lambda w: (
        w.premium(),
        _eq(w.patch_key({"pool": "own"}).pool, Pool.OWN),
    ),
    ("UpstreamAccountWriteSerializer", "name"): lambda w: _eq(w.account({}).name, "walk"),
    ("UpstreamAccountWriteSerializer", "engine"): lambda w: _eq(w.account({}).engine, "mjproxy"),
    ("UpstreamAccountWriteSerializer", "modes"): lambda w: _eq(
        w.account({"modes": ["RELAX", "FAST"]}).modes, ["RELAX", "FAST"]
    ),
    ("UpstreamAccountWriteSerializer", "concurrency"): lambda w: _eq(
        w.account({"concurrency": 7}).concurrency, 7
    ),
    ("UpstreamAccountWriteSerializer", "queue_size"): lambda w: _eq(
        w.account({"queue_size": 4}).queue_size, 4
    ),
    ("UpstreamAccountWriteSerializer", "options"): lambda w: _eq(
        dict(w.account({"options": {"base_url": "https://b.example.com"}}).options),
        {"base_url": "https://b.example.com"},
    ),
    ("UpstreamAccountWriteSerializer", "secrets"): lambda w: _eq(
        dict(w.account({"secrets": {"secret": "s3"}}).secrets), {"secret": "s3"}
    ),
    ("UpstreamAccountUpdateSerializer", "name"): lambda w: _eq(
        w.patch_account({"name": "renamed"}).name, "renamed"
    ),
    ("UpstreamAccountUpdateSerializer", "modes"): lambda w: _eq(
        w.patch_account({"modes": ["TURBO"]}).modes, ["TURBO"]
    ),
    ("UpstreamAccountUpdateSerializer", "concurrency"): lambda w: _eq(
        w.patch_account({"concurrency": 9}).concurrency, 9
    ),
    ("UpstreamAccountUpdateSerializer", "queue_size"): lambda w: _eq(
        w.patch_account({"queue_size": 0}).queue_size, 0
    ),
    ("UpstreamAccountUpdateSerializer", "options"): lambda w: _eq(
        dict(w.patch_account({"options": {"base_url": "https://c.example.com"}}).options),
        {"base_url": "https://c.example.com"},
    ),
    ("UpstreamAccountUpdateSerializer", "secrets"): lambda w: _eq(
        dict(w.patch_account({"secrets": {"secret": "after"}}).secrets), {"secret": "after"}
    ),
    ("UpstreamAccountUpdateSerializer", "is_enabled"): lambda w: _eq(
        w.patch_account({"is_enabled": False}).is_enabled, False
    ),
    ("ApiKeyCreateSerializer", "allowed_ips"): lambda w: _eq(
        w.key({"allowed_ips": ["203.0.113.0/24"]}).allowed_ips, ["203.0.113.0/24"]
    ),
    ("ApiKeyCreateSerializer", "expires_at"): lambda w: _eq(
        w.key({"expires_at": LATER.isoformat()}).expires_at, LATER
    ),
    ("ApiKeyCreateSerializer", "permissions"): lambda w: _eq(
        w.key({"permissions": {"midjourney": False, "read_only": True}}).can_midjourney, False
    ),
    ("ApiKeyUpdateSerializer", "name"): lambda w: _eq(
        w.patch_key({"name": "renamed"}).name, "renamed"
    ),
    ("ApiKeyUpdateSerializer", "midjourney"): lambda w: _eq(
        w.patch_key({"midjourney": False}).can_midjourney, False
    ),
    ("ApiKeyUpdateSerializer", "read_only"): lambda w: _eq(
        w.patch_key({"read_only": True}).read_only, True
    ),
    ("ApiKeyUpdateSerializer", "billing_read"): lambda w: _eq(
        w.patch_key({"billing_read": False}).can_read_billing, False
    ),
    ("ApiKeyUpdateSerializer", "remix"): lambda w: _eq(w.patch_key({"remix": True}).remix, True),
    ("ApiKeyUpdateSerializer", "allowed_ips"): lambda w: _eq(
        w.patch_key({"allowed_ips": ["198.51.100.7"]}).allowed_ips, ["198.51.100.7/32"]
    ),
    ("ApiKeyUpdateSerializer", "expires_at"): lambda w: _eq(
        w.patch_key({"expires_at": LATER.isoformat()}).expires_at, LATER
    ),
    ("ApiKeyUpdateSerializer", "permissions"): lambda w: _eq(
        w.patch_key({"permissions": {"billing_read": False}}).can_read_billing, False
    ),
    ("PermissionsSerializer", "midjourney"): lambda w: _eq(
        w.key({"permissions": {"midjourney": False}}).can_midjourney, False
    ),
    ("PermissionsSerializer", "read_only"): lambda w: _eq(
        w.key({"permissions": {"read_only": True}}).read_only, True
    ),
    ("PermissionsSerializer", "billing_read"): lambda w: _eq(
        w.key({"permissions": {"billing_read": False}}).can_read_billing, False
    ),
    ("EndpointWriteSerializer", "url"): lambda w: _eq(w.endpoint({}).url, HOOK),
    ("EndpointWriteSerializer", "description"): lambda w: _eq(
        w.endpoint({"description": "orders"}).description, "orders"
    ),
    ("EndpointWriteSerializer", "event_types"): lambda w: _eq(
        w.endpoint({"event_types": ["task.failed"]}).event_types, ["task.failed"]
    ),
    ("EndpointWriteSerializer", "events"): lambda w: _eq(
        w.endpoint({"events": ["task.cancelled"]}).event_types, ["task.cancelled"]
    ),
    ("EndpointWriteSerializer", "is_enabled"): lambda w: _eq(
        w.endpoint({"is_enabled": False}).is_enabled, False
    ),
    ("EndpointUpdateSerializer", "url"): lambda w: _eq(
        w.patch_endpoint({"url": "https://93.184.216.35/other"}).url,
        "https://93.184.216.35/other",
    ),
    ("EndpointUpdateSerializer", "description"): lambda w: _eq(
        w.patch_endpoint({"description": "changed"}).description, "changed"
    ),
    ("EndpointUpdateSerializer", "event_types"): lambda w: _eq(
        w.patch_endpoint({"event_types": ["task.created"]}).event_types, ["task.created"]
    ),
    ("EndpointUpdateSerializer", "events"): lambda w: _eq(
        w.patch_endpoint({"events": ["balance.low"]}).event_types, ["balance.low"]
    ),
    ("EndpointUpdateSerializer", "is_enabled"): lambda w: _eq(
        w.patch_endpoint({"is_enabled": False}).is_enabled, False
    ),
}


def _eq(got: Any, expected: Any) -> None:
    assert got == expected, (got, expected)


def _listed(walk: Walk, path: str, params: dict[str, Any]) -> list[Any]:
    response = walk.api.get(path, params)
    assert response.status_code == 200, response.json()
    return response.json()["results"]


def _task_filter(walk: Walk, params: dict[str, Any], expected: Callable[[Task], bool]) -> None:
    queued = Task.objects.create(organization=walk.organization, action=Action.IMAGINE)
    other = Task.objects.create(
        organization=walk.organization,
        action=Action.DESCRIBE,
        status=Status.SUCCESS,
        mode=Mode.RELAX,
        is_test=True,
        prompt="zebra stripes",
    )
    ids = {t["id"] for t in _listed(walk, "/api/v1/tasks", params)}
    assert ids == {t.pk for t in (queued, other) if expected(t)}, params


def _cursor(walk: Walk, path: str, make: Callable[[], Any]) -> None:
    for _ in range(3):
        make()
    first = walk.api.get(path, {"limit": 2}).json()
    assert len(first["results"]) == 2 and first["next"]
    cursor = first["next"].split("cursor=")[1].split("&")[0]
    second = walk.api.get(path, {"limit": 2, "cursor": cursor}).json()["results"]
    assert second and not {r["id"] for r in second} & {r["id"] for r in first["results"]}
    assert walk.api.get(path, {"cursor": "garbage"}).status_code == 400


QUERY_PROBES: dict[tuple[str, str], Callable[[Walk], None]] = {
    ("TaskListQuerySerializer", "status"): lambda w: _task_filter(
        w, {"status": "SUCCESS"}, lambda t: t.status == Status.SUCCESS
    ),
    ("TaskListQuerySerializer", "action"): lambda w: _task_filter(
        w, {"action": "IMAGINE"}, lambda t: t.action == Action.IMAGINE
    ),
    ("TaskListQuerySerializer", "mode"): lambda w: _task_filter(
        w, {"mode": "RELAX"}, lambda t: t.mode == Mode.RELAX
    ),
    ("TaskListQuerySerializer", "is_test"): lambda w: _task_filter(
        w, {"is_test": "true"}, lambda t: t.is_test
    ),
    ("TaskListQuerySerializer", "search"): lambda w: _task_filter(
        w, {"search": "zebra"}, lambda t: "zebra" in t.prompt
    ),
    ("TaskListQuerySerializer", "limit"): lambda w: _cursor(
        w,
        "/api/v1/tasks",
        lambda: Task.objects.create(organization=w.organization, action="IMAGINE"),
    ),
    ("TaskListQuerySerializer", "cursor"): lambda w: _cursor(
        w,
        "/api/v1/tasks",
        lambda: Task.objects.create(organization=w.organization, action="IMAGINE"),
    ),
    ("LedgerQuerySerializer", "kind"): lambda w: _ledger_kind(w),
    ("LedgerQuerySerializer", "task"): lambda w: _ledger_task(w),
    ("LedgerQuerySerializer", "limit"): lambda w: _eq(
        len(_listed(w, "/api/v1/ledger", {"limit": 1})), 1
    ),
    ("LedgerQuerySerializer", "cursor"): lambda w: _eq(
        w.api.get("/api/v1/ledger", {"cursor": "garbage"}).status_code, 400
    ),
    ("DeliveryQuerySerializer", "endpoint"): lambda w: _deliveries(w, "endpoint"),
    ("DeliveryQuerySerializer", "task"): lambda w: _deliveries(w, "task"),
    ("DeliveryQuerySerializer", "state"): lambda w: _deliveries(w, "state"),
    ("DeliveryQuerySerializer", "limit"): lambda w: _deliveries(w, "limit"),
    ("DeliveryQuerySerializer", "cursor"): lambda w: _eq(
        w.api.get("/api/v1/webhooks/deliveries", {"cursor": "garbage"}).status_code, 400
    ),
}


def _ledger_kind(walk: Walk) -> None:
    walk.task({"action": "IMAGINE", "prompt": "a fox"})
    assert {e["kind"] for e in _listed(walk, "/api/v1/ledger", {})} >= {"topup", "hold"}
    assert {e["kind"] for e in _listed(walk, "/api/v1/ledger", {"kind": "hold"})} == {"hold"}


def _ledger_task(walk: Walk) -> None:
    task = walk.task({"action": "IMAGINE", "prompt": "a fox"})
    entries = _listed(walk, "/api/v1/ledger", {"task": task.pk})
    assert entries and {e["task"] for e in entries} == {task.pk}
    assert len(_listed(walk, "/api/v1/ledger", {})) > len(entries)


def _deliveries(walk: Walk, param: str) -> None:
    first = walk.endpoint({})
    second = walk.endpoint({"url": "https://93.184.216.36/two"})
    task = Task.objects.create(organization=walk.organization, action=Action.IMAGINE)
    other = Task.objects.create(organization=walk.organization, action=Action.IMAGINE)
    with transaction.atomic():
        task_changed(task=task, event_type="task.created")
        task_changed(task=other, event_type="task.created")
    WebhookDelivery.objects.filter(endpoint=second, event__task_id=other.pk).update(state="failed")
    path = "/api/v1/webhooks/deliveries"
    if param == "endpoint":
        assert {d["endpoint"] for d in _listed(walk, path, {"endpoint": first.pk})} == {first.pk}
    elif param == "task":
        assert {d["task"] for d in _listed(walk, path, {"task": task.pk})} == {task.pk}
    elif param == "state":
        found = _listed(walk, path, {"state": "failed"})
        assert [(d["endpoint"], d["task"]) for d in found] == [(second.pk, other.pk)]
    else:
        assert len(_listed(walk, path, {"limit": 1})) == 1


def test_every_writable_field_is_walked():
    """A field added to a request serializer without a probe here fails this test."""
    found = request_serializers()
    assert set(found) >= OUTPUT_ONLY | QUERY
    expected = {
        (name, field)
        for name, serializer in found.items()
        if name not in OUTPUT_ONLY
        for field in writable_fields(serializer)
    }
    assert expected == set(BODY_PROBES) | set(QUERY_PROBES)


@pytest.mark.parametrize(("serializer", "field"), sorted({**BODY_PROBES, **QUERY_PROBES}))
def test_each_field_is_honoured(api, funded, sandbox, serializer, field):
    ({**BODY_PROBES, **QUERY_PROBES})[(serializer, field)](Walk(api, funded))


@pytest.mark.parametrize(
    ("path", "method", "body"),
    [
        ("/api/v1/tasks", "post", {"action": "IMAGINE", "prompt": "a fox"}),
        ("/api/v1/keys", "post", {"name": "k"}),
        ("/api/v1/webhooks/endpoints", "post", {"url": HOOK}),
    ],
)
def test_an_unknown_field_is_refused_by_name_on_every_body(api, funded, path, method, body):
    before = (snapshot(funded), ApiKey.objects.count(), WebhookEndpoint.objects.count())
    response = getattr(api, method)(path, {**body, "colour": "blue"}, format="json")
    assert response.status_code == 400, response.json()
    details = response.json()["error"]["details"]
    assert list(details) == ["colour"]
    assert details["colour"][0].startswith("Unknown field 'colour'; this request accepts: ")
    assert (snapshot(funded), ApiKey.objects.count(), WebhookEndpoint.objects.count()) == before


def test_unknown_fields_are_refused_on_updates_and_the_modal(api, funded, sandbox):
    walk = Walk(api, funded)
    key = walk.key({})
    refused(api.patch(f"/api/v1/keys/{key.pk}", {"nmae": "x"}, format="json"), "nmae")
    endpoint = walk.endpoint({})
    refused(
        api.patch(f"/api/v1/webhooks/endpoints/{endpoint.pk}", {"evnts": []}, format="json"),
        "evnts",
    )
    modal = walk.modal("CUSTOM_ZOOM")
    refused(
        api.post(f"/api/v1/tasks/{modal.pk}/modal", {"maskBase64": "x"}, format="json"),
        "maskBase64",
    )
    assert Task.objects.get(pk=modal.pk).status == Status.MODAL
