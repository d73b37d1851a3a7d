"""`manage.py reencrypt` covers the sealed responses of idempotent requests, so a replay after
the documented key rotation (new key first, reencrypt, drop the old key) answers the stored
body, not a Fernet token."""

from __future__ import annotations

from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command

from apps.core.idempotency import (
    StoredResponse,
    idempotency_begin,
    idempotency_complete,
    request_fingerprint,
)
from apps.core.models import IdempotencyRecord

pytestmark = pytest.mark.django_db

OLD = Fernet.generate_key().decode()
NEW = Fernet.generate_key().decode()
LABEL = "core.IdempotencyRecord.response_body"


def _run(*args: str) -> str:
    out = StringIO()
    call_command("reencrypt", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def _stored(api_key, key: str, body: bytes) -> str:
    fingerprint = request_fingerprint(method="POST", path="/api/v1/tasks", body=key.encode())
    record = idempotency_begin(api_key=api_key, key=key, fingerprint=fingerprint)
    idempotency_complete(record=record, status=201, body=body, content_type="application/json")
    return fingerprint


def _raw(pk: int) -> bytes:
    return bytes(IdempotencyRecord.objects.values_list("response_body", flat=True).get(pk=pk))


def test_a_replay_after_the_key_rotation_answers_the_stored_body(settings, make_key, organization):
    settings.FIELD_ENCRYPTION_KEYS = [OLD]
    api_key = make_key(organization).api_key
    body = b'{"id":"task-1","status":"NOT_START","note":"\xc3\xa9t\xc3\xa9"}'
    fingerprint = _stored(api_key, "k-1", body)
    in_flight = idempotency_begin(
        api_key=api_key,
        key="k-2",
        fingerprint=request_fingerprint(method="POST", path="/api/v1/tasks", body=b"k-2"),
    )
    assert not isinstance(in_flight, StoredResponse)  # no body yet: nothing to rewrite
    record = IdempotencyRecord.objects.get(key="k-1")
    before = _raw(record.pk)

    settings.FIELD_ENCRYPTION_KEYS = [NEW, OLD]
    assert f"{LABEL}: 1 to re-encrypt, 0 already current" in _run("--dry-run")
    assert _raw(record.pk) == before
    assert f"{LABEL}: 1 re-encrypted, 0 already current" in _run()
    assert _raw(record.pk) != before

    settings.FIELD_ENCRYPTION_KEYS = [NEW]  # the old key can go now
    replay = idempotency_begin(api_key=api_key, key="k-1", fingerprint=fingerprint)
    assert isinstance(replay, StoredResponse)
    assert replay.body == body
    assert f"{LABEL}: 0 re-encrypted, 1 already current" in _run()


def test_a_body_stored_in_clear_is_left_as_it_is(settings, make_key, organization):
    """Rows written before responses were sealed (they live at most a day) are no token: not
    rewritten, not reported unreadable."""
    settings.FIELD_ENCRYPTION_KEYS = [OLD]
    api_key = make_key(organization).api_key
    _stored(api_key, "k-clear", b"{}")
    record = IdempotencyRecord.objects.get(key="k-clear")
    IdempotencyRecord.objects.filter(pk=record.pk).update(response_body=b'{"id":"clear"}')
    settings.FIELD_ENCRYPTION_KEYS = [NEW, OLD]
    assert f"{LABEL}: 0 re-encrypted, 0 already current" in _run()
    assert _raw(record.pk) == b'{"id":"clear"}'
