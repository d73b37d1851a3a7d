"""Statements per request on the hot paths (issue 15: a submit runs <= 8)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from apps.api_keys.services import IssuedKey
from apps.engines.models import UpstreamAccount


@pytest.mark.django_db
def test_probe(funded: Any, key_client: APIClient, sandbox: UpstreamAccount, live_key: IssuedKey) -> None:
    key_client.post("/mj/submit/imagine", {"prompt": "warm up"}, format="json")
    with CaptureQueriesContext(connection) as ctx:
        r = key_client.post("/mj/submit/imagine", {"prompt": "a red fox"}, format="json")
    assert r.status_code == 200, r.content
    for q in ctx.captured_queries:
        print(q["sql"][:300])
    print(len(ctx.captured_queries), r.json())
    assert False
