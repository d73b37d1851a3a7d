"""Outbound HTTP to customer-supplied URLs, guarded against SSRF (SPEC §7).

Every request to a URL a customer gave us (webhook endpoints, per-task hooks, image URLs for
describe/blend/imagine, an operator's mjproxy upstream) goes through :func:`safe_request` or
:func:`safe_download`. The guard:

1. parses the URL once (http/https only, no userinfo, no percent-encoded or odd host names);
2. resolves the host itself and refuses the request if *any* resolved address is not a public
   unicast address (loopback, private, link-local, CGNAT, multicast, reserved, unspecified,
   metadata, IPv6 ULA/link-local/site-local, IPv4-mapped/compatible, NAT64 and 6to4 forms that
   embed such an address). Integer, octal and hex spellings such as ``http://2130706433/`` are
   caught because the *resolved* address is checked, never the string;
3. connects to the checked address only: the HTTP library is given a network backend that
   ignores the host name it is asked to connect to and dials the pinned address, so there is no
   second DNS lookup to rebind. The ``Host`` header, TLS SNI and certificate verification still
   use the host name from the URL;
4. never follows redirects, applies connect/read timeouts and a hard total deadline (enforced on
   every socket operation, so a slow-drip server cannot hold a worker), and stops reading after
   the response size cap.

``settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES`` lifts the refusal of loopback and private ranges
(development and tests only). Link-local and cloud metadata addresses (169.254.0.0/16,
fe80::/10, fd00:ec2::254, 100.100.100.200, in any embedded spelling) stay refused even then:
nothing legitimate lives there, and one request to them can leak the host's credentials.
Everything else (scheme, parsing, pinning, no redirects, limits) stays in force.

Numeric host spellings (``http://2130706433/``, ``http://0/``, ``http://0x7f.1/``) are IPv4
literals to every HTTP client and resolver, so they are read as such when the URL is parsed:
the submit-time check (no DNS) refuses them like ``127.0.0.1``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from django.conf import settings

from .errors import ServiceError, ValidationFailed

if TYPE_CHECKING:
    from . import http_wire

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOWED_SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_LENGTH = 2048
MAX_HOST_LENGTH = 253
# Host names made of these characters only (after IDNA encoding); anything else (percent
# escapes, backslashes, underscores) is a parser-differential trick or not a host at all.
_HOSTNAME = re.compile(
    r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\.?$"
)
_FORBIDDEN_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


class UnsafeURL(ValidationFailed):
    """The URL may never be requested (bad scheme or syntax, or a non-public address). Permanent."""

    code = "unsafe_url"
    default_message = "The URL is not allowed."
    permanent = True


class ResponseTooLarge(ValidationFailed):
    """The response body exceeded the caller's cap. Permanent."""

    code = "response_too_large"
    default_message = "The response is too large."
    permanent = True


class OutboundHTTPError(ServiceError):
    """The request could not be completed (refused, timed out, TLS failure, bad status).

    Temporary unless ``permanent`` says otherwise (a 4xx or redirect from ``safe_download``).
    """

    code = "outbound_request_failed"
    http_status = 502
    default_message = "The remote server could not be reached."

    def __init__(
        self, message: str | None = None, *, status: int | None = None, permanent: bool = False
    ) -> None:
        super().__init__(message, details={"status": status} if status is not None else None)
        self.status = status
        self.permanent = permanent


@dataclass(frozen=True)
class Timeout:
    """Seconds. ``total`` bounds the whole exchange: the time the DNS lookup took counts
    against it, though the lookup itself can only be as short as the system resolver allows."""

    connect: float = 5.0
    read: float = 10.0
    total: float = 15.0


DEFAULT_TIMEOUT = Timeout()


@dataclass(frozen=True)
class CheckedURL:
    """A URL that passed the guard, with the addresses it may be connected to."""

    url: str
    scheme: str
    host: str  # IDNA-encoded host name or IP literal (IPv6 without brackets)
    port: int
    target: bytes  # path and query, as sent on the request line
    addresses: tuple[str, ...]

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port != DEFAULT_PORTS[self.scheme]:
            return f"{host}:{self.port}"
        return host


@dataclass(frozen=True)
class SafeResponse:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes  # at most max_response_bytes
    truncated: bool
    elapsed_ms: int
    address: str  # the address we actually connected to

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


# --- Address policy -----------------------------------------------------------------------------

_BLOCKED_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host on Linux
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata (169.254.169.254)
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, includes broadcast
    )
)
_BLOCKED_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/96",  # unspecified, loopback and the deprecated IPv4-compatible form
        "100::/64",  # discard
        "2001::/32",  # Teredo: tunnels to an arbitrary IPv4 address
        "2001:db8::/32",
        "64:ff9b:1::/48",  # local-use NAT64
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
#: Refused even when private addresses are allowed: link-local ranges and the instance metadata
#: services of the clouds (AWS, GCP and Azure use 169.254.169.254; AWS's IPv6 endpoint is
#: fd00:ec2::254; Alibaba's is 100.100.100.200; Oracle's 192.0.0.192).
_NEVER = (
    ipaddress.IPv4Network("169.254.0.0/16"),
    ipaddress.IPv4Network("100.100.100.200/32"),
    ipaddress.IPv4Network("192.0.0.192/32"),
    ipaddress.IPv6Network("fe80::/10"),
    ipaddress.IPv6Network("fd00:ec2::254/128"),
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")


def address_is_public(address: IPAddress) -> bool:
    """True only for a global unicast address that is safe for us to connect to."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address_is_public(address.ipv4_mapped)
        if address in _NAT64:
            return address_is_public(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address.sixtofour is not None:
            return address_is_public(address.sixtofour)
        if any(address in net for net in _BLOCKED_V6) or address not in _GLOBAL_UNICAST_V6:
            return False
    elif any(address in net for net in _BLOCKED_V4):
        return False
    return bool(
        address.is_global
        and not address.is_private
        and not address.is_loopback
        and not address.is_link_local
        and not address.is_multicast
        and not address.is_reserved
        and not address.is_unspecified
    )


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def address_is_never_allowed(address: IPAddress) -> bool:
    """True for link-local and metadata addresses, which no setting opens."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None and address_is_never_allowed(embedded):
            return True
    return any(address.version == net.version and address in net for net in _NEVER)


def _allow_private(allow_private: bool | None) -> bool:
    if allow_private is None:
        return bool(getattr(settings, "WEBHOOKS_ALLOW_PRIVATE_ADDRESSES", False))
    return allow_private


# --- Parsing and resolution ----------------------------------------------------------------------


_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")


def _numeric_label(label: str) -> int:
    if label.startswith("0x"):
        return int(label[2:] or "0", 16)
    if len(label) > 1 and label.startswith("0"):
        if not label.isdigit() or "8" in label or "9" in label:
            raise UnsafeURL("The host name is not valid.")
        return int(label, 8)
    return int(label)


def _numeric_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a numeric host spelling stands for, as browsers and ``inet_aton`` read
    it (``2130706433``, ``0``, ``127.1``, ``0x7f.0.0.1``, ``0177.0.0.1``); None for a name.

    A host whose last label is a number is an IPv4 address or invalid, never a name (the URL
    standard's rule; no top-level domain is numeric).
    """
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if not _NUMERIC_LABEL.fullmatch(labels[-1]):
        return None
    if len(labels) > 4 or not all(_NUMERIC_LABEL.fullmatch(label) for label in labels):
        raise UnsafeURL("The host name is not valid.")
    numbers = [_numeric_label(label) for label in labels]
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        raise UnsafeURL("The host name is not valid.")
    value = last
    for index, number in enumerate(head):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _httpx() -> ModuleType:
    """httpx, imported where a URL is first parsed rather than with this module.

    httpx and httpcore (with h11, anyio, idna and the standard library's cookie and urllib
    modules) are about 3.5 MiB of every process that imports this module, which the apps'
    services do at start-up; a Celery pool process that never calls out never needs them
    (issue 15, P6). The wire half of this module, built on httpcore, is :mod:`.http_wire`.
    """
    import httpx  # lazy: not with this module, so a worker never calling out never loads it

    return httpx


def _wire() -> ModuleType:
    """:mod:`.http_wire` (httpcore), imported with the first request (see :func:`_httpx`)."""
    from . import http_wire  # lazy: httpcore loads with the first request, see _httpx()

    return http_wire


@contextlib.contextmanager
def _outbound_errors(host: str) -> Iterator[None]:
    """httpcore's and the socket's failures (in :mod:`.http_wire`) as OutboundHTTPError."""
    import httpcore  # imported by .http_wire already

    try:
        yield
    except httpcore.TimeoutException as exc:
        raise OutboundHTTPError(f"The request to {host} timed out.") from exc
    except httpcore.ConnectError as exc:
        raise OutboundHTTPError(str(exc) or f"Could not connect to {host}.") from exc
    except (httpcore.NetworkError, httpcore.ProtocolError, OSError) as exc:
        raise OutboundHTTPError(f"The request to {host} failed: {exc}") from exc


def _parse(url: str) -> tuple[str, str, int, bytes, IPAddress | None]:
    if not isinstance(url, str) or not url:
        raise UnsafeURL("A URL is required.")
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeURL(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    if _FORBIDDEN_URL_CHARS.search(url):
        raise UnsafeURL("The URL contains spaces, control characters or backslashes.")
    httpx = _httpx()
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise UnsafeURL(f"The URL is not valid: {exc}") from exc
    scheme = parsed.scheme
    if scheme not in ALLOWED_SCHEMES:
        raise UnsafeURL("Only http and https URLs are allowed.")
    if parsed.userinfo:
        raise UnsafeURL("URLs with a user name or password are not allowed.")
    try:
        host = parsed.raw_host.decode("ascii").lower()
    except UnicodeDecodeError as exc:  # pragma: no cover - httpx IDNA-encodes host names
        raise UnsafeURL("The host name is not valid.") from exc
    if not host:
        raise UnsafeURL("The URL has no host.")
    literal: IPAddress | None
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = _numeric_ipv4(host)
    # Longer than DNS allows: no resolver will ever answer, so this is permanent, not a
    # lookup failure to retry.
    if literal is None and (len(host.rstrip(".")) > MAX_HOST_LENGTH or not _HOSTNAME.match(host)):
        raise UnsafeURL("The host name is not valid.") from None
    if isinstance(literal, ipaddress.IPv6Address) and literal.scope_id:
        raise UnsafeURL("IPv6 zone identifiers are not allowed.")
    port = parsed.port if parsed.port is not None else DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        raise UnsafeURL("The port is not valid.")
    target = parsed.raw_path or b"/"
    return scheme, host, port, target, literal


def _is_localhost_name(host: str) -> bool:
    # RFC 6761: these names are loopback whatever DNS says; refuse them before any lookup.
    name = host.rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


def resolve(host: str, port: int) -> list[IPAddress]:
    """All addresses a host name resolves to, in resolver order, without duplicates."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise OutboundHTTPError(f"The host name {host} could not be resolved.") from exc
    addresses: list[IPAddress] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        raw = str(sockaddr[0])
        try:
            address = ipaddress.ip_address(raw.split("%", 1)[0])
        except ValueError:
            continue
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise OutboundHTTPError(f"The host name {host} has no addresses.")
    return addresses


def check_url(
    url: str, *, allow_private: bool | None = None, resolve_host: bool = True
) -> CheckedURL:
    """Parse and vet a URL; with ``resolve_host`` also resolve it and vet every address.

    Raises :class:`UnsafeURL` when the URL may never be requested and
    :class:`OutboundHTTPError` when the host does not resolve (which may be temporary).
    ``resolve_host=False`` checks only what the URL itself says (for a quick check at submit
    time); the full check runs again on every request anyway.
    """
    scheme, host, port, target, literal = _parse(url)
    private_ok = _allow_private(allow_private)
    if not private_ok and _is_localhost_name(host):
        raise UnsafeURL("URLs may not point at localhost.")
    if literal is not None:
        addresses = [literal]
        host = str(literal)  # connect, and send Host, as the address the spelling stands for
    elif resolve_host:
        addresses = resolve(host, port)
    else:
        addresses = []
    for address in addresses:
        if not private_ok and not address_is_public(address):
            raise UnsafeURL(
                "The URL resolves to a private, loopback, link-local or otherwise "
                "non-public address, which is not allowed."
            )
        if address_is_never_allowed(address):
            raise UnsafeURL(
                "The URL points at a link-local or cloud metadata address, which is never "
                "allowed, not even with private addresses allowed."
            )
    return CheckedURL(
        url=url,
        scheme=scheme,
        host=host,
        port=port,
        target=target,
        addresses=tuple(str(a) for a in addresses),
    )


# --- Public API (the connections themselves: apps/core/http_wire.py) -----------------------------------------------------------------------------------


def safe_request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    content: bytes | None = None,
    timeout: Timeout = DEFAULT_TIMEOUT,
    max_response_bytes: int = 64 * 1024,
    allow_private: bool | None = None,
) -> SafeResponse:
    """One request to a customer URL, with the guard described in the module docstring.

    Any status code is returned as is (3xx included: redirects are never followed). Raises
    :class:`UnsafeURL` (permanent) or :class:`OutboundHTTPError` (usually temporary).
    """
    wire = _wire()
    started = time.monotonic()
    deadline = wire.Deadline(timeout.total)
    checked = check_url(url, allow_private=allow_private)
    backend = wire.PinnedBackend(checked.addresses, deadline, timeout.connect)
    request = wire.build_request(checked, method, headers, content, timeout, keep_alive=False)
    with (
        _outbound_errors(checked.host),
        wire.open_connection(checked, backend) as connection,
    ):
        status, response_headers, body, truncated = wire.exchange(
            connection, request, max_response_bytes
        )
    return SafeResponse(
        status=status,
        headers=response_headers,
        body=body,
        truncated=truncated,
        elapsed_ms=int((time.monotonic() - started) * 1000),
        address=backend.connected_to or "",
    )


class SafeSession:
    """:func:`safe_request` with keep-alive connections, for a process that calls many URLs.

    The guard is the same for every request, pooled or not: the URL is parsed and its host
    resolved and vetted again each time, and an idle connection is reused only when the
    address it is connected to is one of the addresses just vetted for this request (a name
    that now resolves elsewhere, or to a refused address, never reuses the old connection).
    New connections dial the vetted addresses only, as :func:`safe_request` does. Redirects
    are never followed; each request has its own connect/read timeouts and total deadline.

    Thread-safe; a process forked after use starts with an empty pool.
    """

    def __init__(self, *, max_idle_per_origin: int = 8, idle_seconds: float = 30.0) -> None:
        self.max_idle_per_origin = max_idle_per_origin
        self.idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, str, int], list[http_wire.Pooled]] = {}
        self._pid = os.getpid()
        self.connections_opened = 0

    def _take(self, checked: CheckedURL) -> http_wire.Pooled | None:
        key = (checked.scheme, checked.host, checked.port)
        stale: list[http_wire.Pooled] = []
        found: http_wire.Pooled | None = None
        with self._lock:
            if self._pid != os.getpid():  # forked: the sockets belong to the parent
                self._idle = {}
                self._pid = os.getpid()
            idle = self._idle.get(key, [])
            while idle:
                pooled = idle.pop()
                if (
                    pooled.address in checked.addresses
                    and pooled.connection.is_idle()
                    and not pooled.connection.has_expired()
                ):
                    found = pooled
                    break
                stale.append(pooled)
        for pooled in stale:
            pooled.connection.close()
        return found

    def _give_back(self, checked: CheckedURL, pooled: http_wire.Pooled) -> None:
        if not pooled.connection.is_idle():
            pooled.connection.close()
            return
        key = (checked.scheme, checked.host, checked.port)
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.max_idle_per_origin and self._pid == os.getpid():
                idle.append(pooled)
                return
        pooled.connection.close()

    def close(self) -> None:
        with self._lock:
            pools, self._idle = self._idle, {}
        for idle in pools.values():
            for pooled in idle:
                pooled.connection.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
        max_response_bytes: int = 64 * 1024,
        allow_private: bool | None = None,
    ) -> SafeResponse:
        """Like :func:`safe_request`, over a kept-alive connection when one may be reused."""
        wire = _wire()
        started = time.monotonic()
        checked = check_url(url, allow_private=allow_private)
        request = wire.build_request(checked, method, headers, content, timeout, keep_alive=True)
        pooled = self._take(checked)
        if pooled is not None:
            # Each request has its own total deadline, also on a reused connection.
            pooled.backend.deadline.expires = time.monotonic() + timeout.total
        else:
            backend = wire.PinnedBackend(
                checked.addresses, wire.Deadline(timeout.total), timeout.connect
            )
            pooled = wire.Pooled(
                wire.open_connection(checked, backend, self.idle_seconds), backend, ""
            )
        try:
            with _outbound_errors(checked.host):
                status, response_headers, body, truncated = wire.exchange(
                    pooled.connection, request, max_response_bytes
                )
        except BaseException:
            pooled.connection.close()
            raise
        if not pooled.address:
            pooled.address = pooled.backend.connected_to or ""
            with self._lock:
                self.connections_opened += 1
        address = pooled.address
        if truncated:  # the rest of the answer is still on the wire
            pooled.connection.close()
        else:
            self._give_back(checked, pooled)
        return SafeResponse(
            status=status,
            headers=response_headers,
            body=body,
            truncated=truncated,
            elapsed_ms=int((time.monotonic() - started) * 1000),
            address=address,
        )


def safe_download(
    url: str,
    *,
    max_bytes: int,
    timeout: Timeout = DEFAULT_TIMEOUT,
    allow_private: bool | None = None,
) -> bytes:
    """Fetch a customer URL's body (an image, say). Anything but a 2xx is an error.

    Raises :class:`ResponseTooLarge` when the body exceeds ``max_bytes``; redirects and 4xx are
    permanent :class:`OutboundHTTPError`, 5xx and network failures temporary ones.
    """
    response = safe_request(
        "GET",
        url,
        headers={"Accept": "*/*"},
        timeout=timeout,
        max_response_bytes=max_bytes + 1,
        allow_private=allow_private,
    )
    if not 200 <= response.status < 300:
        if 300 <= response.status < 400:
            message = (
                f"The URL answered with a redirect ({response.status}), which is not followed."
            )
        else:
            message = f"The URL answered with HTTP {response.status}."
        raise OutboundHTTPError(message, status=response.status, permanent=response.status < 500)
    if response.truncated or len(response.body) > max_bytes:
        raise ResponseTooLarge(f"The download is larger than {max_bytes} bytes.")
    return response.body


# --- Whether a failed request left (for callers whose request must not run twice) ---------------


def request_never_sent(exc: OutboundHTTPError) -> bool:
    """True when a failed :func:`safe_request` / :class:`SafeSession` request certainly never
    reached the server: its host did not resolve, or no connection (TCP, then TLS) was made.
    False when the request may have left (a read or write failed, a timeout after connecting),
    so a caller whose request must not run twice cannot tell whether it did."""
    import httpcore  # lazy: loaded with the first request, which raised ``exc`` (see _httpx)

    if exc.status is not None:
        return False  # the server answered
    cause = exc.__cause__
    if cause is None or isinstance(cause, socket.gaierror | UnicodeError):
        return True  # resolve(): no address, or the name did not resolve
    return isinstance(cause, httpcore.ConnectError | httpcore.ConnectTimeout)
