"""The gateway: resume after drops, reconnect / invalid session, leases shared by processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.utils import timezone

from apps.engines.base import SubmitOutcomeUnknown, TemporaryEngineError
from apps.engines.discord import rest as rest_module
from apps.engines.discord.engine import DiscordEngine
from apps.engines.discord.fake import FakeDiscordThread
from apps.engines.discord.leases import RENEW_EVERY, TTL, lease_acquire
from apps.engines.discord.models import DiscordJob, GatewayLease, Phase
from apps.engines.discord.rest import TURN_SECONDS, DiscordRest
from tests.integration_support import ROOT, worker_environment

from .conftest import GatewayThread, job_for, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _pushed_success(thread: GatewayThread, nonce: str) -> bool:
    return any(u.upstream_job_id == nonce and u.result.status == "success" for u in thread.updates)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["close", "reconnect"], ids=["socket-dropped", "op7-reconnect"])
def test_events_sent_while_disconnected_arrive_after_resume(
    engine: DiscordEngine,
    make_account: Callable[..., Any],
    gateway: Callable[..., GatewayThread],
    fake_discord: FakeDiscordThread,
    how: str,
) -> None:
    account, token = make_account()
    thread = gateway(account_ids={account.pk})
    thread.wait_connected(account.pk)
    for round_ in range(2):
        assert fake_discord.control("drop", {"token": token, "how": how})["dropped"] == 1
        # Sent while the gateway is away: the bot's answers are only in the session's backlog.
        job = job_for(account, prompt=f"a storm at sea {how} {round_}")
        submitted = engine.submit(job)
        wait_for(lambda s=submitted: _pushed_success(thread, s.upstream_job_id))
        polled = engine.poll(replace(job, upstream_job_id=submitted.upstream_job_id))
        assert polled.status == "success" and polled.image is not None
    stats = fake_discord.stats()
    assert stats["identifies"][token] == 1
    assert stats["duplicate_nonces"] == 0
    assert stats[f"max_connections:{token}"] == 1
    assert thread.service.connections[account.pk].resumes >= 2


def test_invalid_session_identifies_again(
    make_account: Callable[..., Any],
    gateway: Callable[..., GatewayThread],
    fake_discord: FakeDiscordThread,
) -> None:
    account, token = make_account()
    thread = gateway(account_ids={account.pk})
    thread.wait_connected(account.pk)
    first_session = thread.service.connections[account.pk].session_id
    fake_discord.control("drop", {"token": token, "how": "invalidate"})
    wait_for(lambda: fake_discord.stats()["identifies"][token] == 2)
    connection = thread.service.connections[account.pk]
    wait_for(lambda: connection.session_id not in ("", first_session))
    wait_for(lambda: GatewayLease.objects.get(pk=account.pk).session_id == connection.session_id)


def test_heartbeats_are_sent_and_acknowledged(
    make_account: Callable[..., Any],
    gateway: Callable[..., GatewayThread],
    fake_discord: FakeDiscordThread,
) -> None:
    account, _token = make_account()
    before = fake_discord.stats().get("heartbeats", 0)
    thread = gateway(account_ids={account.pk})
    thread.wait_connected(account.pk)
    wait_for(lambda: fake_discord.stats().get("heartbeats", 0) >= before + 3, timeout=5)
    assert thread.service.connections[account.pk].connected.is_set()


def test_a_lease_is_never_held_twice_and_expires_for_the_next_holder(
    make_account: Callable[..., Any],
) -> None:
    account, _token = make_account()
    from datetime import timedelta

    assert lease_acquire(account_id=account.pk, holder="a", ttl=timedelta(seconds=1))
    assert lease_acquire(account_id=account.pk, holder="b", ttl=timedelta(seconds=1)) is None
    assert lease_acquire(account_id=account.pk, holder="a", ttl=timedelta(seconds=1))  # renew
    time.sleep(1.1)
    taken = lease_acquire(account_id=account.pk, holder="b", ttl=timedelta(seconds=1))
    assert taken is not None and taken.holder == "b"
    # The product defaults hand a dead process's accounts over within 60 s.
    assert (TTL + RENEW_EVERY).total_seconds() <= 60 and RENEW_EVERY * 2 < TTL


def test_a_worker_that_died_after_sending_is_adopted_not_resent(
    engine: DiscordEngine,
    make_account: Callable[..., Any],
    gateway: Callable[..., GatewayThread],
    fake_discord: FakeDiscordThread,
) -> None:
    """The gateway was down too: find_job reads the channel back and adopts the job."""
    account, _token = make_account(submit_confirm_seconds=0)
    job = job_for(account, prompt="an orchard at dawn")
    submitted = engine.submit(job)  # no gateway: the confirm wait times out, the row stays sent
    row = DiscordJob.objects.get(pk=submitted.upstream_job_id)
    # As if the worker died between the interaction and recording it.
    DiscordJob.objects.filter(pk=row.pk).update(phase="prepared")
    before = fake_discord.stats()["interactions"]
    time.sleep(0.6)  # the bot finishes meanwhile
    found = engine.find_job(job)
    assert found is not None and found.upstream_job_id == row.pk
    again = engine.submit(job)
    assert again.upstream_job_id == row.pk
    assert fake_discord.stats()["interactions"] == before
    result = engine.poll(replace(job, upstream_job_id=row.pk))
    assert result.status == "success" and result.is_grid


def test_an_interaction_that_never_left_is_sent_after_the_grace_period(
    engine: DiscordEngine, make_account: Callable[..., Any], fake_discord: FakeDiscordThread
) -> None:
    account, _token = make_account(submit_confirm_seconds=0)
    job = job_for(account, prompt="a lost message")
    # Its worker stopped while the POST was leaving (or just after): nobody can tell yet.
    DiscordJob.objects.create(
        nonce="1234567890123", account=account, task_id=job.task_id, action="IMAGINE",
        command="imagine", bot_id="936929561302675456", channel_id=account.options["channel_id"],
        prompt="a lost message --fast", sending_at=timezone.now() - timedelta(seconds=10),
    )  # fmt: skip
    before = fake_discord.stats()["interactions"]
    with pytest.raises(SubmitOutcomeUnknown):
        engine.find_job(job)
    with pytest.raises(SubmitOutcomeUnknown):
        engine.submit(job)
    assert fake_discord.stats()["interactions"] == before
    DiscordJob.objects.filter(pk="1234567890123").update(
        sending_at=timezone.now() - timedelta(minutes=5)
    )
    assert engine.find_job(job) is None
    submitted = engine.submit(job)
    assert submitted.upstream_job_id != "1234567890123"
    assert fake_discord.stats()["interactions"] == before + 1


class _Killed(BaseException):
    """The worker's process dying: no ``except Exception`` on the way out sees it."""


def _die_after_sending_at(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next interaction's worker dies right after ``sending_at`` was committed, before
    its POST leaves (``before_send`` runs inside the account's REST turn)."""
    original = DiscordRest.request

    def request(self: DiscordRest, method: str, url: str, **kwargs: Any) -> Any:
        leaving = kwargs.get("before_send")
        if url != "/interactions" or leaving is None:
            return original(self, method, url, **kwargs)

        def then_die() -> None:
            leaving()
            # SIGKILL does not release the turn: it stays in the cache until it expires.
            cache.set(f"discord:turn:{self.account_id}", "dead", timeout=TURN_SECONDS)
            raise _Killed

        return original(self, method, url, **{**kwargs, "before_send": then_die})

    monkeypatch.setattr(DiscordRest, "request", request)


def test_a_submit_killed_between_sending_at_and_its_post_is_closed_and_sent_again(
    engine: DiscordEngine,
    make_account: Callable[..., Any],
    fake_discord: FakeDiscordThread,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The acceptance run's extra "sent" row: a row whose ``sending_at`` was written but whose
    POST never left. After the grace period it is closed (refused, ``sending_at`` kept: it says
    when the POST was about to leave, not that it arrived) and a new interaction goes out, so
    the task has two rows with ``sending_at`` but Discord got one interaction."""
    account, _token = make_account(submit_confirm_seconds=0)
    job = job_for(account, prompt="a killed submit")
    before = fake_discord.stats()["interactions"]
    with monkeypatch.context() as patched:
        _die_after_sending_at(patched)
        with pytest.raises(_Killed):
            engine.submit(job)
    (first,) = DiscordJob.objects.filter(task_id=job.task_id)
    assert first.phase == Phase.PREPARED and first.sending_at is not None
    cache.delete(f"discord:turn:{account.pk}")  # expired by now (TURN_SECONDS)
    DiscordJob.objects.filter(pk=first.pk).update(sending_at=timezone.now() - timedelta(minutes=5))
    assert engine.find_job(job) is None
    submitted = engine.submit(job)
    first.refresh_from_db()
    assert first.phase == Phase.REFUSED and first.sending_at is not None
    assert first.fail_reason == "The interaction never reached the bot."
    assert submitted.upstream_job_id != first.nonce
    assert fake_discord.stats()["interactions"] == before + 1
    accepted = fake_discord.discord.world.nonces
    assert (accepted[first.nonce], accepted[submitted.upstream_job_id]) == (0, 1)


def test_a_lookup_that_cannot_read_the_channel_leaves_the_outcome_unknown(
    engine: DiscordEngine,
    make_account: Callable[..., Any],
    fake_discord: FakeDiscordThread,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The killed worker still holds the account's REST turn, so the look-up cannot read the
    channel back. That is "cannot tell yet", not "Discord did not take it": a temporary error
    here would send the task back to the queue, to be sent again on another account while
    this interaction's fate is unknown (and its row left prepared for good)."""
    account, _token = make_account(submit_confirm_seconds=0)
    job = job_for(account, prompt="a lookup behind a dead turn")
    with monkeypatch.context() as patched:
        _die_after_sending_at(patched)
        with pytest.raises(_Killed):
            engine.submit(job)
    DiscordJob.objects.filter(task_id=job.task_id).update(
        sending_at=timezone.now() - timedelta(seconds=10)
    )
    monkeypatch.setattr(rest_module, "TURN_WAIT", 0.2)
    with pytest.raises(SubmitOutcomeUnknown):
        engine.find_job(job)
    with pytest.raises(SubmitOutcomeUnknown):
        engine.submit(job)
    # Even once Discord certainly never got it, the row is closed only after it was looked up.
    DiscordJob.objects.filter(task_id=job.task_id).update(
        sending_at=timezone.now() - timedelta(minutes=5)
    )
    with pytest.raises(SubmitOutcomeUnknown):
        engine.find_job(job)
    assert DiscordJob.objects.get(task_id=job.task_id).phase == Phase.PREPARED
    cache.delete(f"discord:turn:{account.pk}")
    assert engine.find_job(job) is None
    assert DiscordJob.objects.get(task_id=job.task_id).phase == Phase.REFUSED


def test_a_submit_taken_over_while_it_waited_for_its_turn_sends_nothing(
    engine: DiscordEngine,
    make_account: Callable[..., Any],
    fake_discord: FakeDiscordThread,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A threads pool has no hard time limit: a submit waiting for the account's REST turn can
    outlive its lease, and the sweeper hands the task to another start, whose look-up closes
    the still unsent row. When the slow submit's turn comes, its POST must not leave."""
    account, _token = make_account(submit_confirm_seconds=0)
    job = job_for(account, prompt="a slow submit")
    original = DiscordRest.request

    def request(self: DiscordRest, method: str, url: str, **kwargs: Any) -> Any:
        if url == "/interactions":
            # While this submit waits for its turn, the other start looks the task up.
            assert engine.find_job(job) is None
        return original(self, method, url, **kwargs)

    before = fake_discord.stats()["interactions"]
    with monkeypatch.context() as patched:
        patched.setattr(DiscordRest, "request", request)
        with pytest.raises(TemporaryEngineError, match="taken over"):
            engine.submit(job)
    (closed,) = DiscordJob.objects.filter(task_id=job.task_id)
    assert (closed.phase, closed.sending_at) == (Phase.REFUSED, None)
    assert fake_discord.stats()["interactions"] == before
    submitted = engine.submit(job)  # what the other start does next: sent once
    assert submitted.upstream_job_id != closed.nonce
    assert fake_discord.stats()["interactions"] == before + 1


def test_a_look_up_does_not_close_a_row_whose_post_left_after_it_read_it(
    engine: DiscordEngine, make_account: Callable[..., Any]
) -> None:
    """The look-up read the row before the slow submit wrote ``sending_at`` and sent it: the
    row is not closed as never sent (the task would be sent twice), it is looked up as sent."""
    account, _token = make_account(submit_confirm_seconds=0)
    job = job_for(account, prompt="a late post")
    DiscordJob.objects.create(
        nonce="1234567890126", account=account, task_id=job.task_id, action="IMAGINE",
        command="imagine", bot_id="936929561302675456", channel_id=account.options["channel_id"],
        prompt="a late post --fast",
    )  # fmt: skip
    seen = DiscordJob.objects.get(pk="1234567890126")
    DiscordJob.objects.filter(pk="1234567890126").update(
        sending_at=timezone.now(), interaction_id="1234567890998"
    )
    found = engine._resolve_prepared(job, seen)
    assert found is not None and found.phase == Phase.SENT


def _sent_long_ago(account: Any, job: Any, nonce: str) -> None:
    """A prepared row whose POST left five minutes ago, with no acknowledgement on record."""
    DiscordJob.objects.create(
        nonce=nonce, account=account, task_id=job.task_id, action="IMAGINE", command="imagine",
        bot_id="936929561302675456", channel_id=account.options["channel_id"],
        prompt=f"{job.prompt} --fast", sending_at=timezone.now() - timedelta(minutes=5),
    )  # fmt: skip


def _changed_before_the_close(monkeypatch: pytest.MonkeyPatch, **fields: Any) -> None:
    """The row gets ``fields`` (what the gateway or its worker writes) between the look that
    judged it lost and the close."""
    original = DiscordEngine._close_lost

    def meanwhile(row: DiscordJob, reason: str) -> bool:
        DiscordJob.objects.filter(pk=row.pk).update(**fields)
        return original(row, reason)

    monkeypatch.setattr(DiscordEngine, "_close_lost", staticmethod(meanwhile))


def test_a_look_up_does_not_close_a_row_acknowledged_while_it_was_judged_lost(
    engine: DiscordEngine,
    make_account: Callable[..., Any],
    fake_discord: FakeDiscordThread,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sent long ago, no acknowledgement on record, nothing in the channel: lost, unless
    Discord's acknowledgement reaches the gateway between that look and the close. The close
    is a compare-and-set on what was judged, so the row is adopted (sent once), not closed
    and sent again."""
    account, _token = make_account(submit_confirm_seconds=0)
    job = job_for(account, prompt="an acknowledgement at the last moment")
    _sent_long_ago(account, job, "1234567890127")
    _changed_before_the_close(monkeypatch, interaction_id="1234567890999")
    before = fake_discord.stats()["interactions"]
    found = engine.find_job(job)
    assert found is not None and found.upstream_job_id == "1234567890127"
    row = DiscordJob.objects.get(pk="1234567890127")
    assert (row.phase, row.interaction_id) == (Phase.SENT, "1234567890999")
    assert fake_discord.stats()["interactions"] == before


def test_a_look_up_leaves_a_row_sent_again_by_its_slow_worker_to_a_later_look(
    engine: DiscordEngine, make_account: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Judged lost, but its worker (outliving its lease) writes a new ``sending_at`` and sends
    it once more before the close: neither closed nor adopted yet; "unknown", looked at again."""
    account, _token = make_account(submit_confirm_seconds=0)
    job = job_for(account, prompt="a second try at the last moment")
    _sent_long_ago(account, job, "1234567890128")
    _changed_before_the_close(monkeypatch, sending_at=timezone.now())
    with pytest.raises(SubmitOutcomeUnknown):
        engine.find_job(job)
    assert DiscordJob.objects.get(pk="1234567890128").phase == Phase.PREPARED


def test_an_interaction_whose_worker_stopped_before_sending_is_sent_at_once(
    engine: DiscordEngine, make_account: Callable[..., Any], fake_discord: FakeDiscordThread
) -> None:
    """A prepared row that never got to ``sending_at``: nothing left, so nothing to wait for
    (the lifecycle's few start attempts are not spent on a job that cannot exist)."""
    account, _token = make_account(submit_confirm_seconds=0)
    job = job_for(account, prompt="a never sent message")
    DiscordJob.objects.create(
        nonce="1234567890124", account=account, task_id=job.task_id, action="IMAGINE",
        command="imagine", bot_id="936929561302675456", channel_id=account.options["channel_id"],
        prompt="a never sent message --fast",
    )  # fmt: skip
    before = fake_discord.stats()["interactions"]
    assert engine.find_job(job) is None
    assert DiscordJob.objects.get(pk="1234567890124").phase == "refused"
    submitted = engine.submit(job)
    assert submitted.upstream_job_id != "1234567890124"
    assert fake_discord.stats()["interactions"] == before + 1


def test_an_acknowledged_interaction_is_adopted_without_waiting_for_the_bot(
    engine: DiscordEngine, make_account: Callable[..., Any], fake_discord: FakeDiscordThread
) -> None:
    """Discord acknowledged it (the gateway recorded the interaction id for our nonce): it
    reached the bot, so it is adopted even before the bot said anything."""
    account, _token = make_account(submit_confirm_seconds=0)
    job = job_for(account, prompt="an acknowledged message")
    DiscordJob.objects.create(
        nonce="1234567890125", account=account, task_id=job.task_id, action="IMAGINE",
        command="imagine", bot_id="936929561302675456", channel_id=account.options["channel_id"],
        prompt="an acknowledged message --fast", sending_at=timezone.now(),
        interaction_id="1234567890999",
    )  # fmt: skip
    before = fake_discord.stats()["interactions"]
    found = engine.find_job(job)
    assert found is not None and found.upstream_job_id == "1234567890125"
    assert DiscordJob.objects.get(pk="1234567890125").phase == "sent"
    assert engine.submit(job).upstream_job_id == "1234567890125"
    assert fake_discord.stats()["interactions"] == before


def test_poll_reads_the_channel_back_when_the_gateway_is_silent(
    engine: DiscordEngine, make_account: Callable[..., Any]
) -> None:
    account, _token = make_account(submit_confirm_seconds=0)
    job = job_for(account, prompt="a silent gateway")
    submitted = engine.submit(job)
    running = replace(job, upstream_job_id=submitted.upstream_job_id)
    assert engine.poll(running).status == "running"
    time.sleep(0.6)
    DiscordJob.objects.filter(pk=submitted.upstream_job_id).update(
        updated_at=timezone.now() - timedelta(seconds=60)
    )
    result = engine.poll(running)
    assert result.status == "success" and result.image is not None and result.image.data


# --- two gateway processes -------------------------------------------------------------------


def _start_gateway(log_dir: Path, name: str) -> subprocess.Popen[bytes]:
    log = (log_dir / f"{name}.log").open("wb")
    return subprocess.Popen(
        [
            sys.executable, "manage.py", "discord_gateway", "--poll-only", "--holder", name,
            "--ttl", "4", "--renew-every", "1",
        ],
        cwd=ROOT, env=worker_environment(), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(10)


@pytest.mark.slow
@pytest.mark.integration
def test_two_processes_share_accounts_and_take_over_a_dead_ones(
    make_account: Callable[..., Any],
    fake_discord: FakeDiscordThread,
    processes: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    accounts = [make_account() for _ in range(3)]
    ids = {account.pk for account, _token in accounts}
    processes.append(_start_gateway(tmp_path, "gw-a"))
    processes.append(_start_gateway(tmp_path, "gw-b"))

    def all_connected() -> bool:
        live = fake_discord.stats()["live_sessions"]
        return all(token in live for _account, token in accounts)

    wait_for(all_connected, timeout=40)
    holders = dict(
        GatewayLease.objects.filter(account_id__in=ids).values_list("account_id", "holder")
    )
    assert set(holders.values()) <= {"gw-a", "gw-b"}
    victim_name = next(iter(holders.values()))
    victim = processes[0] if victim_name == "gw-a" else processes[1]
    survivor = "gw-b" if victim_name == "gw-a" else "gw-a"
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(10)
    killed_at = time.monotonic()

    def taken_over() -> bool:
        held = set(GatewayLease.objects.filter(account_id__in=ids).values_list("holder", flat=True))
        return held == {survivor} and all_connected()

    wait_for(taken_over, timeout=30)
    # Scaled: 4 s leases renewed every second (the product's 30 s / 10 s keep it under 60 s).
    assert time.monotonic() - killed_at < 4 + 1 + 5
    stats = fake_discord.stats()
    for _account, token in accounts:
        # The successor resumed the dead process's sessions: each account identified once,
        # and no account was ever connected twice at the same time.
        assert stats["identifies"][token] == 1
        assert stats[f"max_connections:{token}"] == 1


@pytest.mark.parametrize(
    "prefix", ["MJ::JOB::upsample::3::", "MJ::JOB::variation::2::"], ids=["U3", "V2"]
)
def test_a_follow_up_whose_worker_died_is_adopted_from_the_channel(
    engine: DiscordEngine,
    make_account: Callable[..., Any],
    fake_discord: FakeDiscordThread,
    prefix: str,
) -> None:
    from .conftest import parent_of, poll_until_done

    account, _token = make_account(submit_confirm_seconds=0)
    imagine = job_for(account, prompt="a harbour at night")
    imagine = replace(imagine, upstream_job_id=engine.submit(imagine).upstream_job_id)
    time.sleep(0.5)
    DiscordJob.objects.filter(pk=imagine.upstream_job_id).update(
        updated_at=DiscordJob.objects.get(pk=imagine.upstream_job_id).created_at.replace(year=2020)
    )
    grid = poll_until_done(engine, imagine)
    pressed = next(
        b["custom_id"] for b in grid.state["buttons"] if b["custom_id"].startswith(prefix)
    )
    follow_up = job_for(
        account, action="UPSCALE", custom_id=pressed, parent=parent_of(imagine, grid.state)
    )
    submitted = engine.submit(follow_up)
    DiscordJob.objects.filter(pk=submitted.upstream_job_id).update(phase="prepared")
    before = fake_discord.stats()["interactions"]
    time.sleep(0.6)
    found = engine.find_job(follow_up)
    assert found is not None and found.upstream_job_id == submitted.upstream_job_id
    result = engine.poll(replace(follow_up, upstream_job_id=found.upstream_job_id))
    assert result.status == "success"
    assert result.is_grid is (prefix == "MJ::JOB::variation::2::")
    assert fake_discord.stats()["interactions"] == before


def test_a_gateway_that_stops_releases_its_leases(
    make_account: Callable[..., Any], gateway: Callable[..., GatewayThread]
) -> None:
    """A gateway stopping (a deploy, a restart) gives its accounts' leases back at once, so the
    next holder connects them without waiting for the leases to run out (``TTL``); it read what
    it held after dropping its connections, which had forgotten them, and released nothing."""
    account, _token = make_account()
    thread = gateway(holder="gw-stop", account_ids={account.pk}, ttl=30.0, renew_every=5.0)
    thread.wait_connected(account.pk)
    thread.stop()
    lease = GatewayLease.objects.get(pk=account.pk)
    assert lease.holder == "", f"lease still held by {lease.holder!r} until {lease.expires_at}"


def test_a_busy_event_pool_does_not_hold_the_lease_renewal_back(
    make_account: Callable[..., Any],
    gateway: Callable[..., GatewayThread],
    fake_discord: FakeDiscordThread,
) -> None:
    """Every thread of the gateway's event pool busy (slow result downloads, say) for longer
    than a lease lives: the lease is still renewed on time (its statements have a thread of
    their own), so no other process takes the account and only one connection ever serves it.
    Before, the renewal queued behind the events, the lease lapsed, and a second gateway
    connected while the first still handled the account's events."""
    import threading

    account, token = make_account()
    a = gateway(holder="gw-a", account_ids={account.pk})
    a.wait_connected(account.pk)
    busy = threading.Event()
    for _ in range(4):
        a.service._executor.submit(busy.wait, 30)
    try:
        b = gateway(holder="gw-b", account_ids={account.pk})
        first = GatewayLease.objects.get(pk=account.pk).expires_at
        time.sleep(a.service.ttl * 1.5)  # longer than a lease lives
        lease = GatewayLease.objects.get(pk=account.pk)
        assert lease.holder == "gw-a"
        assert lease.expires_at > first  # renewed meanwhile
        assert account.pk not in b.service.connections
        assert fake_discord.stats()[f"max_connections:{token}"] == 1
    finally:
        busy.set()


def test_a_lease_that_cannot_be_renewed_is_let_go_before_it_lapses(
    make_account: Callable[..., Any],
    gateway: Callable[..., GatewayThread],
) -> None:
    """The renewal itself stuck (the database slow or away): the gateway drops the account's
    connection before the lease can have lapsed, by its own clock, whatever the lease round is
    waiting for; it let go only after the round returned before."""
    import threading

    account, _token = make_account()
    a = gateway(holder="gw-a", account_ids={account.pk})
    a.wait_connected(account.pk)
    stuck = threading.Event()
    a.service._lease_executor.submit(stuck.wait, 30)  # the next renewal waits behind it
    try:
        wait_for(lambda: account.pk not in a.service.connections, timeout=a.service.ttl)
    finally:
        stuck.set()
