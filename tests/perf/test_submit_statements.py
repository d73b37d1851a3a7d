"""Statements per request on the hot paths (issue 15: a submit runs at most 8)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from apps.engines.models import UpstreamAccount

#: Issue 15's budget for one submit, savepoints included.
SUBMIT_STATEMENTS = 8


@pytest.mark.django_db
def test_a_warm_submit_runs_at_most_eight_statements(
    funded: Any, key_client: APIClient, sandbox: UpstreamAccount
) -> None:
    cache.clear()  # the key's creation left a tombstone in the key cache
    first = key_client.post("/mj/submit/imagine", {"prompt": "warm up"}, format="json")
    assert first.status_code == 200, first.content
    with CaptureQueriesContext(connection) as ctx:
        answer = key_client.post("/mj/submit/imagine", {"prompt": "a red fox"}, format="json")
    assert answer.status_code == 200, answer.content
    assert answer.json()["code"] in (1, 22)
    statements = [q["sql"] for q in ctx.captured_queries]
    # The test's own transaction turns the request's outer BEGIN into a SAVEPOINT pair.
    nested = [s for s in statements if "SAVEPOINT" in s]
    assert len(nested) == 2, nested
    own = [s for s in statements if "SAVEPOINT" not in s]
    # The request's BEGIN and COMMIT are not captured; count them as the savepoint pair.
    assert len(own) + 2 <= SUBMIT_STATEMENTS, "\n".join(own)
    assert not [s for s in own if "api_keys_apikey" in s or "tasks_bannedword" in s]
    assert not [s for s in own if "billing_price" in s]
    # No COUNT over the task table: the tier check reads the organization's counter and the
    # queue position comes from queue numbers.
    assert not [s for s in own if s.startswith("SELECT COUNT(") and '"tasks_task"' in s]
