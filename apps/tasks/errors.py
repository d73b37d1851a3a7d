"""Errors of the task domain that name a request field.

Services name fields in domain words — ``images`` (``images[1]``), ``mask``, ``hook_url``,
``state``, ``parent``, ``task``, ``button``, ``prompt``, ``mode``, ``dimensions``, ``action`` —
never in a dialect's own request words. Each dialect's error
handler renders an :class:`InputError` under its own field names with :meth:`for_dialect`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apps.core.errors import NotFound, ValidationFailed

#: Where the field's name goes in a message template (replaced, never ``str.format``-ed: the
#: rest of a message may quote client text with braces in it).
FIELD = "{field}"

#: A dialect's name for a domain field: (field, index, action) -> the wire name, index included.
WireNames = Callable[[str, int | None, str | None], str]


def domain_label(field: str, index: int | None, action: str | None = None) -> str:
    """The domain's own rendering: ``images[1]``, ``mask``."""
    return field if index is None else f"{field}[{index}]"


class InputError(ValidationFailed):
    """A request field is invalid. ``template`` holds ``{field}`` where the field's name goes."""

    def __init__(
        self,
        template: str,
        *,
        field: str,
        index: int | None = None,
        action: str | None = None,
        details: dict[str, Any] | None = None,
        code: str | None = None,
    ) -> None:
        self.template = template
        self.field = field
        self.index = index
        self.action = action
        label = domain_label(field, index)
        super().__init__(
            template.replace(FIELD, label), code=code, details={**(details or {}), "field": label}
        )

    def for_dialect(self, wire: WireNames) -> ValidationFailed:
        """The same error, naming the field as a dialect's clients know it."""
        label = wire(self.field, self.index, self.action)
        return ValidationFailed(
            self.template.replace(FIELD, label),
            code=self.code,
            details={**self.details, "field": label},
        )


def dialect_error(exc: Exception, wire: WireNames) -> Exception:
    """``exc`` in a dialect's field names when it names a field; any other error unchanged."""
    return exc.for_dialect(wire) if isinstance(exc, InputError) else exc


class ParentNotFound(NotFound):
    """The parent of a follow-up does not exist for this organization (mj-proxy code 3)."""

    code = "parent_not_found"
    default_message = "The parent task does not exist."
