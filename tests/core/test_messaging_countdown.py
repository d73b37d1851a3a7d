"""A countdown reckoned from an earlier moment (``counted_from``) loses the time that went by
before the message left: a poll due when the upstream said the job would be done is not
pushed back by the writes and the commit that came after its answer (issue 15, P2)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.db import transaction

from apps.core import messaging


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...], float | None]]:
    found: list[tuple[str, tuple[Any, ...], float | None]] = []

    def send_now(name: str, *args: Any, countdown: float | None = None, **_: Any) -> None:
        found.append((name, args, countdown))

    monkeypatch.setattr(messaging, "send_now", send_now)
    return found


@pytest.mark.django_db(transaction=True)
def test_the_time_before_the_commit_is_taken_off_the_countdown(published):
    answered = time.monotonic()
    with transaction.atomic():
        messaging.send_after_commit(
            "tasks.poll_job", "t1", "k", countdown=1.0, counted_from=answered
        )
        messaging.send_after_commit("tasks.poll_job", "t2", "k", countdown=1.0)
        time.sleep(0.2)  # the writes and the commit after the upstream's answer
        assert published == []  # nothing leaves before the commit
    (first, second) = published
    assert first[:2] == ("tasks.poll_job", ("t1", "k"))
    assert 0.7 <= first[2] <= 0.8 + 1e-6
    assert second == ("tasks.poll_job", ("t2", "k"), 1.0)  # no anchor: as given


@pytest.mark.django_db(transaction=True)
def test_a_countdown_already_run_out_sends_at_once(published):
    messaging.send_after_commit(
        "tasks.poll_job", "t1", "k", countdown=0.05, counted_from=time.monotonic() - 1
    )
    assert published == [("tasks.poll_job", ("t1", "k"), 0.0)]
