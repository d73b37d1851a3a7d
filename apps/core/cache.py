"""Caches of the hot path: one Redis client per process, and rows that rarely change.

* :class:`ProcessRedisCache` is Django's Redis cache backend with one client (so one connection
  pool) per process, however many times Django builds the backend object (per thread, per
  request context).
* :func:`config_cached` keeps a small table (banned words, prices) in process memory. A reader
  trusts its copy for :data:`LOCAL_SECONDS`; after that it compares the table's generation in
  the shared cache (one Redis GET) and reloads only when a writer bumped it. Writers call
  :func:`config_changed` (on commit), so a change reaches every process within
  :data:`LOCAL_SECONDS` and the process that made it at once. A copy older than
  :data:`MAX_AGE_SECONDS` is reloaded anyway (a change made by a queryset ``update()``, which
  sends no signal). While Redis is unreachable the generation is unknown and the table is read
  from the database again every :data:`LOCAL_SECONDS`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache
from django.db import models, transaction
from django.utils.functional import cached_property
from redis.exceptions import NoScriptError, RedisError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a process trusts its copy of a table without asking whether it changed.
LOCAL_SECONDS = 1.0
#: A copy is reloaded after this long whatever the generation says.
MAX_AGE_SECONDS = 60.0

_CLIENTS: dict[tuple[Any, ...], Any] = {}
_CLIENTS_LOCK = threading.Lock()


class ProcessRedisCache(RedisCache):
    """Django's RedisCache sharing one client per process and location.

    redis-py's connection pool notices a fork (it checks the pid) and starts afresh in the
    child, so a client made before gunicorn or Celery forks stays safe to share.
    """

    @cached_property
    def _cache(self) -> Any:
        this: Any = self  # RedisCache sets these in __init__; django-stubs does not know them
        key = (tuple(this._servers), repr(sorted(this._options.items())))
        client = _CLIENTS.get(key)
        if client is None:
            with _CLIENTS_LOCK:
                client = _CLIENTS.get(key)
                if client is None:
                    client = this._class(this._servers, **this._options)
                    _CLIENTS[key] = client
        return client


class LeanScript:
    """A Lua script of the hot path, run by its SHA on a Redis connection of its own.

    redis-py's client takes each command through its retry wrapper, its argument checks and
    the pool's checkout, release and observability counters; for the one command a submit
    sends at a time that cost more CPU than the command (isolated, 53-87 us per script call
    against 33-43 us sent on a connection directly; more inside a request). This sends
    ``EVALSHA`` on a connection made with the client's pool settings, one per process, thread
    and pool shared by the scripts (a fork makes a new one), and reads the reply. ``NOSCRIPT`` (a restarted or flushed
    server) loads the script and runs it again. Any error leaves the connection closed (the
    next call connects it afresh) and is redis-py's own (``RedisError``), as callers expect.
    """

    #: The connections, per thread: {id(pool): (pid, pool, connection)}, shared by the scripts.
    _local = threading.local()

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        #: ``EVALSHA <sha>`` in the protocol's framing, made once (see :meth:`_pack`).
        self._head = _frame(b"EVALSHA") + _frame(self.sha.encode())

    def __call__(self, client: Any, *, keys: list[Any], args: list[Any]) -> Any:
        connection = self._connection(client)
        try:
            try:
                return self._run(connection, keys, args)
            except NoScriptError:
                connection.send_command("SCRIPT", "LOAD", self.source)
                connection.read_response()
                return self._run(connection, keys, args)
        except BaseException:
            # A reply half read, a timeout, a dropped socket: close it; the next call connects
            # the same connection object afresh.
            connection.disconnect()
            raise

    def _run(self, connection: Any, keys: list[Any], args: list[Any]) -> Any:
        packed = self._pack(connection, keys, args)
        if packed is None:
            connection.send_command("EVALSHA", self.sha, len(keys), *keys, *args)
        else:
            connection.send_packed_command([packed])
        return connection.read_response()

    def _pack(self, connection: Any, keys: list[Any], args: list[Any]) -> bytes | None:
        """The command as redis-py's packer frames it, without its per-argument calls: text
        in the connection's encoding, whole numbers in decimal (what its encoder does with
        them). None for any other value or a large command: redis-py packs those."""
        encoding = connection.encoder.encoding
        parts = [b"*%d\r\n" % (len(keys) + len(args) + 3), self._head, _frame(b"%d" % len(keys))]
        for value in (*keys, *args):
            if type(value) is str:
                parts.append(_frame(value.encode(encoding)))
            elif type(value) is int:
                parts.append(_frame(b"%d" % value))
            elif type(value) is bytes:
                parts.append(_frame(value))
            else:
                return None
        packed = b"".join(parts)
        return packed if len(packed) <= _PACK_LIMIT else None

    @classmethod
    def _connection(cls, client: Any) -> Any:
        pool = client.connection_pool
        held_by_pool = getattr(cls._local, "held", None)
        if held_by_pool is None:
            held_by_pool = cls._local.held = {}
        held = held_by_pool.get(id(pool))
        if held is None or held[0] != os.getpid() or held[1] is not pool:
            held = held_by_pool[id(pool)] = (os.getpid(), pool, pool.make_connection())
        return held[2]


#: Commands up to this size are framed by :meth:`LeanScript._pack` (redis-py's packer chunks
#: larger ones rather than copy them; a script's keys and counts are far smaller).
_PACK_LIMIT = 6000


def _frame(value: bytes) -> bytes:
    """One bulk string of the Redis protocol."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def redis_client() -> Any | None:
    """The process's raw redis-py client behind the default cache, or None (not Redis)."""
    backend = caches["default"]
    if isinstance(backend, RedisCache):
        return backend._cache.get_client(write=True)
    return None


@dataclass
class _Copy:
    value: Any
    generation: str | None
    loaded: float
    checked: float


_COPIES: dict[str, _Copy] = {}


def _generation_key(name: str) -> str:
    return f"config-generation:{name}"


def _generation(name: str) -> str | None:
    try:
        value = cache.get(_generation_key(name))
        if value is None:
            value = secrets.token_hex(8)
            if not cache.add(_generation_key(name), value, None):
                value = cache.get(_generation_key(name))
    except (RedisError, OSError):
        return None
    return None if value is None else str(value)


def config_cached(name: str, loader: Callable[[], T]) -> T:
    """The table ``name`` as ``loader`` reads it, from this process's copy when still current."""
    now = time.monotonic()
    copy = _COPIES.get(name)
    if copy is not None and now - copy.checked < LOCAL_SECONDS:
        return copy.value
    generation = _generation(name)
    if (
        copy is not None
        and generation is not None
        and generation == copy.generation
        and now - copy.loaded < MAX_AGE_SECONDS
    ):
        copy.checked = now
        return copy.value
    value = loader()
    _COPIES[name] = _Copy(value=value, generation=generation, loaded=now, checked=now)
    return value


def config_changed(name: str) -> None:
    """The table ``name`` changed: this process forgets its copy now, every process once the
    change is committed (a new generation in the shared cache)."""
    _COPIES.pop(name, None)

    def bump() -> None:
        _COPIES.pop(name, None)
        try:
            cache.set(_generation_key(name), secrets.token_hex(8), None)
        except (RedisError, OSError) as exc:
            logger.warning("could not publish a change of %s to other processes: %s", name, exc)

    transaction.on_commit(bump)


def config_cache_clear() -> None:
    """Forget every copy in this process (tests)."""
    _COPIES.clear()


class ConfigQuerySet(models.QuerySet[Any]):
    """For the model behind a :func:`config_cached` table: bulk writes (``update``,
    ``bulk_create``, ``bulk_update``), which send no signal, invalidate the table too.
    Subclass with ``cache_name`` set."""

    cache_name = ""

    def update(self, **kwargs: Any) -> int:
        changed = super().update(**kwargs)
        config_changed(self.cache_name)
        return changed

    def bulk_create(self, *args: Any, **kwargs: Any) -> list[Any]:
        created = super().bulk_create(*args, **kwargs)
        config_changed(self.cache_name)
        return created

    def bulk_update(self, *args: Any, **kwargs: Any) -> int:
        changed = super().bulk_update(*args, **kwargs)
        config_changed(self.cache_name)
        return changed
