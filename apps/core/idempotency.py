"""``Idempotency-Key`` on POST requests (SPEC §6.3).

A client that retries a POST with the same ``Idempotency-Key`` must not create a second task:

* same key, same request → the first response is replayed byte for byte (status and body), with
  the header ``Idempotent-Replayed: true``;
* same key, another request (method, path or body) → 422 ``idempotency_key_mismatch``;
* same key while the first request is still running → 409 ``idempotency_in_flight``.

Keys are scoped to the API key that sent them and expire after :data:`IDEMPOTENCY_TTL`.
Responses that say "try again later" (402, 409, 429, 5xx) are not stored: the record is
released so a retry with the same key runs again once the condition has passed. What decides is
the error's own status, not the one on the wire: mj-proxy answers a tier limit or a short balance
as HTTP 200 with a code in the body, and that answer is not stored either. Views that only read
(a fetch or a list sent as POST) set ``idempotent_methods = ()``: replaying a read would freeze a
stale answer.

Stored responses are encrypted at rest (``apps.core.crypto``): some carry a secret that is
shown once and must exist nowhere in clear — a new API key, a webhook signing secret.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from django.db import IntegrityError, transaction
from django.http import HttpResponse
from django.utils import timezone
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.response import Response

from apps.api_keys.models import ApiKey

from .crypto import decrypt_text, encrypt_text
from .errors import Conflict, ServiceError, ValidationFailed
from .jsonbody import json_body_parse, json_body_read
from .models import IdempotencyRecord

logger = logging.getLogger(__name__)

HEADER = "HTTP_IDEMPOTENCY_KEY"
REPLAYED_HEADER = "Idempotent-Replayed"
IDEMPOTENCY_TTL = timedelta(hours=24)
#: An in-flight record older than this belongs to a request whose process died; a retry may
#: take it over instead of answering 409 for the rest of the day.
IN_FLIGHT_LOCK = timedelta(minutes=5)
MAX_KEY_LENGTH = 255
#: Statuses whose response is not replayed: the same request may succeed later.
NOT_STORED = frozenset({402, 408, 409, 423, 425, 429})


class IdempotencyKeyMismatch(ServiceError):
    code = "idempotency_key_mismatch"
    http_status = 422
    default_message = (
        "This Idempotency-Key was already used with a different request; use a new key."
    )


class IdempotencyInFlight(Conflict):
    code = "idempotency_in_flight"
    default_message = (
        "A request with this Idempotency-Key is still being processed; retry in a moment."
    )


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: bytes
    content_type: str

    def as_http_response(self) -> HttpResponse:
        response = HttpResponse(self.body, status=self.status, content_type=self.content_type)
        response[REPLAYED_HEADER] = "true"
        return response


def _seal(body: bytes) -> bytes:
    # surrogateescape carries any byte through the text API unchanged.
    return encrypt_text(body.decode("utf-8", errors="surrogateescape")).encode("ascii")


def _unseal(stored: bytes) -> bytes:
    try:
        return decrypt_text(stored.decode("ascii")).encode("utf-8", errors="surrogateescape")
    except (ValueError, UnicodeDecodeError):
        # Stored in clear before responses were encrypted (such rows live at most a day).
        return stored


def request_fingerprint(*, method: str, path: str, body: bytes) -> str:
    """Hash of what makes two requests "the same": JSON bodies compare by content, not bytes."""
    try:
        # Under the same limits as the parser: an unbounded json.loads here would let a body
        # of millions of empty arrays bloat the worker whenever an Idempotency-Key is sent.
        canonical = json.dumps(
            json_body_parse(body or b"null"), sort_keys=True, separators=(",", ":")
        ).encode()
    except (APIException, ServiceError):
        canonical = body  # not acceptable JSON (the parser refuses it next): compare the bytes
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _check_key(key: str) -> str:
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise ValidationFailed(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters.",
            details={"header": "Idempotency-Key"},
        )
    return key


def idempotency_begin(
    *, api_key: ApiKey, key: str, fingerprint: str
) -> IdempotencyRecord | StoredResponse:
    """Claim ``key`` for this request, or return the response to replay.

    Raises :class:`IdempotencyKeyMismatch` or :class:`IdempotencyInFlight`.
    """
    key = _check_key(key)
    now = timezone.now()
    IdempotencyRecord.objects.filter(api_key=api_key, expires_at__lte=now).delete()
    for _ in range(3):
        try:
            with transaction.atomic():
                return IdempotencyRecord.objects.create(
                    api_key=api_key,
                    key=key,
                    fingerprint=fingerprint,
                    state=IdempotencyRecord.IN_FLIGHT,
                    locked_at=now,
                    expires_at=now + IDEMPOTENCY_TTL,
                )
        except IntegrityError:
            existing = IdempotencyRecord.objects.filter(api_key=api_key, key=key).first()
        if existing is None:  # released between our insert and our read: try again
            continue
        if existing.fingerprint != fingerprint:
            raise IdempotencyKeyMismatch()
        if existing.state == IdempotencyRecord.COMPLETED:
            return StoredResponse(
                status=int(existing.response_status or 200),
                body=_unseal(bytes(existing.response_body or b"")),
                content_type=existing.response_content_type or "application/json",
            )
        stale = now - IN_FLIGHT_LOCK
        taken = IdempotencyRecord.objects.filter(
            pk=existing.pk, state=IdempotencyRecord.IN_FLIGHT, locked_at__lte=stale
        ).update(locked_at=now)
        if taken:
            existing.locked_at = now
            return existing
        raise IdempotencyInFlight()
    raise IdempotencyInFlight()


def retry_later_status(status: int) -> bool:
    """Whether an answer with this HTTP status means "the same request may succeed later"."""
    return status >= 500 or status in NOT_STORED


def retry_later_error(exc: BaseException) -> bool:
    """Whether ``exc`` says "try again later" by its own status, whatever status a dialect
    answers it with (mj-proxy sends a tier limit or a short balance as HTTP 200 and a code)."""
    if isinstance(exc, ServiceError):
        return retry_later_status(exc.http_status)
    if isinstance(exc, APIException):
        return retry_later_status(exc.status_code)
    return False


def idempotency_complete(
    *, record: IdempotencyRecord, status: int, body: bytes, content_type: str
) -> None:
    """Store the response of the request that holds ``record`` (or release it, see NOT_STORED)."""
    if retry_later_status(status):
        idempotency_release(record=record)
        return
    _held(record).update(
        state=IdempotencyRecord.COMPLETED,
        response_status=status,
        response_body=_seal(body),
        response_content_type=content_type[:100],
    )


def idempotency_release(*, record: IdempotencyRecord) -> None:
    _held(record).delete()


def _held(record: IdempotencyRecord) -> Any:
    """``record`` while this request still holds it: in flight, and not taken over by a retry
    since (a takeover stamps ``locked_at`` anew), so a request that outlived its lock neither
    stores its answer over the retry's nor frees the key under it."""
    return IdempotencyRecord.objects.filter(
        pk=record.pk, state=IdempotencyRecord.IN_FLIGHT, locked_at=record.locked_at
    )


def idempotency_records_purge(*, now: datetime | None = None) -> int:
    """Delete every expired record. Run by beat: a key that is never used again would
    otherwise keep its stored response forever (``idempotency_begin`` only purges the
    expired records of the API key it is serving)."""
    deleted, _ = IdempotencyRecord.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted


def _raw_body(request: Request) -> bytes:
    """The request body, read once and left readable for DRF's parsers.

    Read from the stream rather than through ``HttpRequest.body``, whose
    DATA_UPLOAD_MAX_MEMORY_SIZE check DRF's JSON parsing does not apply either: a submit with
    large base64 images must not fail only because it carries an Idempotency-Key.
    """
    django_request = request._request
    if not hasattr(django_request, "_body"):
        data = json_body_read(django_request)
        django_request._body = data
        django_request._stream = io.BytesIO(data)
    return bytes(django_request._body)


class _Replay(Exception):
    def __init__(self, stored: StoredResponse) -> None:
        super().__init__("idempotent replay")
        self.stored = stored


class IdempotentPostMixin:
    """For DRF views authenticated by API key: honours ``Idempotency-Key`` on POST.

    Runs after authentication, permissions and throttling (so a refused request claims no key)
    and around the handler; whatever the handler answers is recorded.
    """

    idempotent_methods: tuple[str, ...] = ("POST",)
    _idempotency_record: IdempotencyRecord | None = None

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        self._idempotency_record = None
        raw_key = request.META.get(HEADER)
        if raw_key is None or request.method not in self.idempotent_methods:
            return
        api_key = request.auth
        if not isinstance(api_key, ApiKey):  # pragma: no cover - permissions refused already
            return
        fingerprint = request_fingerprint(
            method=request.method or "POST",
            path=request.get_full_path(),
            body=_raw_body(request),
        )
        outcome = idempotency_begin(api_key=api_key, key=raw_key, fingerprint=fingerprint)
        if isinstance(outcome, StoredResponse):
            raise _Replay(outcome)
        self._idempotency_record = outcome

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, _Replay):
            # A plain HttpResponse: the stored bytes are sent as they are, never re-rendered.
            return cast(Response, exc.stored.as_http_response())
        try:
            response: Response = super().handle_exception(exc)  # type: ignore[misc]
        except BaseException:
            self._idempotency_release()
            raise
        if retry_later_error(exc):
            # Decided on the error, not on the status the dialect put on the wire.
            self._idempotency_release()
        return response

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        record = self._idempotency_record
        if record is None:
            return response
        self._idempotency_record = None
        try:
            render = getattr(response, "render", None)
            if callable(render):
                render()
            body = bytes(getattr(response, "content", b""))
            idempotency_complete(
                record=record,
                status=response.status_code,
                body=body,
                content_type=response.get("Content-Type", "application/json"),
            )
        except Exception:
            logger.exception("could not store the idempotent response")
            idempotency_release(record=record)
        return response

    def _idempotency_release(self) -> None:
        record = self._idempotency_record
        self._idempotency_record = None
        if record is not None:
            idempotency_release(record=record)
