"""Domain errors shared by every service.

Services raise these; each public protocol (mj-proxy, TTAPI, native v1, the dashboard) maps them
to its own wire format in one place. A service never builds an HTTP response itself, so one
behaviour can speak three dialects without the rule living twice.

This module must stay free of Django imports: pure validation code (prompt parsing, image
checks) raises these errors too and is tested without a database.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """Base class. ``code`` is a stable machine-readable string; ``message`` a human sentence."""

    code: str = "error"
    http_status: int = 400
    default_message: str = "The request could not be processed."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.message = message or self.default_message
        if code is not None:
            self.code = code
        self.details: dict[str, Any] = dict(details or {})
        super().__init__(self.message)

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details or None}


class ValidationFailed(ServiceError):
    code = "validation_error"
    http_status = 400
    default_message = "The request is invalid."


class BannedPrompt(ValidationFailed):
    """A prompt contains a word on the operator-managed banned list (mj-proxy code 24)."""

    code = "banned_prompt"
    default_message = "The prompt contains a banned word."

    def __init__(self, banned_word: str, message: str | None = None) -> None:
        self.banned_word = banned_word
        super().__init__(
            message or f"The prompt contains the banned word '{banned_word}'.",
            details={"banned_word": banned_word},
        )


class NotFound(ServiceError):
    code = "not_found"
    http_status = 404
    default_message = "Not found."


class PermissionDenied(ServiceError):
    code = "permission_denied"
    http_status = 403
    default_message = "You do not have permission to perform this action."


class Conflict(ServiceError):
    code = "conflict"
    http_status = 409
    default_message = "The request conflicts with the current state."


class InsufficientBalance(ServiceError):
    code = "insufficient_balance"
    http_status = 402
    default_message = "Insufficient balance."


class ConcurrencyLimitReached(ServiceError):
    code = "concurrency_limit"
    http_status = 429
    default_message = "The organization has reached its limit of unfinished tasks."


class ServiceUnavailable(ServiceError):
    code = "unavailable"
    http_status = 503
    default_message = "The service is temporarily unavailable."
