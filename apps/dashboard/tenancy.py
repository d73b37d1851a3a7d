"""Which organization a dashboard request acts for.

The current organization's id lives in the session, but the session is only a preference: on
every request it is checked against the user's memberships again (``membership_get``), so a
membership removed a second ago stops working at once and a forged id answers 404 like any
missing object. Views get ``request.organization`` and ``request.membership`` from
``dashboard_view`` and never read the session themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect

from apps.accounts.models import Membership, Organization
from apps.accounts.roles import Capability, role_allows
from apps.accounts.selectors import membership_get, organization_list_for_user
from apps.core.errors import NotFound, PermissionDenied

from .views.errors import service_error_response

SESSION_KEY = "dashboard_organization_id"
_CACHE_ATTR = "_dashboard_membership"

View = TypeVar("View", bound=Callable[..., HttpResponse])


def current_membership(request: HttpRequest) -> Membership | None:
    """The membership the request acts under, or None for a user who belongs nowhere."""
    if hasattr(request, _CACHE_ATTR):
        return cast(Membership | None, getattr(request, _CACHE_ATTR))
    membership: Membership | None = None
    user = request.user
    if user.is_authenticated:
        chosen = request.session.get(SESSION_KEY)
        if chosen is not None:
            try:
                membership = membership_get(user=user, organization_id=chosen)
            except NotFound:
                membership = None
        if membership is None:
            first = organization_list_for_user(user=user).first()
            if first is not None:
                membership = membership_get(user=user, organization_id=first.pk)
            if membership is not None:
                request.session[SESSION_KEY] = membership.organization_id
            else:
                request.session.pop(SESSION_KEY, None)
    setattr(request, _CACHE_ATTR, membership)
    return membership


def organization_switch(request: HttpRequest, *, organization_id: object) -> Membership:
    """Make another of the user's organizations current. A foreign id raises NotFound."""
    membership = membership_get(user=request.user, organization_id=organization_id)  # type: ignore[arg-type]
    request.session[SESSION_KEY] = membership.organization_id
    setattr(request, _CACHE_ATTR, membership)
    return membership


def dashboard_view(
    capability: Capability = Capability.VIEW_TASKS,
) -> Callable[[View], View]:
    """Log-in, a current organization and a role that allows ``capability``, else 302/403.

    Sets ``request.organization`` and ``request.membership``. NotFound and PermissionDenied
    escaping the view become the 404 and 403 pages, so views can let selectors raise.
    """

    def decorator(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return _navigate(request, redirect_to_login(_page_path(request)))
            membership = current_membership(request)
            if membership is None:
                return _navigate(request, redirect("dashboard:organization-new"))
            request.membership = membership  # type: ignore[attr-defined]
            request.organization = membership.organization  # type: ignore[attr-defined]
            try:
                if not role_allows(membership.role, capability):
                    raise PermissionDenied(
                        f"Your role ({membership.get_role_display()}) does not allow this page."
                    )
                return view(request, *args, **kwargs)
            except (NotFound, PermissionDenied) as exc:
                return service_error_response(request, exc)

        return cast(View, wrapped)

    return decorator


def _page_path(request: HttpRequest) -> str:
    """The page the user is on: for an htmx request (a polling card, say), the page that
    made it, so signing in again returns there rather than to a fragment URL."""
    if request.headers.get("HX-Request") == "true":
        current = urlsplit(request.headers.get("HX-Current-URL", ""))
        if current.netloc == request.get_host() and current.path.startswith("/"):
            return current.path + (f"?{current.query}" if current.query else "")
        return "/"
    return request.get_full_path()


def _navigate(request: HttpRequest, response: HttpResponseRedirect) -> HttpResponse:
    """A redirect, or for htmx a full-page navigation: htmx would follow a 302 itself and
    swap the sign-in page into whatever element asked (e.g. a task card polling after the
    session expired)."""
    if request.headers.get("HX-Request") != "true":
        return response
    navigate = HttpResponse(status=200)
    navigate["HX-Redirect"] = response["Location"]
    return navigate


def organization_of(request: HttpRequest) -> Organization:
    return cast(Organization, request.organization)  # type: ignore[attr-defined]


def membership_of(request: HttpRequest) -> Membership:
    return cast(Membership, request.membership)  # type: ignore[attr-defined]


def can(request: HttpRequest, capability: Capability) -> bool:
    membership = current_membership(request)
    return membership is not None and role_allows(membership.role, capability)
