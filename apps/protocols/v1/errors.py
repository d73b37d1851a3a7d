"""The native API's names for the domain's fields, applied before its error format.

Task services name fields in domain words; the native API mostly uses the same ones, but calls
the per-task hook ``webhook_url`` and a MODAL task's id ``task_id`` (it is in the path).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rest_framework.response import Response

from apps.core.api import native_exception_handler
from apps.tasks.errors import dialect_error, domain_label

from ..common import with_tier_limit_hint

_WIRE_FIELDS = {"hook_url": "webhook_url", "task": "task_id"}


def wire_field(field: str, index: int | None, action: str | None) -> str:
    """A domain field as the native request names it."""
    return domain_label(_WIRE_FIELDS.get(field, field), index)


def v1_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    return native_exception_handler(with_tier_limit_hint(dialect_error(exc, wire_field)), context)


class NativeErrorsMixin:
    """For views that call task services: their errors name the native API's fields."""

    def get_exception_handler(self) -> Callable[[Exception, dict[str, Any]], Any]:
        return v1_exception_handler
