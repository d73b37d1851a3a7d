"""Shared helpers of the dashboard tests."""

from __future__ import annotations

from typing import Any

from django.test import Client, RequestFactory

from apps.accounts.models import User
from apps.dashboard.tenancy import PAGE_ORGANIZATION_HEADER, current_membership

SAFE_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE")
PAGE_ORGANIZATION_META = "HTTP_" + PAGE_ORGANIZATION_HEADER.upper().replace("-", "_")


class FreshTabClient(Client):
    """A signed-in user whose every write comes from a page rendered just now: like the
    dashboard's forms and htmx requests, it says which organization the page was for
    (``X-Page-Organization``), namely the one the session has at the time of the write.
    Tests of stale pages (tests/dashboard/test_stale_tab_organization.py) use a plain Client."""

    def __init__(self, user: User, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.user = user
        self.force_login(user)

    def request(self, **request: Any) -> Any:
        if request.get("REQUEST_METHOD", "GET") not in SAFE_METHODS:
            organization_id = self.current_organization_id()
            if organization_id is not None:
                request.setdefault(PAGE_ORGANIZATION_META, str(organization_id))
        return super().request(**request)

    def current_organization_id(self) -> int | None:
        """The organization the server would act for now (its own rule, on a copy of the
        session that is not saved)."""
        probe = RequestFactory().get("/")
        probe.user = self.user
        probe.session = self.session
        membership = current_membership(probe)
        return membership.organization_id if membership is not None else None


def login(user: User, **kwargs: Any) -> Client:
    return FreshTabClient(user, **kwargs)
