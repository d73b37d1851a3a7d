"""The one module that sends Celery messages.

Services never import a Celery entry-point module: they call :func:`send_after_commit` with the
task's *name*, and the message leaves when the surrounding transaction commits (at once outside
one). That keeps imports one-way (entry points import services, never the reverse) and keeps
the STYLE rule 5 promise that a worker never sees a row that is not committed yet.

PostgreSQL is the source of truth: a message lost to a broker outage is only a delay, because
beat's safety nets (the sweeper, the due-deliveries pickup) re-drive whatever the rows say is
still owed. So a failed send is logged, never raised into the request that caused it.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from celery import Task, current_app, signals
from celery.utils.nodenames import anon_nodename
from celery.utils.saferepr import saferepr
from django.conf import settings
from django.db import transaction
from kombu.utils.json import dumps

logger = logging.getLogger(__name__)

#: After a send failed, further sends are skipped this long (the rows re-drive the work): during
#: a broker outage a request should not wait for the broker's connect timeout again and again.
SEND_RETRY_SECONDS = 5.0
_breaker_lock = threading.Lock()
_skip_until = 0.0


def _broker_presumed_down() -> bool:
    return time.monotonic() < _skip_until


def _broker_failed() -> None:
    global _skip_until
    with _breaker_lock:
        _skip_until = time.monotonic() + SEND_RETRY_SECONDS


def broker_breaker_reset() -> None:
    """Forget a past failure (tests, and a process that knows the broker is back)."""
    global _skip_until
    with _breaker_lock:
        _skip_until = 0.0


def send_now(
    name: str,
    *args: Any,
    countdown: float | None = None,
    queue: str | None = None,
    priority: int | None = None,
) -> None:
    """Send the message now. Use it only where no transaction can be open (a Celery task
    re-queueing itself); everything else goes through :func:`send_after_commit`."""
    if _broker_presumed_down():
        logger.info("broker presumed down; %s left to the safety net", name)
        return
    options: dict[str, Any] = {}
    if countdown:
        options["countdown"] = countdown
    if queue:
        options["queue"] = queue
    if priority is not None:
        # On Redis, 0 is served first and 9 last within a queue (kombu's priority steps).
        options["priority"] = priority
    try:
        if _lean_send(name, args, countdown=countdown, queue=queue, priority=priority):
            return
        # The registered task object when this process knows it (keeps task_always_eager and
        # the routing of the task's own options); otherwise a plain send by name.
        task = current_app.tasks.get(name)
        if task is not None:
            task.apply_async(args=args, **options)
        else:
            current_app.send_task(name, args=args, **options)
    except Exception:
        # The broker is down or refused the message: the durable rows re-drive the work.
        _broker_failed()
        logger.warning("could not send %s; the safety net will re-drive it", name, exc_info=True)


def send_after_commit(
    name: str,
    *args: Any,
    countdown: float | None = None,
    queue: str | None = None,
    priority: int | None = None,
    counted_from: float | None = None,
) -> None:
    """Send Celery task ``name`` with ``args`` once the current transaction commits.

    ``counted_from``: the ``time.monotonic()`` the ``countdown`` runs from (when what it
    counts down to was learnt), so the time until the commit is not added to it."""
    if counted_from is None:
        transaction.on_commit(
            lambda: send_now(name, *args, countdown=countdown, queue=queue, priority=priority)
        )
        return

    def send() -> None:
        left = max(0.0, (countdown or 0.0) - (time.monotonic() - counted_from))
        send_now(name, *args, countdown=left, queue=queue, priority=priority)

    transaction.on_commit(send)


# --- the lean send: Celery's message, pushed onto the broker's Redis list directly ------------
#
# ``apply_async`` costs a worker about 0.5 ms of CPU a message (issue 15, P2: a fifth of the
# pool processes' CPU in a burst of one-second jobs), nearly all of it outside the message:
# the call's option merging and routing, kombu's Queue and Exchange objects made per send, its
# producer pool, connection checks and retry wrappers. For a message Celery would send to a
# direct queue of a Redis broker, the lean send builds the same message: the protocol-2 headers
# ``amqp.as_task_v2`` makes (with the task's own options, routed by Celery's router, both worked
# out once per task), kombu's envelope (what its Redis transport stores: the body in base64,
# the delivery tag, the delivery info), and one ``LPUSH`` onto the list kombu would choose (the
# queue's, or its priority step's) on a connection of its own. Anything else (another broker,
# eager mode, sent events, publish signals with receivers, a task with its own
# ``apply_async``, an exchange that is not direct, a queue with an expiry, arguments JSON
# cannot carry as they are) goes through Celery. ``LEAN_PUBLISH = False`` turns it off.
# ``tests/core/test_lean_publish.py`` sends every message the product sends both ways and
# compares what Redis stored.

#: Settings under which Celery's message for a task is what the lean send builds.
_LEAN_CONFIG = {
    "task_protocol": 2,
    "task_serializer": "json",
    "task_compression": None,
    "task_always_eager": False,
    "task_send_sent_event": False,
    "task_inherit_parent_priority": False,
}
#: kombu's Redis transport: the priority steps of a queue's lists and their names' separator.
_PRIORITY_STEPS = (0, 3, 6, 9)
_PRIORITY_SEP = "\x06\x16"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@dataclass(frozen=True)
class _Route:
    """Where a task's messages go and what Celery's send adds to them (per task and options)."""

    queue: str
    keys: dict[int, bytes]  # the Redis list per priority step
    delivery_mode: int
    priority: int | None  # the route's own, if any
    time_limit: Any
    soft_time_limit: Any
    ignore_result: Any
    #: The task's signature check (``Task.apply_async`` runs it first), if it has one.
    check: Any = None
    #: The app's time zone (an ETA is written in it).
    timezone: Any = None


class _LeanState(threading.local):
    connection: Any = None
    pid: int = 0
    url: str = ""


_lean_local = _LeanState()
_lean_lock = threading.Lock()
#: (app id, broker URL) -> whether the lean send applies; (task name, queue) -> the router it
#: was worked out with (Celery's own, and its routes: replaced when they change) and the route.
_lean_usable: dict[tuple[int, str], bool] = {}
_lean_routes: dict[tuple[str, str | None], tuple[Any, Any, _Route | None]] = {}
_lean_pool: dict[str, Any] = {}


def lean_publish_reset() -> None:
    """Forget what the lean send learnt of the configuration (tests that change it)."""
    with _lean_lock:
        _lean_usable.clear()
        _lean_routes.clear()
        _lean_pool.clear()
    _lean_local.connection = None


def _lean_applies(app: Any) -> bool:
    url = app.conf.broker_url
    known = _lean_usable.get((id(app), url))
    if known is not None:
        return known and not app.conf.task_always_eager
    conf = app.conf
    options = conf.broker_transport_options or {}
    usable = (
        isinstance(url, str)
        and url.split("://", 1)[0] in ("redis", "rediss")
        and ";" not in url  # kombu's failover list
        and all(conf.get(name) == value for name, value in _LEAN_CONFIG.items())
        and not any(k in options for k in ("priority_steps", "sep", "global_keyprefix"))
    )
    with _lean_lock:
        _lean_usable[(id(app), url)] = usable
    return usable


def _lean_route(app: Any, name: str, queue: str | None) -> _Route | None:
    key = (name, queue)
    router = app.amqp.router  # what ``send_task`` routes with
    known = _lean_routes.get(key)
    if known is not None and known[0] is router and known[1] is router.routes:
        return known[2]
    route = _resolve_route(app, name, queue)
    with _lean_lock:
        _lean_routes[key] = (router, router.routes, route)
    return route


def _resolve_route(app: Any, name: str, queue: str | None) -> _Route | None:
    """What ``send_task`` and ``send_task_message`` decide for the task: its queue (None when
    the message would not simply go onto a direct queue's list)."""
    task_type = app.tasks.get(name)
    options: dict[str, Any] = {}
    if task_type is not None:
        # ``Task.apply_async``: the task's options, and its own ignore_result.
        if (
            type(task_type).shadow_name is not Task.shadow_name
            or getattr(task_type, "_dump_pydantic_arguments", None) is not None
        ):
            return None
        options = {k: v for k, v in task_type._get_exec_options().items() if v is not None}
        options.setdefault("ignore_result", task_type.ignore_result)
    if queue:
        options["queue"] = queue
    time_limit = options.pop("time_limit", None)
    soft_time_limit = options.pop("soft_time_limit", None)
    if options.pop("expires", None) is not None:
        return None
    ignore_result = options.pop("ignore_result", None)
    routed = app.amqp.router.route(options, name, (), {}, task_type)
    target = routed.pop("queue", None)
    priority = routed.pop("priority", None)
    if routed.pop("serializer", "json") != "json" or routed.pop("compression", None):
        return None
    if set(routed) - {"exchange", "routing_key", "exchange_type"}:
        return None  # another option travelling with the message: Celery's send adds it
    if target is None or isinstance(target, str):
        return None
    exchange = target.exchange
    exchange_type = routed.get("exchange_type") or getattr(exchange, "type", "direct")
    if exchange_type != "direct" or (routed.get("exchange") and routed.get("routing_key")):
        return None
    if target.expires or target.message_ttl or target.max_length or target.queue_arguments:
        return None
    mode = getattr(exchange, "delivery_mode", None) or app.conf.task_default_delivery_mode
    delivery_mode = {"persistent": 2, "transient": 1}.get(mode, mode)
    if delivery_mode not in (1, 2):
        return None
    qname = target.name
    keys = {
        step: (f"{qname}{_PRIORITY_SEP}{step}" if step else qname).encode()
        for step in _PRIORITY_STEPS
    }
    return _Route(
        queue=qname,
        keys=keys,
        delivery_mode=delivery_mode,
        priority=priority,
        time_limit=time_limit,
        soft_time_limit=soft_time_limit,
        ignore_result=ignore_result,
        check=getattr(task_type, "__header__", None)
        if getattr(task_type, "typing", False)
        else None,
        timezone=app.timezone,
    )


_SIMPLE = (str, int, bool, type(None))
_ORIGIN: list[Any] = [0, ""]


def _args_repr(app: Any, args: tuple[Any, ...]) -> str:
    """Celery's ``argsrepr`` (``saferepr``): for short arguments of plain values, ``repr``."""
    if all(
        type(a) in _SIMPLE or (type(a) in (list, tuple) and all(type(v) in _SIMPLE for v in a))
        for a in args
    ):
        text = repr(tuple(args))
        if len(text) <= 256 and text.isascii() and "\\" not in text:
            return text
    return saferepr(args, app.amqp.argsrepr_maxsize, maxlevels=app.conf.task_repr_maxlevels)


def _origin() -> str:
    """Celery's ``anon_nodename()`` (the sending process), once per process."""
    if _ORIGIN[0] != os.getpid():
        _ORIGIN[:] = [os.getpid(), anon_nodename()]
    return str(_ORIGIN[1])


def _priority_step(priority: int) -> int:
    """kombu's Redis transport: the highest step at or below ``priority``."""
    step = _PRIORITY_STEPS[0]
    for candidate in _PRIORITY_STEPS:
        if candidate <= priority:
            step = candidate
    return step


def _lean_send(
    name: str,
    args: tuple[Any, ...],
    *,
    countdown: float | None,
    queue: str | None,
    priority: int | None,
) -> bool:
    """Send as Celery would, without its publish machinery (see above). False: not applicable,
    nothing sent; the caller sends through Celery."""
    if not getattr(settings, "LEAN_PUBLISH", True):
        return False
    app = current_app
    if not _lean_applies(app):
        return False
    if signals.before_task_publish.receivers or signals.after_task_publish.receivers:
        return False
    task = app.tasks.get(name)
    if task is not None and (
        "apply_async" in vars(task) or type(task).apply_async is not Task.apply_async
    ):
        return False  # its own apply_async (a subclass, an instrumentation, a test's record)
    route = _lean_route(app, name, queue)
    if route is None:
        return False
    if route.check is not None:
        route.check(*args)  # a TypeError, as ``apply_async`` raises it
    try:
        body = dumps((list(args), {}, _EMBED))
    except TypeError:
        return False
    task_id = str(uuid.uuid4())
    root_id = parent_id = None
    parent = app.current_worker_task
    if parent:
        root_id = parent.request.root_id or parent.request.id
        parent_id = parent.request.id
    # The headers ``amqp.as_task_v2`` makes (protocol 2), from what was worked out once.
    eta = None
    if countdown:
        eta = (datetime.now(tz=route.timezone) + timedelta(seconds=countdown)).isoformat()
    headers = {
        "lang": "py",
        "task": name,
        "id": task_id,
        "shadow": None,
        "eta": eta,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [route.time_limit, route.soft_time_limit],
        "root_id": root_id or task_id,
        "parent_id": parent_id,
        "argsrepr": _args_repr(app, args),
        "kwargsrepr": "{}",
        "origin": _origin(),
        "ignore_result": route.ignore_result,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    properties: dict[str, Any] = {"correlation_id": task_id, "reply_to": app.thread_oid}
    level = priority if priority is not None else route.priority
    properties.update(
        delivery_mode=route.delivery_mode,
        priority=level or 0,
        body_encoding="base64",
        delivery_tag=str(uuid.uuid4()),
        delivery_info={"exchange": "", "routing_key": route.queue},
    )
    message = dumps(
        {
            "body": base64.b64encode(body.encode()).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": properties,
        }
    )
    _lpush(app, route.keys[_priority_step(int(level or 0))], message.encode())
    return True


def _lpush(app: Any, key: bytes, value: bytes) -> None:
    """One ``LPUSH`` on this thread's connection to the broker; a connection found broken
    (a restarted server) is made afresh once before the error is raised."""
    command = b"*3\r\n$5\r\nLPUSH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        len(key),
        key,
        len(value),
        value,
    )
    for attempt in (1, 2):
        connection = _broker_connection(app)
        try:
            connection.send_packed_command([command])
            connection.read_response()
            return
        except Exception:
            connection.disconnect()
            if attempt == 2:
                raise


def _broker_connection(app: Any) -> Any:
    local = _lean_local
    url = app.conf.broker_url
    if local.connection is None or local.pid != os.getpid() or local.url != url:
        pool = _lean_pool.get(url)
        if pool is None:
            timeout = float(getattr(settings, "REDIS_SOCKET_TIMEOUT", 2.0))
            pool = redis.ConnectionPool.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
            with _lean_lock:
                _lean_pool[url] = pool
        local.connection = pool.make_connection()
        local.pid = os.getpid()
        local.url = url
    return local.connection
