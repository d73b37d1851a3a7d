"""Two hands on one Discord job at once (apps/engines/discord/tracker.py, engine.py).

The gateway and a REST read-back (a quiet job's poll, the look-up of a prepared send) can hand
the tracker the same message at the same moment; it must go to one job, the right one. A slow
submit and the one that took its task over can both be about to send; one of them sends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, connections

from apps.engines.discord import tracker, wire
from apps.engines.discord.engine import DiscordEngine
from apps.engines.discord.fake import FakeDiscordThread
from apps.engines.discord.fake.bot import grid_components
from apps.engines.discord.models import DiscordJob, Phase
from apps.engines.discord.rest import DiscordRest

from .conftest import job_for, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _another_backend_waits_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND pid <> pg_backend_pid() AND datname = current_database()"
        )
        return bool(cursor.fetchone()[0])


def test_a_result_seen_twice_at_once_is_not_applied_to_another_job_with_the_same_prompt(
    make_account: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway and a REST read-back (poll of a stale job, or a look-up) feed the same final
    message M (no nonce: matched by the prompt head) at the same time. Two live jobs A (older)
    and B (another task, same prompt, same account) wait for their grids.

    Matched in parallel, T2 looked for ``result_message_id=M`` before T1 committed (nothing),
    then its prompt query waited for A's lock and, once T1 committed, PostgreSQL re-checked A
    (now a success: no longer live) and handed T2 the next live row, B: B's customer got A's
    image. The account's messages are now matched one at a time (``_one_message_at_a_time``):
    T2 waits for T1's commit before it looks, and finds M's job, A.
    """
    account, _token = make_account()
    channel = str(account.options["channel_id"])
    listener = tracker.Listener(
        account_id=account.pk, user_id="4242", channels=frozenset([channel])
    )
    prompt = "a lighthouse in fog --fast"
    head = f"{prompt}\n"
    for nonce, task in (("1000000000001", "task-a"), ("1000000000002", "task-b")):
        DiscordJob.objects.create(
            nonce=nonce, account=account, task_id=task, action="IMAGINE", command="imagine",
            bot_id=wire.MIDJOURNEY_BOT_ID, channel_id=channel, prompt=prompt,
            phase=Phase.RUNNING, bot_prompt=head, message_id=f"77{nonce}",
        )  # fmt: skip
        time.sleep(0.01)  # A is the older one
    job_hash = "0c0ffee0-0000-4000-8000-000000000001"
    final = {
        "id": "880000000000000001",
        "channel_id": channel,
        "author": {"id": wire.MIDJOURNEY_BOT_ID},
        "content": f"**{prompt}** - <@4242> (fast)",
        "attachments": [{"url": "https://cdn/x/user_a_lighthouse_" + job_hash + ".png"}],
        "components": grid_components(job_hash),
    }

    holding = threading.Event()
    go_on = threading.Event()
    original = tracker._apply

    def apply(job: DiscordJob, message: dict[str, Any]) -> list[Any]:
        if threading.current_thread().name == "first":
            holding.set()  # T1 holds A's row lock (select_for_update in _job_of)
            assert go_on.wait(10)
        return original(job, message)

    monkeypatch.setattr(tracker, "_apply", apply)
    first, first_out = _in_thread_named(
        "first", lambda: tracker.message_seen(listener=listener, message=final)
    )
    assert holding.wait(10), first_out
    second, second_out = _in_thread_named(
        "second", lambda: tracker.message_seen(listener=listener, message=final)
    )
    wait_for(_another_backend_waits_for_a_lock, timeout=10)
    go_on.set()
    first.join(10)
    second.join(10)
    assert "error" not in first_out and "error" not in second_out, (first_out, second_out)
    a = DiscordJob.objects.get(pk="1000000000001")
    b = DiscordJob.objects.get(pk="1000000000002")
    assert a.phase == Phase.SUCCESS and a.result_message_id == final["id"]
    # The same message must not finish B too.
    assert (b.phase, b.result_message_id) == (Phase.RUNNING, ""), (
        f"B ({b.task_id}) was given A's result: {b.phase} {b.result_message_id} {b.image_url}"
    )


def _in_thread_named(
    name: str, target: Callable[[], Any]
) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = target()
        except BaseException as exc:
            out["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True, name=name)
    thread.start()
    return thread, out


def test_a_submit_slow_before_its_row_exists_and_its_take_over_do_not_both_send(
    engine: DiscordEngine,
    make_account: Callable[..., Any],
    fake_discord: FakeDiscordThread,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A threads-pool worker W1 (no hard time limit) is still in ``_send`` before its
    ``DiscordJob`` row exists (waiting for the account's REST turn for the command index, an
    upload, a rate limit). Its submit lease runs out; the sweeper gives the task to W2, whose
    ``find_job`` finds no row and whose ``submit`` sends. W1 then creates its own row, whose
    ``sending_at`` guard passed (it is its own, prepared), and it sent as well: the task ran
    twice on Discord (fast hours spent twice). Now the sends of one task decide one at a time
    and a send finding another row of the task sent refuses to leave."""
    account, _token = make_account(submit_confirm_seconds=0)
    job = job_for(account, prompt="a slow start before the row")
    waiting = threading.Event()
    go_on = threading.Event()
    original = DiscordRest.command

    def command(self: DiscordRest, name: str, **kwargs: Any) -> Any:
        if threading.current_thread().name == "w1":
            waiting.set()
            assert go_on.wait(20)
        return original(self, name, **kwargs)

    monkeypatch.setattr(DiscordRest, "command", command)
    before = fake_discord.stats()["interactions"]
    w1, w1_out = _in_thread_named("w1", lambda: engine.submit(job))
    assert waiting.wait(10)
    # What the sweeper's task_start on W2 does (INTERRUPTED_SUBMITS set): look, then submit.
    assert engine.find_job(job) is None
    taken_over = engine.submit(job)
    go_on.set()
    w1.join(20)
    live = DiscordJob.objects.filter(task_id=job.task_id).exclude(
        phase__in=(Phase.REFUSED, Phase.FAILURE)
    )
    assert fake_discord.stats()["interactions"] == before + 1, (
        f"sent twice: {sorted(live.values_list('nonce', flat=True))}, "
        f"take-over {taken_over.upstream_job_id}, slow one {w1_out}"
    )
