"""Standard Webhooks signatures and secrets."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from apps.webhooks.models import WebhookSecret
from apps.webhooks.services import webhook_secret_ensure, webhook_secret_rotate
from apps.webhooks.signing import secret_generate, signature_compute, signature_header


def test_secret_format():
    secret = secret_generate()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert secret_generate() != secret


def test_signature_matches_the_reference_library():
    secret = secret_generate()
    timestamp = 1_700_000_000
    body = '{"type":"task.updated","data":{"prompt":"ünïcode ✓"}}'
    ours = signature_compute(secret=secret, msg_id="msg_1", timestamp=timestamp, body=body)
    theirs = Webhook(secret).sign("msg_1", datetime.fromtimestamp(timestamp, tz=UTC), body)
    assert ours == theirs
    two = signature_header(
        secrets=[secret, secret_generate()], msg_id="msg_1", timestamp=timestamp, body=body
    )
    assert two.split(" ")[0] == ours
    assert len(two.split(" ")) == 2


@pytest.mark.django_db
def test_secret_is_stored_encrypted_and_never_printed(organization):
    row, plaintext = webhook_secret_ensure(organization=organization)
    assert plaintext is not None
    assert row.reveal() == plaintext
    stored = WebhookSecret.objects.values_list("secret_encrypted", flat=True).get()
    assert plaintext not in stored
    assert plaintext.removeprefix("whsec_") not in stored
    assert plaintext not in str(row) and plaintext not in repr(row)
    # Asking again returns the same row and no plaintext.
    again, shown = webhook_secret_ensure(organization=organization)
    assert (again.pk, shown) == (row.pk, None)


@pytest.mark.django_db
def test_rotation_keeps_one_current_secret(organization, other_organization):
    webhook_secret_ensure(organization=organization)
    webhook_secret_ensure(organization=other_organization)
    new = webhook_secret_rotate(organization=organization)
    current = WebhookSecret.objects.get(organization=organization, expires_at__isnull=True)
    assert current.reveal() == new
    assert WebhookSecret.objects.filter(organization=organization).count() == 2
    assert WebhookSecret.objects.filter(organization=other_organization).count() == 1


@pytest.mark.django_db
def test_reveal_for_the_dashboard_creates_or_returns_the_current_secret(organization):
    from apps.webhooks.services import webhook_secret_reveal

    first = webhook_secret_reveal(organization=organization)
    assert first.startswith("whsec_")
    assert webhook_secret_reveal(organization=organization) == first
    rotated = webhook_secret_rotate(organization=organization)
    assert webhook_secret_reveal(organization=organization) == rotated
