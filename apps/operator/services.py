"""Writing the audit log. Every operator action and every admin save goes through ``audit_record``.

Credentials never enter the log: fields that hold secrets or their hashes are replaced by a
marker before anything is stored, both when a snapshot is taken and again in ``audit_record``
(a caller passing a hand-made ``before``/``after`` cannot leak one by mistake).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, models, transaction

from apps.core.crypto import EncryptedJSONField

from .models import AuditEntry

REDACTED = "[redacted]"
CHANGED = "[changed]"
#: Parts of field names that hold credentials, or hashes that would let one be checked.
_SENSITIVE_PARTS = ("secret", "password", "_hash", "cookie")
#: Whole names that do (``tokens`` on a price is a number, ``token`` is a credential).
#: ``seed`` is allauth's recovery-code seed; an image seed redacted with it is no loss.
_SENSITIVE_NAMES = {
    "hash",
    "token",
    "api_key",
    "claim_token",
    "poll_token",
    "authorization",
    "seed",
}


def is_sensitive(name: str) -> bool:
    lowered = name.lower()
    return lowered in _SENSITIVE_NAMES or any(part in lowered for part in _SENSITIVE_PARTS)


class _Encoder(DjangoJSONEncoder):
    """Django's encoder (ISO dates, decimals, UUIDs); anything else as its ``str``."""

    def default(self, o: Any) -> Any:
        try:
            return super().default(o)
        except TypeError:
            return str(o)


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, cls=_Encoder))


def audit_snapshot(obj: models.Model, *, fields: list[str] | None = None) -> dict[str, Any]:
    """The concrete field values of ``obj`` (foreign keys as ids), raw: compare, then redact.

    ``auto_now`` timestamps are left out: they change on every save and say nothing the
    entry's own ``created_at`` does not.
    """
    snapshot: dict[str, Any] = {}
    for field in obj._meta.concrete_fields:
        if getattr(field, "auto_now", False):
            continue
        if fields is not None and field.name not in fields and field.attname not in fields:
            continue
        snapshot[field.attname] = field.value_from_object(obj)
    return snapshot


def _sensitive_keys(obj: models.Model | None) -> set[str]:
    if obj is None:
        return set()
    return {
        field.attname
        for field in obj._meta.concrete_fields
        if isinstance(field, EncryptedJSONField)
    }


def audit_diff(
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    *,
    obj: models.Model | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Only the keys whose values differ, with credentials replaced by markers."""
    before = before or {}
    after = after or {}
    sensitive = _sensitive_keys(obj)
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    for key in sorted(set(before) | set(after)):
        if key in before and key in after and before[key] == after[key]:
            continue
        if key in sensitive or is_sensitive(key):
            if key in before:
                old[key] = REDACTED
            if key in after:
                new[key] = CHANGED
            continue
        if key in before:
            old[key] = before[key]
        if key in after:
            new[key] = after[key]
    return old, new


def _redact(data: Any) -> Any:
    """Replace the value of every sensitive key, at any depth (markers are kept as they are)."""
    if isinstance(data, dict):
        clean: dict[str, Any] = {}
        for key, value in data.items():
            if is_sensitive(str(key)) and value not in (REDACTED, CHANGED):
                clean[key] = REDACTED
            else:
                clean[key] = _redact(value)
        return clean
    if isinstance(data, list):
        return [_redact(item) for item in data]
    return data


def object_type_of(obj: models.Model) -> str:
    return f"{obj._meta.app_label}.{obj._meta.model_name}"


def audit_record(
    *,
    actor: Any,
    action: str,
    obj: models.Model | None = None,
    object_type: str = "",
    object_id: str = "",
    object_repr: str = "",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str = "",
    dedupe_key: str | None = None,
) -> AuditEntry:
    """Append one entry. ``actor`` is the operator (a user; anonymous or None for the system).

    With a ``dedupe_key`` a second call records nothing and returns the first entry: the unique
    constraint decides, so two racing replays of one form still leave one entry.
    """
    if obj is not None:
        object_type = object_type or object_type_of(obj)
        object_id = object_id or str(obj.pk)
        object_repr = object_repr or str(obj)
    user = actor if getattr(actor, "is_authenticated", False) else None
    entry = AuditEntry(
        actor=user,
        actor_label=(getattr(user, "email", "") or str(user or ""))[:254] if user else "",
        action=action[:64],
        object_type=object_type[:100],
        object_id=str(object_id)[:64],
        object_repr=object_repr[:200],
        before=_redact(_json_safe(before)) if before is not None else None,
        after=_redact(_json_safe(after)) if after is not None else None,
        reason=reason,
        dedupe_key=dedupe_key,
    )
    if dedupe_key is None:
        entry.save(force_insert=True)
        return entry
    try:
        with transaction.atomic():
            entry.save(force_insert=True)
    except IntegrityError:
        return AuditEntry.objects.get(dedupe_key=dedupe_key)
    return entry
