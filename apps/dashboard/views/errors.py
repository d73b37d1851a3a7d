"""How service errors look in the dashboard."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from apps.accounts.models import Organization
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


def section_root(path: str) -> str:
    """The root of the page's section (/tasks/123/?x=1 → /tasks/): what to open after the
    organization changed, as a page of one of the other organization's objects would 404."""
    section = path.split("?", 1)[0].strip("/").split("/", 1)[0]
    return f"/{section}/" if section else "/"


def _referring_page(request: HttpRequest) -> str:
    """The page a write came from (htmx says; a plain form's browser sends the Referer), if
    it is one of ours, else the overview."""
    came_from = request.headers.get("HX-Current-URL" if is_htmx(request) else "Referer", "")
    parts = urlsplit(came_from)
    if parts.netloc == request.get_host() and parts.path.startswith("/"):
        return parts.path
    return "/"


def stale_page_response(
    request: HttpRequest,
    *,
    message: str,
    status: int,
    current: Organization,
    page: Organization | None = None,
) -> HttpResponse:
    """A write refused because its page was for another organization than the current one
    (409; ``page`` if the user still belongs to it) or did not say (400). Nothing was done:
    the page offers to go on in the current organization, or to switch back to the page's.
    For htmx a toast that stays (the request did nothing the user can see otherwise)."""
    context = {
        "message": message,
        "current_organization": current,
        "page_organization": page,
        "back": section_root(_referring_page(request)),
    }
    if is_htmx(request):
        response = render(request, "dashboard/partials/stale_page.html", context, status=status)
        response["HX-Retarget"] = "#toasts"
        response["HX-Reswap"] = "beforeend"
        return response
    return render(request, "dashboard/errors/stale_page.html", context, status=status)
