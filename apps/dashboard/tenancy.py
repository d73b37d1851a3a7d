"""Which organization a dashboard request acts for.

The current organization's id lives in the session, but the session is only a preference: on
every request it is checked against the user's memberships again (``membership_get``), so a
membership removed a second ago stops working at once and a forged id answers 404 like any
missing object. Views get ``request.organization`` and ``request.membership`` from
``dashboard_view`` and never read the session themselves.

Because the session is shared by every tab, a page does not know that another tab has since
switched organization. So every page says which organization it was rendered for — the hidden
``page_organization`` field of each POST form (``{% page_organization %}``, next to the CSRF
token) and the ``X-Page-Organization`` header htmx sends (``hx-headers`` on ``<body>``) — and
``dashboard_view`` refuses any write whose page was for another organization (409), or that does
not say (400), before the view runs. Only the views that do not act for the current organization
go without: switching organization and creating one (``views/orgs.py``), accepting an
invitation (it names its own organization), and allauth's account pages and sign-out.
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

from .views.errors import service_error_response, stale_page_response

SESSION_KEY = "dashboard_organization_id"
_CACHE_ATTR = "_dashboard_membership"
#: The form field and the header that say which organization a page was rendered for.
PAGE_ORGANIZATION_FIELD = "page_organization"
PAGE_ORGANIZATION_HEADER = "X-Page-Organization"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

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
    escaping the view become the 404 and 403 pages, so views can let selectors raise. A write
    (any method but GET, HEAD, OPTIONS, TRACE) whose page was for another organization than
    the current one, or that does not say, is refused before the view runs
    (``stale_page_refusal``).
    """

    def decorator(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return _navigate(request, redirect_to_login(_page_path(request)))
            membership = current_membership(request)
            if membership is None:
                return _navigate(request, redirect("dashboard:organization-new"))
            refusal = stale_page_refusal(request, membership)
            if refusal is not None:
                return refusal
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


def stale_page_refusal(request: HttpRequest, membership: Membership) -> HttpResponse | None:
    """None if the request reads, or writes for the current organization; else the refusal.

    Both the form field and the header are checked when both come (an htmx form sends
    both), and every one given must name the current organization: a request that does
    not say is refused too, so a form that forgot the field fails closed.
    """
    if request.method in _SAFE_METHODS:
        return None
    claimed = [
        value.strip()
        for value in (
            request.POST.get(PAGE_ORGANIZATION_FIELD),
            request.headers.get(PAGE_ORGANIZATION_HEADER),
        )
        if value is not None and value.strip()
    ]
    current = membership.organization
    if not claimed:
        return stale_page_response(
            request,
            message=(
                "This page did not say which organization it was for, so nothing was changed. "
                "Reload the page to continue."
            ),
            status=400,
            current=current,
        )
    others = [claim for claim in map(_as_id, claimed) if claim != current.pk]
    if not others:
        return None
    page: Organization | None = None
    if others[0] is not None:
        try:
            # Named only if the user still belongs to it: an id typed into a form must not
            # reveal another tenant's name.
            page = membership_get(user=request.user, organization_id=others[0]).organization  # type: ignore[arg-type]
        except NotFound:
            page = None
    if page is not None:
        message = (
            f"This page was for organization {page.name}, but you have since switched to "
            f"{current.name} in another tab. Reload the page to continue."
        )
    else:
        message = (
            f"This page was for another organization; you are now working in {current.name}. "
            "Reload the page to continue."
        )
    return stale_page_response(request, message=message, status=409, current=current, page=page)


def _as_id(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


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
