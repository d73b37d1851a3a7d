"""Liveness and readiness probes (SPEC §11)."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect, JsonResponse
from django.templatetags.static import static
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from config.celery import app

logger = logging.getLogger(__name__)

#: Seconds the broker check may take per step (connect, then PING): a dead broker answers 503
#: well within a load balancer's probe timeout.
BROKER_CHECK_TIMEOUT = 1.0


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _check_broker() -> None:
    if str(app.conf.broker_url).startswith("filesystem://"):
        # The filesystem transport "connects" to anything; what matters is that the folders the
        # web process writes and the worker reads are there and writable.
        options = app.conf.broker_transport_options or {}
        for key in ("data_folder_in", "data_folder_out", "control_folder"):
            folder = Path(options[key])
            if not folder.is_dir():
                raise FileNotFoundError(f"broker folder {folder} is missing")
            if not os.access(folder, os.W_OK):
                raise PermissionError(f"broker folder {folder} is not writable")
        return
    if str(app.conf.broker_url).startswith("sqla+"):
        # The embedded SQLite broker: a local file, no sockets to time out.
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=0)
            # Opening a channel opens the database file and creates kombu's tables.
            conn.default_channel.close()
        return
    # A probe must answer quickly even when the broker host drops packets: without socket
    # timeouts one connection attempt waits for the kernel (about two minutes), and kombu's
    # retries would add their back-off on top. One bounded attempt, no retry.
    with app.connection_for_write(
        connect_timeout=BROKER_CHECK_TIMEOUT,
        transport_options={
            "socket_connect_timeout": BROKER_CHECK_TIMEOUT,
            "socket_timeout": BROKER_CHECK_TIMEOUT,
        },
    ) as conn:
        conn.ensure_connection(max_retries=0, timeout=BROKER_CHECK_TIMEOUT)


def _check_storage() -> None:
    name = default_storage.save(f"healthcheck/{uuid.uuid4().hex}.txt", ContentFile(b"ok"))
    default_storage.delete(name)


CHECKS = {"database": _check_database, "broker": _check_broker, "storage": _check_storage}


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    results: dict[str, str] = {}
    ok = True
    for name, check in CHECKS.items():
        try:
            check()
            results[name] = "ok"
        except Exception as exc:  # a probe reports every failure instead of raising
            logger.warning("readiness check failed", extra={"check": name, "error": str(exc)})
            results[name] = f"error: {exc.__class__.__name__}"
            ok = False
    return JsonResponse(
        {"status": "ok" if ok else "unavailable", "checks": results}, status=200 if ok else 503
    )


def favicon(request: HttpRequest) -> HttpResponse:
    """``/favicon.ico`` → the SVG icon. Resolved per request, not when the URLconf is imported:
    with hashed static files the name is only known once ``collectstatic`` has run, and
    ``manage.py check`` and migrations import the URLconf before that."""
    return HttpResponsePermanentRedirect(static("favicon.svg"))
