"""The baseline of bench/submit.py: a bare Django view that does one INSERT and answers JSON.

Served by gunicorn exactly like mjgate (same workers, same PostgreSQL), so the ratio
"mjgate submits per second / bare inserts per second" says what our submit path costs on top of
the unavoidable (HTTP, Django's request cycle, one round trip to PostgreSQL).
"""

from __future__ import annotations

import json
import os

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


urlpatterns = [path("mj/submit/imagine", insert), path("task/<str:task_id>", select)]
application = get_wsgi_application()
