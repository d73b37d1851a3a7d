"""Broken object level authorization matrix (SPEC §1: a foreign id answers like a missing one).

Every key-authenticated route is found by walking the URL resolver. Routes with an id in the
path are tested automatically with another tenant's object and with a missing id, for every
HTTP method the view implements: both must answer the same status and the same bytes, and the
database must not change. Routes that take an id in the body or query are listed below; a new
route that is in neither group fails ``test_every_api_route_is_classified`` until someone
decides which it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.apps import apps
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from apps.api_keys.models import ApiKey
from apps.billing.models import Balance, LedgerEntry
from apps.core.api import OrganizationAPIView
from apps.engines.models import UpstreamAccount
from apps.tasks.buttons import buttons_for
from apps.tasks.enums import Action, Status
from apps.tasks.models import Task
from tests.tasks.helpers import png_data_url

pytestmark = pytest.mark.django_db

MISSING = {
    "task_id": "1700000000000000000",
    "key_id": "999999999",
    "endpoint_id": "999999999",
    "delivery_id": "999999999",
    "entry_id": "999999999",
    "account_id": "999999999",
}
_PREFIXED = re.compile(r"^mj-(fast|relax|turbo)/")


def _walk(patterns: list[Any], prefix: str = "") -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for entry in patterns:
        if isinstance(entry, URLResolver):
            found += _walk(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            found.append((prefix + str(entry.pattern), entry))
    return found


def api_routes() -> list[tuple[str, type[OrganizationAPIView]]]:
    routes = []
    for route, pattern in _walk(get_resolver().url_patterns):
        view = getattr(pattern.callback, "view_class", None) or getattr(
            pattern.callback, "cls", None
        )
        if isinstance(view, type) and issubclass(view, OrganizationAPIView):
            routes.append((route, view))
    return routes


def _methods(view: type) -> list[str]:
    return [m for m in ("get", "post", "put", "patch", "delete") if hasattr(view, m)]


def _params(route: str) -> list[str]:
    return re.findall(r"<(?:\w+:)?(\w+)>", route)


#: Routes whose ids arrive in the body or query: (method, path, body builder).
BODY_ID_ROUTES: list[tuple[str, str, Callable[[dict[str, Any]], Any]]] = [
    ("post", "mj/submit/action", lambda f: {"taskId": f["task"], "customId": f["custom_id"]}),
    (
        "post",
        "mj/submit/modal",
        lambda f: {"taskId": f["modal"], "prompt": "x", "maskBase64": png_data_url()},
    ),
    ("post", "mj/submit/change", lambda f: {"taskId": f["task"], "action": "UPSCALE", "index": 1}),
    ("post", "mj/submit/simple-change", lambda f: {"content": f"{f['task']} U1"}),
    ("post", "mj/task/list-by-condition", lambda f: {"ids": [f["task"], f["modal"]]}),
    ("post", "midjourney/v1/action", lambda f: {"jobId": f["task"], "action": "upsample1"}),
    (
        "post",
        "midjourney/v1/inpaint",
        lambda f: {"jobId": f["task"], "mask": png_data_url(), "prompt": "x"},
    ),
    ("post", "midjourney/v1/seed", lambda f: {"jobId": f["task"]}),
    ("post", "midjourney/v1/fetch", lambda f: {"jobId": f["task"]}),
    ("get", "midjourney/v1/fetch", lambda f: {"jobId": f["task"]}),
    ("post", "api/v1/tasks", lambda f: {"parent": f["task"], "button": "U1"}),
    ("post", "mj/submit/video", lambda f: {"taskId": f["task"], "index": 1}),
    ("post", "midjourney/v1/video/extend", lambda f: {"jobId": f["task"], "index": 0}),
    ("post", "midjourney/video/extend", lambda f: {"jobId": f["task"], "index": 0}),
    ("get", "api/v1/ledger", lambda f: {"task": f["task"]}),
]
#: Routes that take no object id at all.
NO_ID_ROUTES = {
    "mj/submit/imagine",
    "mj/submit/describe",
    "mj/submit/blend",
    "mj/submit/shorten",
    "mj/insight-face/swap",
    "mj/submit/upload-discord-images",
    "api/v1/uploads",
    "mj/submit/edits",
    "mj/submit/retexture",
    "mj/task/list",
    "mj/task/queue",
    "midjourney/v1/imagine",
    "midjourney/v1/blend",
    "midjourney/v1/describe",
    "midjourney/v1/video/submit",
    "midjourney/video/submit",
    "api/v1/balance",
    "api/v1/prices",
    "api/v1/plan",
    "api/v1/keys",
    "api/v1/webhooks/endpoints",
    "api/v1/webhooks/secret",
    "api/v1/webhooks/secret/rotate",
    "api/v1/webhooks/deliveries",
    "api/v1/upstream-accounts",
}


def test_every_api_route_is_classified():
    routes = {_PREFIXED.sub("", route) for route, _ in api_routes()}
    body_routes = {route for _, route, _ in BODY_ID_ROUTES}
    unclassified = sorted(
        r for r in routes if not _params(r) and r not in body_routes and r not in NO_ID_ROUTES
    )
    assert unclassified == [], "add these routes to BODY_ID_ROUTES or NO_ID_ROUTES"
    params = {p for r in routes for p in _params(r)}
    assert params <= set(MISSING), f"add a foreign-object factory for {params - set(MISSING)}"
    # The walk really finds the routes: the mj-proxy ones under all four prefixes, and more.
    path_routes = [r for r, _ in api_routes() if _params(r)]
    assert len([r for r in path_routes if r.endswith("/fetch")]) == 4
    assert len(path_routes) >= 4 * 3 + 4


# --- fixtures: another tenant's objects ------------------------------------------------------


@pytest.fixture
def foreign(other_organization, outsider_key, fund) -> dict[str, Any]:
    fund(other_organization, 50_000)
    return objects_of(other_organization, outsider_key.api_key)


def objects_of(organization, api_key) -> dict[str, Any]:
    """A funded organization's objects, by the path parameter (or body field) that names them."""
    job_hash = "a" * 32
    buttons = [b.as_dict() for b in buttons_for(Action.IMAGINE, job_hash=job_hash, is_grid=True)]
    succeeded = Task.objects.create(
        organization=organization,
        action=Action.IMAGINE,
        status=Status.SUCCESS,
        prompt="theirs",
        prompt_en="theirs",
        buttons=buttons,
        seed=42,
    )
    modal = Task.objects.create(
        organization=organization,
        action=Action.VARIATION,
        status=Status.MODAL,
        params={"variant": "inpaint"},
        prompt_en="theirs",
    )
    queued = Task.objects.create(
        organization=organization, action=Action.IMAGINE, status=Status.NOT_START
    )
    objects: dict[str, Any] = {
        "task": succeeded.pk,
        "modal": modal.pk,
        "custom_id": buttons[0]["custom_id"],
        "task_id": [succeeded.pk, modal.pk, queued.pk],
        "key_id": [api_key.pk],
        "entry_id": [LedgerEntry.objects.filter(organization=organization).first().pk],
        # Their own upstream account, and one of the shared pool: neither is the caller's.
        "account_id": [
            UpstreamAccount.objects.create(
                name=f"theirs-{organization.pk}", engine="sandbox", owner=organization
            ).pk,
            UpstreamAccount.objects.get_or_create(name="shared-bola", engine="sandbox")[0].pk,
        ],
    }
    if apps.is_installed("apps.webhooks"):
        from apps.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent

        endpoint = WebhookEndpoint.objects.create(
            organization=organization, url="https://hooks.example/theirs"
        )
        event = WebhookEvent.objects.create(
            msg_id=f"msg_bola_{organization.pk}",
            organization=organization,
            event_type="task.updated",
            body="{}",
            endpoint=endpoint,
            target_key=f"endpoint:{endpoint.pk}",
            state="failed",
        )
        delivery = WebhookDelivery.objects.create(
            organization=organization,
            event=event,
            endpoint=endpoint,
            state="failed",
            next_attempt_at=timezone.now(),
        )
        objects["endpoint_id"] = [endpoint.pk]
        objects["delivery_id"] = [delivery.pk]
    return objects


def database_state() -> dict[str, list[dict[str, Any]]]:
    models: list[Any] = [Task, ApiKey, Balance, LedgerEntry]
    if apps.is_installed("apps.webhooks"):
        from apps.webhooks import models as webhook_models

        models += [
            getattr(webhook_models, name)
            for name in ("WebhookEndpoint", "WebhookEvent", "WebhookDelivery", "WebhookSecret")
            if hasattr(webhook_models, name)
        ]
    return {
        model.__name__: [
            {k: v for k, v in row.items() if k not in ("last_used_at", "last_used_ip")}
            for row in model.objects.order_by("pk").values()
        ]
        for model in models
    }


def _call(client, method: str, path: str, body: Any) -> Any:
    if method == "get":
        return client.get(path, body or {})
    return getattr(client, method)(path, body if body is not None else {}, format="json")


def _path_cases() -> list[tuple[str, str]]:
    return [
        (route, method)
        for route, view in api_routes()
        if _params(route)
        for method in _methods(view)
    ]


@pytest.mark.parametrize(("route", "method"), _path_cases())
def test_foreign_path_id_answers_like_a_missing_one(
    route, method, foreign, funded, live_key, client_for
):
    client = client_for(live_key)
    client.get("/api/v1/balance")  # first use stamps last_used_at; keep it out of the diff
    (param,) = _params(route)
    before = database_state()
    # Writes carry a body; a GET takes none, nor does a write that reads none (an unknown query
    # parameter or body field is refused before the id is looked up, which would hide what this
    # test checks).
    view = dict(api_routes())[route]
    body = (
        None
        if method == "get" or view.takes_no_body
        else {"name": "pwned", "prompt": "pwned", "url": "https://evil.example/"}
    )
    for foreign_id in foreign[param]:
        foreign_answer = _call(
            client, method, "/" + route.replace(f"<str:{param}>", str(foreign_id)), body
        )
        missing_answer = _call(
            client, method, "/" + route.replace(f"<str:{param}>", MISSING[param]), body
        )
        assert foreign_answer.status_code == missing_answer.status_code, (route, method)
        assert foreign_answer.status_code in (404, 403), (route, method, foreign_answer.status_code)
        assert foreign_answer.content == missing_answer.content, (route, method)
    assert database_state() == before


@pytest.mark.parametrize(("method", "route", "build"), BODY_ID_ROUTES)
def test_foreign_body_id_answers_like_a_missing_one(
    method, route, build, foreign, funded, live_key, client_for
):
    client = client_for(live_key)
    client.get("/api/v1/balance")
    missing = {
        "task": MISSING["task_id"],
        "modal": "1700000000000000001",
        "custom_id": foreign["custom_id"],
    }
    before = database_state()
    foreign_answer = _call(client, method, "/" + route, build(foreign))
    missing_answer = _call(client, method, "/" + route, build(missing))
    assert foreign_answer.status_code == missing_answer.status_code
    assert foreign_answer.content == missing_answer.content
    assert database_state() == before
