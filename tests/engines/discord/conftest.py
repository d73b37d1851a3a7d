"""Fixtures for the discord engine: the fake Discord, accounts pointed at it, a gateway thread.

The fake runs in a thread of the test process (its own event loop); the gateway service runs in
another thread, so tests touching both use ``transaction=True`` (other threads only see
committed rows).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from apps.engines.base import AccountView, Job, JobUpdate, ParentRef, StoredFile
from apps.engines.discord.engine import DiscordEngine
from apps.engines.discord.fake import FakeDiscordThread
from apps.engines.discord.gateway import GatewayService
from apps.engines.models import UpstreamAccount
from apps.engines.services import upstream_account_create

from .pipeline_support import GatewayProcess, gateway_api

_channels = itertools.count(700_000_000_001)


def pytest_configure(config: pytest.Config) -> None:
    # Registered here too so this folder runs on its own under --strict-markers.
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


@pytest.fixture(scope="session")
def fake_discord() -> Iterator[FakeDiscordThread]:
    fake = FakeDiscordThread(step_seconds=0.05, steps=3, heartbeat_ms=400).start()
    yield fake
    fake.stop()


@pytest.fixture
def engine() -> DiscordEngine:
    return DiscordEngine()


def account_options(fake: FakeDiscordThread, channel: str, **extra: Any) -> dict[str, Any]:
    return {
        "guild_id": "600000000000000001",
        "channel_id": channel,
        "rest_base_url": f"{fake.url}/api/v10",
        "gateway_url": f"{fake.url.replace('http', 'ws', 1)}/gateway",
        "cdn_base_url": fake.url,
        "inpaint_base_url": fake.url,
        "submit_confirm_seconds": 5,
        **extra,
    }


@pytest.fixture
def make_account(
    fake_discord: FakeDiscordThread,
) -> Callable[..., tuple[UpstreamAccount, str]]:
    """A discord account on the fake, with its own channel. Returns (account, token)."""

    def make(
        *, fake_user: dict[str, Any] | None = None, **options: Any
    ) -> tuple[UpstreamAccount, str]:
        channel = str(next(_channels))
        token = f"mfa.{uuid.uuid4().hex}{uuid.uuid4().hex}"
        fake_discord.add_user(
            token, guild_id="600000000000000001", channel_ids=[channel], **(fake_user or {})
        )
        account = upstream_account_create(
            engine="discord",
            name=f"discord-{channel}",
            modes=["FAST", "RELAX"],
            # The token is given like any option; the service moves it to the encrypted secrets.
            options={**account_options(fake_discord, channel, **options), "token": token},
        )
        return account, token

    return make


def job_for(
    account: UpstreamAccount,
    *,
    action: str = "IMAGINE",
    prompt: str = "a red fox in snow",
    mode: str = "FAST",
    task_id: str | None = None,
    custom_id: str = "",
    parent: ParentRef | None = None,
    images: tuple[bytes, ...] = (),
    mask: bytes | None = None,
    params: dict[str, Any] | None = None,
    upstream_job_id: str = "",
    state: dict[str, Any] | None = None,
) -> Job:
    account.refresh_from_db()
    files = {f"in{n}.png": data for n, data in enumerate(images)}
    if mask is not None:
        files["mask.png"] = mask
    return Job(
        task_id=task_id or uuid.uuid4().hex,
        action=action,
        mode=mode,
        prompt=prompt,
        params=params or {},
        account=AccountView(
            id=account.pk,
            engine=account.engine,
            name=account.name,
            modes=tuple(account.modes),
            options=dict(account.options),
            secrets=dict(account.secrets),
        ),
        custom_id=custom_id,
        images=tuple(StoredFile(name, files.__getitem__) for name in files if name != "mask.png"),
        mask=StoredFile("mask.png", files.__getitem__) if mask is not None else None,
        parent=parent,
        upstream_job_id=upstream_job_id,
        state=state or {},
    )


def parent_of(job: Job, result_state: dict[str, Any]) -> ParentRef:
    return ParentRef(
        task_id=job.task_id,
        action=job.action,
        prompt=job.prompt,
        upstream_job_id=str(result_state["nonce"]),
        state=result_state,
        params={},
        seed=None,
    )


class GatewayThread:
    """A :class:`GatewayService` on its own event loop in a thread; updates are collected."""

    def __init__(self, **options: Any) -> None:
        self.updates: list[JobUpdate] = []
        options.setdefault("holder", f"test-{uuid.uuid4().hex[:6]}")
        options.setdefault("ttl", 3.0)
        options.setdefault("renew_every", 0.5)
        self.service = GatewayService(sink=self.updates.append, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self.service.run())

    def start(self) -> GatewayThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self.service.stop)
        self._thread.join(15)

    def wait_connected(self, account_id: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            connection = self.service.connections.get(account_id)
            if connection is not None and connection.connected.is_set():
                return
            time.sleep(0.05)
        raise AssertionError(f"account {account_id} did not connect")


@pytest.fixture
def gateway() -> Iterator[Callable[..., GatewayThread]]:
    started: list[GatewayThread] = []

    def start(**options: Any) -> GatewayThread:
        thread = GatewayThread(**options).start()
        started.append(thread)
        return thread

    yield start
    for thread in started:
        thread.stop()


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def poll_until_done(engine: DiscordEngine, job: Job, timeout: float = 60.0) -> Any:
    """The job's first non-running poll. The bound only stops a hung test: a video job is
    several bot steps (a form, the clips pressed one by one), slow on a loaded machine."""

    def done() -> Any:
        result = engine.poll(job)
        return result if result.status != "running" else None

    return wait_for(done, timeout=timeout, interval=0.1)


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[Callable[[str], GatewayProcess]]:
    """Start ``manage.py discord_gateway`` processes; all are stopped when the test ends."""
    started: list[GatewayProcess] = []

    def start(name: str) -> GatewayProcess:
        process = GatewayProcess(tmp_path, name).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


# Real Celery workers for the end-to-end tests (test_pipeline.py).
from tests.integration_support import celery_worker, celery_worker_factory  # noqa: E402, F401


@pytest.fixture
def gateway_api_for(
    organization: Any,
    live_key: Any,
    fund: Any,
    celery_worker: Any,  # noqa: F811 - the fixture imported above, requested by name
    make_account: Callable[..., Any],
    fake_discord: FakeDiscordThread,
    gateway_process: Callable[[str], GatewayProcess],
) -> Callable[[str], Any]:
    """The end-to-end tests' API client: a real worker, and the tenant's Discord account served
    by a gateway process of the given name, live on the fake Discord."""

    def make(name: str) -> Any:
        return gateway_api(
            organization=organization,
            live_key=live_key,
            fund=fund,
            make_account=make_account,
            fake_discord=fake_discord,
            gateway_process=gateway_process,
            name=name,
        )

    return make
