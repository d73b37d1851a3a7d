"""The baseline of bench/submit.py: a bare Django view that does one INSERT and answers JSON.

Served by gunicorn exactly like mjgate (same workers, same PostgreSQL), so the ratio
"mjgate submits per second / bare inserts per second" says what our submit path costs on top of
the unavoidable (HTTP, Django's request cycle, one round trip to PostgreSQL).
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from typing import Any

import dj_database_url
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.urls import path

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-bare-not-secret",  # noqa: S106
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        DATABASES={
            "default": {**dj_database_url.parse(os.environ["DATABASE_URL"]), "CONN_MAX_AGE": 60}
        },
        INSTALLED_APPS=[],
        MIDDLEWARE=[],
        USE_TZ=True,
    )


def insert(request: HttpRequest) -> JsonResponse:
    payload = json.loads(request.body or b"{}")
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO bench_bare (prompt) VALUES (%s) RETURNING id", [payload.get("prompt", "")]
        )
        (row_id,) = cursor.fetchone()
    return JsonResponse({"code": 1, "result": str(row_id)})


def select(request: HttpRequest, task_id: str) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, status, prompt, progress FROM tasks_task WHERE id = %s", [task_id]
        )
        row = cursor.fetchone()
    if row is None:
        return JsonResponse({"error": "not found"}, status=404)
    return JsonResponse(dict(zip(("id", "status", "prompt", "progress"), row, strict=True)))


#: The acceptance statement of a submit made by mjgate in this database (``bench/submit.py``
#: makes one before the servers start): its row and hold, read once per process.
_TEMPLATE: dict[str, Any] = {}

_ACCEPT = "SELECT outcome, seq FROM tasks_task_accept(%s::jsonb, true, true, %s, %s, 'hold', 0, %s)"


def _template() -> dict[str, Any]:
    if not _TEMPLATE:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT to_jsonb(t) - 'tenant_seq', -e.delta_available FROM tasks_task t"
                " JOIN billing_ledgerentry e ON e.task_id = t.id AND e.kind = 'hold'"
                " ORDER BY t.created_at LIMIT 1"
            )
            row, amount = cursor.fetchone()
        _TEMPLATE.update(row=json.loads(row) if isinstance(row, str) else row, amount=amount)
    return _TEMPLATE


def accept(request: HttpRequest) -> JsonResponse:
    """The floor of a submit: the body read, then mjgate's own acceptance statement
    (``tasks_task_accept``: the organization's lock and tier limit, the queue number, the
    task's INSERT and the ledger's hold) for a copy of a real task's row with a new id and
    prompt. No authentication, no rate limit, no validation, no dispatch kick: whatever a
    submit does besides this statement costs more."""
    payload = json.loads(request.body or b"{}")
    template = _template()
    task_id = uuid.uuid4().hex
    now = datetime.now(UTC)
    row = {**template["row"], "id": task_id, "prompt": payload.get("prompt", "")}
    row["created_at"] = row["updated_at"] = now.isoformat()
    with connection.cursor() as cursor:
        # Prepared, as mjgate sends it (apps/core/db.py): planned once per connection.
        cursor.cursor.execute(
            _ACCEPT,
            [json.dumps(row), template["amount"], f"task:{task_id}:hold", now],
            prepare=True,
        )
        outcome, seq = cursor.fetchone()
    if outcome != "accepted":
        return JsonResponse({"code": 24, "description": outcome}, status=400)
    return JsonResponse({"code": 1, "result": task_id, "properties": {"seq": seq}})


def insert_task(request: HttpRequest) -> JsonResponse:
    """Less than the floor: only the task's row INSERT (its columns, indexes and trigger), with
    no lock, no tier limit, no queue number and no hold."""
    payload = json.loads(request.body or b"{}")
    task_id = uuid.uuid4().hex
    now = datetime.now(UTC).isoformat()
    row = {**_template()["row"], "id": task_id, "prompt": payload.get("prompt", "")}
    row["created_at"] = row["updated_at"] = now
    with connection.cursor() as cursor:
        cursor.cursor.execute(
            "INSERT INTO tasks_task SELECT * FROM jsonb_populate_record(NULL::tasks_task, %s)",
            [json.dumps(row)],
            prepare=True,
        )
    return JsonResponse({"code": 1, "result": task_id, "properties": {}})


urlpatterns = [
    path("mj/submit/imagine", insert),
    path("floor/accept", accept),
    path("floor/insert", insert_task),
    path("task/<str:task_id>", select),
]
application = get_wsgi_application()
