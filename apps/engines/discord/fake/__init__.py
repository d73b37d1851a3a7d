"""A faithful fake Discord with a Midjourney bot, for tests and demos.

Run it with ``python -m apps.engines.discord.fake --port 8765`` and point a ``discord`` account's
``rest_base_url``/``gateway_url``/``cdn_base_url`` at it; create its users through
``POST /_fake/users``. Tests start it in a thread with :class:`FakeDiscordThread`.

It needs no Django: it is a separate program that only speaks Discord's wire format.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx

from .server import FakeDiscord, serve

__all__ = ["FakeDiscord", "FakeDiscordClient", "FakeDiscordThread"]


class FakeDiscordClient:
    """The control API of a running fake (in a thread here, or another process)."""

    def __init__(self, url: str = "") -> None:
        self._url = url

    @property
    def url(self) -> str:
        return self._url

    def control(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.post(f"{self.url}/_fake/{path}", json=body or {}, timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def add_user(self, token: str, **fields: Any) -> dict[str, Any]:
        return self.control("users", {"token": token, **fields})

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/_fake/stats", timeout=10)
        response.raise_for_status()
        return dict(response.json())


class FakeDiscordThread(FakeDiscordClient):
    """The fake served from a background thread with its own event loop."""

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.discord = FakeDiscord(**options)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-discord", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._runner = self._loop.run_until_complete(serve(self.discord, "127.0.0.1", 0))
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())

    def start(self) -> FakeDiscordThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("The fake Discord did not start.")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return self.discord.base_url
