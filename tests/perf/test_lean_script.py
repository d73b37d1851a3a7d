"""The hot path's Redis scripts frame their command themselves (issue 15, P1).

redis-py's packer encodes each argument through its encoder and builds the frame piece by
piece; ``LeanScript`` frames ``EVALSHA`` with its keys and counts in one join. The bytes on the
wire must be exactly redis-py's, and anything it does not frame (other types, a large command)
still goes through redis-py.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from django.conf import settings

from apps.core.cache import _PACK_LIMIT, LeanScript

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis")

SOURCE = "return {KEYS[1], ARGV[1], #KEYS, #ARGV} -- test_lean_script"


class _Sent:
    def __init__(self, connection: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.packed: list[bytes] = []
        self.commands: list[tuple[Any, ...]] = []
        send_packed, send = connection.send_packed_command, connection.send_command

        def packed(command: Any, check_health: bool = True) -> None:
            self.packed.append(b"".join(command))
            return send_packed(command, check_health)

        def command(*args: Any, **kwargs: Any) -> None:
            self.commands.append(args)
            return send(*args, **kwargs)

        monkeypatch.setattr(connection, "send_packed_command", packed)
        monkeypatch.setattr(connection, "send_command", command)


def test_a_script_sends_redis_pys_own_bytes_without_its_packer(monkeypatch):
    client = redis.Redis.from_url(settings.REDIS_URL)
    script = LeanScript(SOURCE)
    connection = script._connection(client)
    keys, args = ["mjgate:tést:a", "b"], [120, 15]
    assert script(client, keys=keys, args=args) == [b"mjgate:t\xc3\xa9st:a", b"120", 2, 2]
    sent = _Sent(connection, monkeypatch)
    assert script(client, keys=keys, args=args) == [b"mjgate:t\xc3\xa9st:a", b"120", 2, 2]
    expected = b"".join(connection.pack_command("EVALSHA", script.sha, 2, *keys, *args))
    assert sent.packed == [expected]
    assert sent.commands == []


def test_what_it_does_not_frame_goes_through_redis_py(monkeypatch):
    client = redis.Redis.from_url(settings.REDIS_URL)
    script = LeanScript(SOURCE)
    connection = script._connection(client)
    script(client, keys=["k"], args=[1])
    sent = _Sent(connection, monkeypatch)
    assert script(client, keys=["k"], args=[1.5]) == [b"k", b"1.5", 1, 1]
    big = "x" * _PACK_LIMIT
    assert script(client, keys=[big], args=[1]) == [big.encode(), b"1", 1, 1]
    assert [c[0] for c in sent.commands] == ["EVALSHA", "EVALSHA"]
