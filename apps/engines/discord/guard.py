"""The SSRF guard under the discord engine's httpx client, for an organization's own account.

An own account's addresses (``rest_base_url``, ``inpaint_base_url``, ``cdn_base_url``) are
customer input, and so is what a server there answers (an upload slot's ``upload_url``). Its
requests go through :class:`apps.core.http.SafeSession` — the host resolved and every address
vetted (no private, loopback or link-local one), the connection pinned to a vetted address,
no redirects followed, a deadline and a cap on the answer — while the engine keeps speaking
httpx: :class:`GuardedTransport` is the client's transport.

Imported where an own account's client is made (``rest.DiscordRest``), with httpx.
"""

from __future__ import annotations

import httpcore
import httpx

from apps.core.http import (
    OutboundHTTPError,
    SafeSession,
    Timeout,
    UnsafeURL,
    request_never_sent,
)

#: The largest answer read from Discord's API (a page of 50 messages is far smaller).
MAX_ANSWER_BYTES = 8 * 1024 * 1024
#: Request headers the guard sets itself (or httpx's that would change the answer's encoding).
_OWN_HEADERS = {"host", "content-length", "transfer-encoding", "accept-encoding", "connection"}


class RefusedAddress(httpx.TransportError):
    """The guard refused the URL (a non-public address, a bad URL): nothing was sent."""


class GuardedTransport(httpx.BaseTransport):
    """An httpx transport that sends every request through the SSRF guard.

    Failures read as httpx's: no connection made (the name did not resolve, connecting
    failed) → ``httpx.ConnectError``; anything after the request may have left →
    ``httpx.ReadError`` / ``httpx.ReadTimeout``; a refused URL → :class:`RefusedAddress`.
    """

    def __init__(self, *, timeout: Timeout, max_answer_bytes: int = MAX_ANSWER_BYTES) -> None:
        self._session = SafeSession(max_idle_per_origin=2)
        self._timeout = timeout
        self._max_answer_bytes = max_answer_bytes

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        headers = {
            name: value for name, value in request.headers.items() if name not in _OWN_HEADERS
        }
        try:
            answer = self._session.request(
                request.method,
                str(request.url),
                headers=headers,
                content=request.read(),
                timeout=self._timeout,
                max_response_bytes=self._max_answer_bytes,
                # None: the installation's setting (private addresses refused in production).
                allow_private=None,
            )
        except UnsafeURL as exc:
            raise RefusedAddress(exc.message, request=request) from exc
        except OutboundHTTPError as exc:
            if request_never_sent(exc):
                raise httpx.ConnectError(exc.message, request=request) from exc
            if isinstance(exc.__cause__, httpcore.TimeoutException):
                raise httpx.ReadTimeout(exc.message, request=request) from exc
            raise httpx.ReadError(exc.message, request=request) from exc
        if answer.truncated:
            raise httpx.ReadError(
                f"The answer was larger than {self._max_answer_bytes} bytes.", request=request
            )
        return httpx.Response(
            answer.status, headers=answer.headers, content=answer.body, request=request
        )

    def close(self) -> None:
        self._session.close()
