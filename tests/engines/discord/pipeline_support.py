"""Helpers of the discord engine's end-to-end tests: the gateway as a process, waiting, checks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.test import Client
from rest_framework.test import APIClient

from apps.billing.models import EntryKind, LedgerEntry
from apps.engines.discord.fake import FakeDiscordClient
from tests.integration_support import ROOT, worker_environment

TIMEOUT = 60.0
TERMINAL = ("SUCCESS", "FAILURE", "CANCEL", "FAILED")


class GatewayProcess:
    """``manage.py discord_gateway`` in its own process group, killable and restartable."""

    def __init__(self, log_dir: Path, name: str) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> GatewayProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable, "manage.py", "discord_gateway", "--holder", self.name,
                    "--ttl", "4", "--renew-every", "1",
                ],
                cwd=ROOT, env=worker_environment(), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.alive:
            assert self.process is not None
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.alive:
            assert self.process is not None
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-10_000:]


def wait_live(fake: FakeDiscordClient, tokens: list[str], timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = fake.stats()["live_sessions"]
        if all(token in live for token in tokens):
            return
        time.sleep(0.1)
    raise AssertionError("the gateway did not connect every account")


def wait_for(
    fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float = TIMEOUT
) -> Any:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = fetch()
        if done(value):
            return value
        time.sleep(0.1)
    raise AssertionError(f"not done within {timeout} s: {value}")


def downloadable(url: str) -> bool:
    """Served by us (our storage), an image — never a link to the (fake) Discord CDN."""
    response = Client().get(urlsplit(url).path)
    return response.status_code == 200 and response["Content-Type"].startswith("image/")


def charged_once(task_id: str) -> None:
    kinds = list(LedgerEntry.objects.filter(task_id=task_id).values_list("kind", flat=True))
    assert kinds.count(EntryKind.CAPTURE) == 1, kinds
    assert EntryKind.RELEASE not in kinds, kinds


def gateway_api(
    *,
    organization: Any,
    live_key: Any,
    fund: Callable[..., Any],
    make_account: Callable[..., Any],
    fake_discord: Any,
    gateway_process: Callable[[str], GatewayProcess],
    name: str,
) -> APIClient:
    """A funded tenant's API client, its Discord account served by a gateway process ``name``
    that is live on the fake Discord (the end-to-end tests' ``api`` fixtures)."""
    fund(organization, 10_000_000)
    _account, token = make_account()
    gateway_process(name)
    wait_live(fake_discord, [token])
    client = APIClient()
    client.credentials(HTTP_MJ_API_SECRET=live_key.plaintext)
    return client


def mj_fetch(client: APIClient, task_id: str) -> dict[str, Any]:
    """The mj-proxy task JSON once terminal: it must have succeeded, charged once."""
    body = wait_for(
        lambda: client.get(f"/mj/task/{task_id}/fetch").json(),
        lambda body: body["status"] in TERMINAL,
    )
    assert body["status"] == "SUCCESS", body
    charged_once(task_id)
    return body


def mj_press(client: APIClient, parent: dict[str, Any], label: str) -> dict[str, Any]:
    """Press ``parent``'s button ``label`` through mj-proxy and wait for the result."""
    custom_id = next(b["customId"] for b in parent["buttons"] if b["label"] == label)
    pressed = client.post(
        "/mj/submit/action", {"taskId": parent["id"], "customId": custom_id}, format="json"
    ).json()
    assert pressed["code"] in (1, 22), pressed
    return mj_fetch(client, pressed["result"])
