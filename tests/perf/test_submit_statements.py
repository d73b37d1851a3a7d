"""Statements per request on the hot paths (issue 15: a submit runs at most 8)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from apps.accounts.models import MembershipTier
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


@pytest.mark.django_db
def test_a_submit_behind_a_queue_longer_than_the_pool_skips_the_free_slot_read(
    funded: Any, key_client: APIClient, sandbox: UpstreamAccount, monkeypatch: Any
) -> None:
    from apps.tasks import selectors

    # Within one second of the previous reads (the free slots are read once a second a pool).
    monkeypatch.setattr(selectors.time, "monotonic", lambda: 1_000.0)
    selectors.pool_throughput_forget()
    UpstreamAccount.objects.update(concurrency=1)
    MembershipTier.objects.filter(pk=funded.tier_id).update(max_unfinished_tasks=100)
    cache.clear()
    answers = [
        key_client.post("/mj/submit/imagine", {"prompt": f"fox {n}"}, format="json").json()
        for n in range(3)
    ]
    assert [a["code"] for a in answers] == [1, 22, 22]
    with CaptureQueriesContext(connection) as ctx:
        answer = key_client.post("/mj/submit/imagine", {"prompt": "one more"}, format="json")
    assert answer.json()["code"] == 22
    # Placed behind more tasks than the pool has slots: the free slots the second submit read
    # (no worker runs here, so the pool's one slot is still free, and the first task takes it)
    # serve it, with no read of its own. It waits for three slots: two tasks wait before it.
    assert answer.json()["properties"]["numberOfQueues"] == 2
    assert not [q for q in ctx.captured_queries if "engines_upstreamaccount" in q["sql"]]
