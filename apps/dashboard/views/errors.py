"""How service errors look in the dashboard."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from apps.core.errors import NotFound, PermissionDenied, ServiceError


def is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def service_error_response(request: HttpRequest, error: ServiceError) -> HttpResponse:
    """404 for anything missing or foreign (indistinguishable), 403 for a role, else 400."""
    if isinstance(error, NotFound):
        status, template = 404, "dashboard/errors/404.html"
    elif isinstance(error, PermissionDenied):
        status, template = 403, "dashboard/errors/403.html"
    else:
        status, template = error.http_status, "dashboard/errors/400.html"
    if is_htmx(request):
        response = render(
            request, "dashboard/partials/error.html", {"message": error.message}, status=status
        )
        # Show the message where the user is looking, whatever the element targeted.
        response["HX-Retarget"] = "#toasts"
        response["HX-Reswap"] = "beforeend"
        return response
    return render(request, template, {"message": error.message}, status=status)
