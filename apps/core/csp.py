"""The Content-Security-Policy of the HTML pages: the dashboard, the account pages, the admin.

Pages take script and style from our static files only. Templates carry no inline ``<script>``,
no event-handler or ``style`` attributes and no ``javascript:`` URLs (tests/dashboard/test_csp.py
scans every page), and htmx runs without eval, without script tags from responses and without
its inline indicator style (the ``htmx-config`` meta tag). So markup that slips past escaping
cannot run script, and no page can be framed.

The policy is ``settings.CONTENT_SECURITY_POLICY`` (directive -> sources). The admin has
``CONTENT_SECURITY_POLICY_ADMIN``: Django's change list writes a ``<style>`` block and the
operator pages draw meters with a ``style`` attribute, so style may be inline there; script may
not. Result images and videos come from where the storage serves them, which the settings do
not say directly: the origins of ``PUBLIC_BASE_URL`` (the admin links result files there) and of
the storage's own URLs (S3, a CDN) join ``img-src`` and ``media-src``. They are read when a page
is answered, like the policy, so a changed setting counts at once.

JSON answers (the APIs) carry no policy, a response that set its own keeps it, and the views
named in ``CONTENT_SECURITY_POLICY_EXEMPT_VIEWS`` carry none (the API docs: drf-spectacular's
Swagger UI page starts itself with an inline script). Django's debug error pages (``DEBUG``
only) are built with inline style and script and are left alone too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from urllib.parse import urlsplit

from django.conf import settings
from django.core.files.storage import default_storage
from django.http import HttpRequest, HttpResponse

HEADER = "Content-Security-Policy"
#: Directives that also allow the origins result files are served from.
RESULT_DIRECTIVES = ("img-src", "media-src")
#: A name the storage builds a URL for, to learn its origin (nothing is read or written).
_PROBE_NAME = "results/csp-probe.png"
#: Statuses of Django's technical error pages under DEBUG (a 400 is a technical 500 page).
_DEBUG_PAGE_STATUSES = frozenset({400, 404, 500})


def _source_of(url: str) -> str | None:
    """The CSP source expression for the origin of ``url``; None for a relative URL."""
    parts = urlsplit(url)
    if not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme else parts.netloc


def result_sources() -> list[str]:
    """Origins result images and videos are served from, other than the page's own."""
    found = (
        _source_of(settings.PUBLIC_BASE_URL),
        _source_of(default_storage.url(_PROBE_NAME)),
    )
    return [source for source in dict.fromkeys(found) if source]


def policy_for(request: HttpRequest) -> dict[str, list[str]]:
    """The directives of ``request``'s page: the admin's or everyone else's, with the origins
    of result files added where images and videos are allowed."""
    admin = request.path_info.startswith(f"/{settings.ADMIN_URL}")
    base: Mapping[str, Sequence[str]] = (
        settings.CONTENT_SECURITY_POLICY_ADMIN if admin else settings.CONTENT_SECURITY_POLICY
    )
    policy = {directive: list(sources) for directive, sources in base.items()}
    extra = result_sources()
    for directive in RESULT_DIRECTIVES:
        if directive in policy:
            policy[directive] = list(dict.fromkeys([*policy[directive], *extra]))
    return policy


def header_value(policy: Mapping[str, Sequence[str]]) -> str:
    return "; ".join(" ".join([directive, *sources]) for directive, sources in policy.items())


def _wants_policy(request: HttpRequest, response: HttpResponse) -> bool:
    if HEADER in response or not response.get("Content-Type", "").startswith("text/html"):
        return False
    if settings.DEBUG and response.status_code in _DEBUG_PAGE_STATUSES:
        return False
    match = getattr(request, "resolver_match", None)
    return not (match and match.view_name in settings.CONTENT_SECURITY_POLICY_EXEMPT_VIEWS)


class ContentSecurityPolicyMiddleware:
    """Sets ``Content-Security-Policy`` on HTML responses (see the module docstring)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if _wants_policy(request, response):
            response[HEADER] = header_value(policy_for(request))
        return response
