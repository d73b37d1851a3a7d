"""``manage.py discord_gateway``: it pushes to the lifecycle, or refuses to start without it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from apps.engines.base import JobUpdate, PollResult
from apps.engines.discord.models import GatewayLease
from apps.engines.models import UpstreamAccount
from apps.tasks import lifecycle
from apps.tasks.management.commands import discord_gateway
from tests.integration_support import ROOT, worker_environment


def test_without_the_lifecycle_entry_point_the_gateway_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(lifecycle, "task_apply_update", raising=False)
    with pytest.raises(CommandError, match=r"no apps\.tasks\.lifecycle\.task_apply_update"):
        call_command("discord_gateway")


def test_the_sink_hands_each_update_to_the_lifecycle(monkeypatch: pytest.MonkeyPatch) -> None:
    applied: list[Any] = []
    monkeypatch.setattr(
        lifecycle, "task_apply_update", lambda *, update: applied.append(update), raising=False
    )
    sink = discord_gateway._lifecycle_sink()
    assert sink is not None
    update = JobUpdate(account_id=1, upstream_job_id="n1", result=PollResult(status="running"))
    sink(update)
    assert applied == [update]


@pytest.mark.integration
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_without_any_discord_account_the_gateway_idles_and_stops_cleanly(tmp_path: Path) -> None:
    """The run command and compose start it everywhere: with no discord account it must idle."""
    assert not UpstreamAccount.objects.filter(engine="discord").exists()
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "discord_gateway", "--ttl", "1", "--renew-every", "0.3"],
            cwd=ROOT,
            env=worker_environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while "started" not in log_path.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log_path.read_text()
            time.sleep(0.1)
        time.sleep(2)  # several lease rounds with nothing to lease
        assert process.poll() is None, log_path.read_text()
        assert not GatewayLease.objects.exists()
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    output = log_path.read_text()
    assert "discord gateway" in output and "Traceback" not in output, output


def test_two_gateways_on_one_host_never_share_a_holder_name() -> None:
    """Two containers sharing the host's name, both running as pid 1 (host networking), would
    both pass a lease's holder check under one name: the default name is unique per process."""
    from apps.tasks.management.commands.discord_gateway import Command

    names = {
        Command().create_parser("manage.py", "discord_gateway").parse_args([]).holder
        for _ in range(2)
    }
    assert len(names) == 2
