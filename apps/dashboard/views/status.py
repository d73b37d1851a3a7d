"""The public status page: each mode's state, queue and median wait. No login, no tenant data."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from apps.monitoring.selectors import PUBLIC_STATUS_SECONDS, public_status

LABELS = {"operational": "Operational", "degraded": "Degraded", "down": "Down"}


def _wait(seconds: float | None) -> str:
    if seconds is None:
        return "no starts in the window"
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


@require_GET
def status(request: HttpRequest) -> HttpResponse:
    body = public_status(now=timezone.now())
    modes = [
        {**mode, "label": LABELS[mode["status"]], "wait": _wait(mode["median_wait_seconds"])}
        for mode in body["modes"]  # type: ignore[attr-defined]
    ]
    response = render(
        request,
        "dashboard/status.html",
        {
            "overall": body["status"],
            "overall_label": LABELS[str(body["status"])],
            "modes": modes,
            "updated_at": body["updated_at"],
            "window_minutes": body["window_minutes"],
            "refresh": PUBLIC_STATUS_SECONDS,
        },
    )
    response["Cache-Control"] = f"public, max-age={PUBLIC_STATUS_SECONDS}"
    return response
