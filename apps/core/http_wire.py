"""The wire half of :mod:`apps.core.http`: httpcore dialling only the addresses the guard vetted.

Imported by :mod:`apps.core.http` with the first outbound request, not with that module:
httpcore and httpx are about 3.5 MiB of every process, which a Celery pool process that never
calls out does not need (issue 15, P6). Everything here takes a :class:`~apps.core.http.CheckedURL`
(the URL already parsed, resolved and vetted); nothing here resolves a host name.
"""

from __future__ import annotations

import functools
import select
import socket
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import certifi
import httpcore

if TYPE_CHECKING:
    from .http import CheckedURL, Timeout

USER_AGENT = "mjgate/1.0 (+webhooks)"


@functools.lru_cache(maxsize=1)
def _default_ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certifi.where())


def ssl_context() -> ssl.SSLContext:
    """The context used for https. A function so tests can trust their own certificate."""
    return _default_ssl_context()


def open_socket(address: str, port: int, timeout: float) -> socket.socket:
    """Open a TCP connection to an IP literal. The only place this module dials out."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((address, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


class Deadline:
    def __init__(self, total: float) -> None:
        self.expires = time.monotonic() + total

    def clamp(self, timeout: float | None, exc: type[Exception]) -> float:
        remaining = self.expires - time.monotonic()
        if remaining <= 0:
            raise exc("The total time allowed for the request ran out.")
        return remaining if timeout is None else min(timeout, remaining)


class PinnedStream(httpcore.NetworkStream):
    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        self._sock = sock
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._sock.settimeout(self._deadline.clamp(timeout, httpcore.ReadTimeout))
        try:
            return self._sock.recv(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        self._sock.settimeout(self._deadline.clamp(timeout, httpcore.WriteTimeout))
        try:
            self._sock.sendall(buffer)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    def close(self) -> None:
        self._sock.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        # server_hostname is the URL's host name: SNI and certificate checks use it, not the
        # pinned address.
        self._sock.settimeout(self._deadline.clamp(timeout, httpcore.ConnectTimeout))
        try:
            wrapped = ssl_context.wrap_socket(self._sock, server_hostname=server_hostname)
        except TimeoutError as exc:
            self._sock.close()
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except (ssl.SSLError, OSError) as exc:
            self._sock.close()
            raise httpcore.ConnectError(str(exc)) from exc
        return PinnedStream(wrapped, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._sock if isinstance(self._sock, ssl.SSLSocket) else None
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "socket":
            return self._sock
        if info == "is_readable":
            # An idle kept-alive connection with something to read has been closed by the
            # server (httpcore then does not reuse it).
            try:
                poller = select.poll()
                poller.register(self._sock, select.POLLIN)
                return bool(poller.poll(0))
            except (OSError, ValueError):
                return True
        return None


class PinnedBackend(httpcore.NetworkBackend):
    """Connects to the vetted addresses only, whatever host name it is asked for."""

    def __init__(self, addresses: Iterable[str], deadline: Deadline, connect_timeout: float):
        self.addresses = tuple(addresses)
        self.deadline = deadline
        self.connect_timeout = connect_timeout
        self.connected_to: str | None = None

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        del host  # deliberately unused: resolving it again would undo the check
        error: Exception = httpcore.ConnectError("No address to connect to.")
        for address in self.addresses:
            limit = self.deadline.clamp(
                min(timeout or self.connect_timeout, self.connect_timeout), httpcore.ConnectTimeout
            )
            try:
                sock = open_socket(address, port, limit)
            except TimeoutError as exc:
                error = httpcore.ConnectTimeout(f"Connecting to {address} timed out.")
                error.__cause__ = exc
                continue
            except OSError as exc:
                error = httpcore.ConnectError(f"Connecting to {address} failed: {exc}")
                error.__cause__ = exc
                continue
            self.connected_to = address
            return PinnedStream(sock, self.deadline)
        raise error

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:  # pragma: no cover - never configured
        raise httpcore.ConnectError("Unix sockets are not allowed.")

    def sleep(self, seconds: float) -> None:  # pragma: no cover - retries are disabled
        time.sleep(seconds)


def build_request(
    checked: CheckedURL,
    method: str,
    headers: Mapping[str, str] | None,
    content: bytes | None,
    timeout: Timeout,
    *,
    keep_alive: bool,
) -> httpcore.Request:
    request_headers: list[tuple[bytes, bytes]] = [
        (b"Host", checked.host_header.encode("ascii")),
        (b"User-Agent", USER_AGENT.encode()),
        (b"Accept-Encoding", b"identity"),
    ]
    if not keep_alive:
        request_headers.append((b"Connection", b"close"))
    given = {name.lower() for name in (headers or {})}
    request_headers = [h for h in request_headers if h[0].decode().lower() not in given]
    for name, value in (headers or {}).items():
        if name.lower() in ("host", "content-length", "transfer-encoding"):
            continue
        request_headers.append((name.encode("latin-1"), str(value).encode("latin-1")))
    if content is not None or method.upper() in ("POST", "PUT", "PATCH"):
        request_headers.append((b"Content-Length", str(len(content or b"")).encode()))
    return httpcore.Request(
        method.upper().encode("ascii"),
        httpcore.URL(
            scheme=checked.scheme.encode("ascii"),
            host=checked.host.encode("ascii"),
            port=checked.port,
            target=checked.target,
        ),
        headers=request_headers,
        content=content or b"",
        extensions={
            "timeout": {
                "connect": timeout.connect,
                "read": timeout.read,
                "write": timeout.read,
                "pool": timeout.connect,
            }
        },
    )


def open_connection(
    checked: CheckedURL, backend: PinnedBackend, keepalive_expiry: float | None = None
) -> httpcore.HTTPConnection:
    return httpcore.HTTPConnection(
        origin=httpcore.Origin(
            checked.scheme.encode("ascii"), checked.host.encode("ascii"), checked.port
        ),
        ssl_context=ssl_context() if checked.scheme == "https" else None,
        network_backend=backend,
        http1=True,
        http2=False,
        retries=0,
        keepalive_expiry=keepalive_expiry,
    )


def exchange(
    connection: httpcore.HTTPConnection, request: httpcore.Request, max_response_bytes: int
) -> tuple[int, dict[str, str], bytes, bool]:
    """Send ``request`` and read at most ``max_response_bytes`` of the answer."""
    body = bytearray()
    truncated = False
    response = connection.handle_request(request)
    try:
        for chunk in response.iter_stream():
            room = max_response_bytes - len(body)
            if len(chunk) > room:
                body.extend(chunk[:room])
                truncated = True
                break
            body.extend(chunk)
    finally:
        response.close()
    response_headers: dict[str, str] = {}
    for raw_name, raw_value in response.headers:
        response_headers[raw_name.decode("latin-1").lower()] = raw_value.decode("latin-1")
    return response.status, response_headers, bytes(body), truncated


@dataclass
class Pooled:
    connection: httpcore.HTTPConnection
    backend: PinnedBackend
    address: str
