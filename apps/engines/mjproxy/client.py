"""HTTP calls to one midjourney-proxy-compatible upstream (SPEC §5).

Every call goes through :func:`apps.core.http.safe_request` with ``allow_private=True``. The
``base_url`` is operator input, typed into the admin or ``createupstream`` by the person who
runs the platform — typically a midjourney-proxy on the same private network (10.x, a docker
service name, 127.0.0.1) — so refusing private addresses would refuse the common setup while
protecting against nobody: a customer can never choose this URL — except the ``base_url`` of
an organization's own account (bring your own accounts), which gets the full guard
(``allow_private``). What we still want from the
guarded client is everything else it enforces: explicit connect/read/total timeouts on every
call, no redirects followed (a redirect could otherwise carry our ``mj-api-secret`` to another
host), pinned addresses and a cap on the response size.

Errors are classified for the lifecycle:

* the request certainly never reached the upstream (connection refused, connect timeout,
  DNS failure) or the upstream said it did not take it (401/403, 429, 502/503 from a proxy in
  front of it) → :class:`UpstreamUnavailable` (a ``TemporaryEngineError``; the task is
  queued again);
* the request was sent but the answer never came (read timeout, connection reset, a 500 or a
  gateway timeout, after which the upstream may have acted on it) →
  :class:`UpstreamOutcomeUnknown` (a ``SubmitOutcomeUnknown``): for a submit, the job must
  be looked up before it may be sent again, or it could run twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from apps.core.http import OutboundHTTPError, ResponseTooLarge, Timeout, UnsafeURL, safe_request
from apps.engines.base import PermanentEngineError, SubmitOutcomeUnknown, TemporaryEngineError
from apps.tasks.enums import ErrorCode

#: Response bodies we accept from the upstream (task lists with buttons for a full batch).
MAX_RESPONSE_BYTES = 16 * 1024 * 1024


class UpstreamUnavailable(TemporaryEngineError):
    """The upstream did not take the request (down, overloaded, refusing our credentials)."""


class UpstreamOutcomeUnknown(SubmitOutcomeUnknown):
    """The request was sent but no answer came back: it may or may not have been acted on.

    For a submit the lifecycle keeps the task assigned and asks ``find_job`` next time; any
    other call (a poll) simply tries again later.
    """


@dataclass(frozen=True)
class Answer:
    """A decoded JSON answer. ``status`` is the HTTP status, ``data`` the parsed body."""

    status: int
    data: Any = None
    raw: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _timeout(total: float | None = None) -> Timeout:
    read = float(total if total is not None else settings.MJPROXY_HTTP_TIMEOUT)
    connect = min(float(settings.MJPROXY_CONNECT_TIMEOUT), read)
    return Timeout(connect=connect, read=read, total=read + connect)


def _never_sent(exc: OutboundHTTPError) -> bool:
    """True when the failure happened before the request left (safe to send it elsewhere)."""
    # httpcore is imported by the request that failed (apps/core/http_wire.py), not with this
    # module, which every worker process imports at start-up (issue 15, P6).
    import httpcore

    cause = exc.__cause__
    if isinstance(cause, httpcore.ConnectError | httpcore.ConnectTimeout):
        return True
    # Name resolution fails inside the guard, before any connection: a socket error that is
    # not an httpcore one. Anything httpcore raised after connecting may have been delivered.
    return cause is None or (
        isinstance(cause, OSError | UnicodeError) and not isinstance(cause, httpcore.NetworkError)
    )


class MjproxyClient:
    """One upstream: ``base_url`` (before ``/mj/…``) and the ``mj-api-secret`` to send."""

    def __init__(
        self,
        *,
        base_url: str,
        secret: str = "",
        timeout: float | None = None,
        allow_private: bool = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.secret = secret
        self.timeout = _timeout(timeout)
        #: False for an organization's own account (bring your own): its address is customer
        #: input, so the full SSRF guard applies (the settings' default for customer URLs).
        self.allow_private = allow_private

    @property
    def origin(self) -> tuple[str, str, int]:
        return origin_of(self.base_url)

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def _headers(self, *, has_body: bool) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if has_body:
            headers["Content-Type"] = "application/json"
        if self.secret:
            headers["mj-api-secret"] = self.secret
        return headers

    def request(self, method: str, path: str, body: Any = None) -> Answer:
        """One call. Raises the errors described in the module docstring; returns any answer
        the upstream gave (the caller decides what its HTTP status means)."""
        content = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        try:
            response = safe_request(
                method,
                self.url(path),
                headers=self._headers(has_body=content is not None),
                content=content,
                timeout=self.timeout,
                max_response_bytes=MAX_RESPONSE_BYTES,
                allow_private=True if self.allow_private else None,
            )
        except UnsafeURL as exc:
            raise PermanentEngineError(
                f"The upstream address is not usable: {exc.message}",
                error_code=ErrorCode.UPSTREAM_ERROR,
            ) from exc
        except OutboundHTTPError as exc:
            if _never_sent(exc):
                raise UpstreamUnavailable(
                    "The upstream could not be reached.", error_code=ErrorCode.UPSTREAM_ERROR
                ) from exc
            raise UpstreamOutcomeUnknown(
                "The upstream did not answer in time.", error_code=ErrorCode.UPSTREAM_ERROR
            ) from exc
        if response.truncated:
            raise UpstreamUnavailable(
                "The upstream's answer was too large.", error_code=ErrorCode.UPSTREAM_ERROR
            )
        if response.status in (401, 403):
            raise UpstreamUnavailable(
                f"The upstream refused our credentials (HTTP {response.status}).",
                error_code=ErrorCode.UPSTREAM_ERROR,
            )
        if response.status in (429, 502, 503):
            raise UpstreamUnavailable(
                f"The upstream is unavailable (HTTP {response.status}).",
                error_code=ErrorCode.UPSTREAM_ERROR,
            )
        if response.status >= 500:
            # A crash or a gateway timeout: the upstream may have acted on the request first,
            # and behind a gateway that gave up waiting (502, 504) it may still be acting.
            raise UpstreamOutcomeUnknown(
                f"The upstream failed while answering (HTTP {response.status}).",
                error_code=ErrorCode.UPSTREAM_ERROR,
                still_working=response.status in (502, 504),
            )
        data: Any = None
        if response.body:
            try:
                data = json.loads(response.body)
            except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
                data = None
        return Answer(
            status=response.status, data=data, raw=response.body, headers=response.headers
        )

    def post(self, path: str, body: Any) -> Answer:
        return self.request("POST", path, body)

    def get(self, path: str) -> Answer:
        return self.request("GET", path)


def origin_of(url: str) -> tuple[str, str, int]:
    """(scheme, lower-case host, port) — what "the same server" means for the image rule."""
    parts = urlsplit(url)
    scheme = (parts.scheme or "").lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


__all__ = [
    "Answer",
    "MjproxyClient",
    "ResponseTooLarge",
    "UpstreamOutcomeUnknown",
    "UpstreamUnavailable",
    "origin_of",
]
