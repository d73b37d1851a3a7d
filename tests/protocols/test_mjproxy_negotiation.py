"""The mj-proxy routes skip DRF's content negotiation only where its answer is known."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from apps.protocols.mjproxy.views import ImagineView, ListView


@pytest.mark.parametrize("view_class", [ImagineView, ListView])
@pytest.mark.parametrize(
    ("accept", "query"),
    [
        (None, ""),
        ("*/*", ""),
        ("application/json", ""),
        ("application/json; indent=4", ""),
        ("text/html,application/xhtml+xml,*/*;q=0.8", ""),
        ("*/*", "?format=json"),
    ],
)
def test_the_renderer_and_media_type_are_drfs_own(
    view_class: Any, accept: str | None, query: str
) -> None:
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    django_request = APIRequestFactory().post(f"/mj/submit/imagine{query}", {}, **headers)
    view = view_class()
    view.args, view.kwargs = (), {}
    view.format_kwarg = None
    request = Request(django_request)
    ours = view.perform_content_negotiation(request)
    drfs = APIView.perform_content_negotiation(view, request)
    assert (type(ours[0]), ours[1]) == (type(drfs[0]), drfs[1])


def test_an_unacceptable_accept_header_is_refused_as_drf_refuses_it() -> None:
    django_request = APIRequestFactory().post("/mj/submit/imagine", {}, HTTP_ACCEPT="text/html")
    view = ImagineView()
    view.args, view.kwargs, view.format_kwarg = (), {}, None
    request = Request(django_request)
    with pytest.raises(Exception) as ours:
        view.perform_content_negotiation(request)
    with pytest.raises(Exception) as drfs:
        APIView.perform_content_negotiation(view, request)
    assert type(ours.value) is type(drfs.value)
