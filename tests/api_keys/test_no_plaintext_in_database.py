"""SPEC §2: only a lookup prefix and a hash are stored; the plaintext exists nowhere at rest."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from rest_framework.test import APIClient

from apps.api_keys.models import ApiKey

pytestmark = pytest.mark.django_db


def _every_stored_value() -> list[str]:
    """Every column of every row of every table, as text."""
    values: list[str] = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            for row in cursor.fetchall():
                for value in row:
                    if isinstance(value, memoryview | bytes):
                        values.append(bytes(value).decode("latin-1"))
                    elif value is not None:
                        values.append(str(value))
    return values


def _dumpdata() -> str:
    out = StringIO()
    call_command("dumpdata", stdout=out)
    return out.getvalue()


def test_no_plaintext_key_anywhere_in_the_database(organization, make_key, settings, tmp_path):
    settings.VAR_DIR = tmp_path
    plaintexts = [
        make_key(organization).plaintext,
        make_key(organization, is_test=True).plaintext,
        make_key(organization, allowed_ips=["127.0.0.0/8"]).plaintext,
    ]
    out = StringIO()
    call_command("createtenant", "--email", "a@example.com", "--tokens", "10", "--json", stdout=out)
    plaintexts.append(json.loads(out.getvalue())["api_key"])
    call_command("seed_demo", stdout=StringIO())
    demo_keys = json.loads((tmp_path / "demo-keys.json").read_text())
    plaintexts += [demo_keys["live"], demo_keys["test"]]
    # Use every key once, so whatever authentication records is in the scan too.
    for plaintext in plaintexts:
        response = APIClient().get(
            "/api/v1/balance", HTTP_MJ_API_SECRET=plaintext, REMOTE_ADDR="127.0.0.1"
        )
        assert response.status_code == 200

    assert ApiKey.objects.count() == 6
    stored = _every_stored_value()
    dump = _dumpdata()
    assert len(stored) > 100
    for plaintext in plaintexts:
        prefix = ApiKey.objects.get(prefix=plaintext[:17]).prefix
        secret_part = plaintext[len(prefix) :]
        assert len(secret_part) == 24
        for haystack in (*stored, dump):
            assert plaintext not in haystack
            assert secret_part not in haystack
        # What is there: the clear prefix, for lookup and display.
        assert any(value == prefix for value in stored)


def test_a_key_created_with_an_idempotency_key_is_replayed_but_not_stored_in_clear(
    organization, live_key
):
    """The replay of ``POST /api/v1/keys`` must show the same secret, so the response is kept
    for a day; it is kept encrypted, like every stored response."""
    client = APIClient()
    client.credentials(HTTP_MJ_API_SECRET=live_key.plaintext)
    first = client.post("/api/v1/keys", {"name": "ci"}, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    again = client.post("/api/v1/keys", {"name": "ci"}, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert first.status_code == again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert again.content == first.content
    secret = first.json()["secret"]
    assert ApiKey.objects.filter(organization=organization).count() == 2
    prefix = first.json()["prefix"]
    for haystack in (*_every_stored_value(), _dumpdata()):
        assert secret not in haystack
        assert secret[len(prefix) :] not in haystack
