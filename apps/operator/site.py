"""The operator admin site: allauth login, MFA for staff, branding, the stats page.

Django's own admin login form is never shown: logging in (and MFA) is allauth's job, so there
is one login page, one password policy and one place where MFA is enforced. A logged-in user
who is not staff gets 403 rather than a login form, so no admin page ever renders for them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.http import url_has_allowed_host_and_scheme

#: Authenticator types that are a second factor on their own (recovery codes are a fallback).
MFA_TYPES = ("totp", "webauthn")


def staff_lacks_mfa(request: HttpRequest) -> bool:
    """True if MFA is required for the admin and this staff user has not turned it on."""
    if not getattr(settings, "ADMIN_REQUIRE_MFA", True):
        return False
    # Lazy: Django builds the default admin site while apps load, before allauth's models can
    # be imported.
    from allauth.mfa.utils import is_mfa_enabled

    return not is_mfa_enabled(request.user, types=list(MFA_TYPES))


class OperatorAdminSite(admin.AdminSite):
    site_header = "mjgate operator"
    site_title = "mjgate operator"
    index_title = "Operations"
    enable_nav_sidebar = True

    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        if request.user.is_authenticated and not self.has_permission(request):
            raise PermissionDenied("The operator admin is for staff only.")
        index = reverse("admin:index", current_app=self.name)
        target = request.GET.get("next") or index
        if not url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            target = index
        if self.has_permission(request):
            return HttpResponseRedirect(target)
        return HttpResponseRedirect(f"{reverse('account_login')}?{urlencode({'next': target})}")

    def admin_view(self, view: Callable[..., Any], cacheable: bool = False) -> Any:
        protected = super().admin_view(view, cacheable)

        @wraps(view)
        def inner(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            logout = reverse("admin:logout", current_app=self.name)
            if request.path != logout and self.has_permission(request) and staff_lacks_mfa(request):
                messages.warning(
                    request,
                    "Operators must turn on two-factor authentication before using the admin.",
                )
                setup = reverse("mfa_activate_totp")
                index = reverse("admin:index", current_app=self.name)
                return HttpResponseRedirect(f"{setup}?{urlencode({'next': index})}")
            return protected(request, *args, **kwargs)

        return inner

    def get_urls(self) -> list[Any]:
        # Lazy: the stats view reads task and ledger models, which are not loaded yet when
        # Django builds the default admin site.
        from .views import stats_view

        custom: list[URLPattern] = [
            path("operator/stats/", self.admin_view(stats_view(self)), name="operator_stats"),
        ]
        return custom + super().get_urls()

    def each_context(self, request: HttpRequest) -> dict[str, Any]:
        context = super().each_context(request)
        context["operator_stats_url"] = reverse("admin:operator_stats", current_app=self.name)
        return context
