"""Cursor pagination for the native API.

``NewestFirstPagination`` pages the task list; ``IdCursorPagination`` pages the append-only
logs (ledger entries, webhook delivery attempts), whose ids only grow.

Keyset cursors for the task list: newest first, exact through ties in ``created_at``.

DRF's ``CursorPagination`` keys its cursor on the first ordering field only and walks ties with
an offset; followed backwards (``previous``) across a run of tasks created in the same
microsecond it skips some of them. Here the cursor holds the full sort key ``(created_at, id)``
of the row it starts after, so every task is listed exactly once in either direction, and each
page is one index range scan (``task_org_recent``) however deep it is.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils.dateparse import parse_datetime
from rest_framework.exceptions import NotFound as DRFNotFound
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from apps.accounts.models import Organization
from apps.core.errors import ValidationFailed
from apps.tasks.models import Task
from apps.tasks.selectors import PageBound, TaskFilters, task_page, task_page_exists

CURSOR_PARAM = "cursor"
INVALID_CURSOR = "The cursor is invalid."
INVALID_CURSOR_DETAILS = {"cursor": "Use a cursor this API returned."}
DEFAULT_LIMIT = 20
MAX_LIMIT = 100


@dataclass(frozen=True)
class Cursor:
    backwards: bool
    created_at: datetime
    id: str

    def encode(self) -> str:
        raw = json.dumps(
            {"b": self.backwards, "t": self.created_at.isoformat(), "i": self.id},
            separators=(",", ":"),
        )
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> Cursor:
        try:
            raw = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
            created_at = parse_datetime(raw["t"])
            if not isinstance(raw["b"], bool) or not isinstance(raw["i"], str) or not created_at:
                raise ValueError(value)
        except (binascii.Error, ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
            raise ValidationFailed(INVALID_CURSOR, details=INVALID_CURSOR_DETAILS) from exc
        return cls(backwards=raw["b"], created_at=created_at, id=raw["i"])


def _cursor_at(row: Any, *, backwards: bool) -> Cursor:
    return Cursor(backwards=backwards, created_at=row.created_at, id=row.pk)


def _bound(cursor: Cursor) -> PageBound:
    return PageBound(created_at=cursor.created_at, id=cursor.id)


class NewestFirstPagination:
    """``{next, previous, results}`` over an organization's tasks (``task_page``)."""

    def __init__(self, *, limit: int | None = None) -> None:
        self.limit = min(max(int(limit or DEFAULT_LIMIT), 1), MAX_LIMIT)
        self.next: Cursor | None = None
        self.previous: Cursor | None = None

    def paginate_tasks(
        self, *, organization: Organization, filters: TaskFilters, request: Request
    ) -> list[Task]:
        self.request = request
        raw = request.query_params.get(CURSOR_PARAM)
        cursor = Cursor.decode(raw) if raw else None
        if cursor is not None and cursor.backwards:
            rows = task_page(
                organization=organization,
                filters=filters,
                before=_bound(cursor),
                limit=self.limit + 1,
            )
            page = list(reversed(rows[: self.limit]))
            if len(rows) > self.limit:
                self.previous = _cursor_at(page[0], backwards=True)
            if page:
                self.next = _cursor_at(page[-1], backwards=False)
            return page
        rows = task_page(
            organization=organization,
            filters=filters,
            after=_bound(cursor) if cursor else None,
            limit=self.limit + 1,
        )
        page = rows[: self.limit]
        if len(rows) > self.limit:
            self.next = _cursor_at(page[-1], backwards=False)
        if (
            cursor is not None
            and page
            and task_page_exists(
                organization=organization,
                filters=filters,
                before=PageBound(created_at=page[0].created_at, id=page[0].pk),
            )
        ):
            self.previous = _cursor_at(page[0], backwards=True)
        return page

    def _link(self, cursor: Cursor | None) -> str | None:
        if cursor is None:
            return None
        url = self.request.build_absolute_uri()
        return replace_query_param(url, CURSOR_PARAM, cursor.encode())

    def get_paginated_response(self, data: Any) -> Response:
        return Response(
            {"next": self._link(self.next), "previous": self._link(self.previous), "results": data}
        )


class IdCursorPagination(CursorPagination):
    """Opaque cursors over ``-id`` for append-only logs: stable while new rows keep arriving.

    Ids are unique, so DRF's cursor (which keys on the first ordering field) is exact here. The
    page size comes from ``limit``; each list chooses its default and maximum.
    """

    ordering = "-id"
    page_size_query_param = "limit"

    def __init__(self, *, page_size: int, max_page_size: int) -> None:
        super().__init__()
        self.page_size = page_size
        self.max_page_size = max_page_size

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> Any:
        try:
            return super().paginate_queryset(queryset, request, view)
        except DRFNotFound as exc:
            # DRF answers a malformed cursor with 404; it is a bad parameter, not a missing page.
            raise ValidationFailed(INVALID_CURSOR, details=INVALID_CURSOR_DETAILS) from exc
