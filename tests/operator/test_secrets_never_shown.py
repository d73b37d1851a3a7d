"""No credential ever appears in an admin page, a history page, the audit log or an export.

Distinctive values are planted everywhere a credential lives — upstream account secrets, API key
plaintexts and hashes, webhook signing secrets, invitation token hashes, password hashes — and
then every admin page of every object is fetched and searched for them.
"""

from __future__ import annotations

import json
import uuid

import pytest
from allauth.mfa.models import Authenticator
from django.contrib import admin
from django.test import Client

from apps.accounts.models import Invitation, Role, User
from apps.accounts.services import invitation_create
from apps.engines.models import UpstreamAccount
from apps.operator.models import AuditEntry
from apps.tasks.enums import Action
from apps.tasks.events import task_changed
from apps.tasks.services.submit import task_submit
from apps.webhooks.models import WebhookSecret
from apps.webhooks.services import webhook_secret_ensure
from tests.factories import WebhookEndpointFactory
from tests.tasks.helpers import run_to_completion, sandbox_account

from .conftest import admin_url

pytestmark = pytest.mark.django_db

ACCOUNT_SECRET = "acct-cred-Qz7Wm4Lp9Xv2"
NEW_ACCOUNT_SECRET = "acct-cred-rotated-Hk3Jd8"
TOTP_SECRET = "JBSWY3DPEHPK3PXPTOTPSEED"


@pytest.fixture
def planted(operator, operator_client, organization, owner, caller, make_key, fund, monkeypatch):
    """Credentials of every kind, plus admin activity that could have copied them around."""
    monkeypatch.setattr("apps.webhooks.workers.deliver.apply_async", lambda args, **options: None)
    fund(organization, 1_000_000)
    account = sandbox_account("secretive", secret=ACCOUNT_SECRET, token="tok-" + ACCOUNT_SECRET)
    # An edit through the admin that sets new credentials (so history and audit have a change).
    operator_client.post(
        admin_url("engines_upstreamaccount_change", account.pk),
        {
            "name": "secretive",
            "engine": "sandbox",
            "modes": ["FAST"],
            "concurrency": "3",
            "queue_size": "10",
            "run_timeout_seconds": "600",
            "options": '{"duration": 0}',
            "new_secrets": json.dumps({"secret": NEW_ACCOUNT_SECRET}),
        },
    )
    assert UpstreamAccount.objects.get(pk=account.pk).secrets == {"secret": NEW_ACCOUNT_SECRET}
    issued = make_key(organization, name="production")
    _, webhook_secret = webhook_secret_ensure(organization=organization)
    assert webhook_secret is not None
    endpoint = WebhookEndpointFactory(organization=organization, url="https://e.example.com")
    task = run_to_completion(
        task_submit(caller=caller, action=Action.IMAGINE, prompt="a quiet harbour").task.pk
    )
    task.notify_hook = "https://client.example.com/hook"
    task.save(update_fields=["notify_hook"])
    task_changed(task=task, event_type="task.updated")
    totp = Authenticator.objects.create(
        user=operator, type=Authenticator.Type.TOTP, data={"secret": TOTP_SECRET}
    )
    invitation, invite_token = invitation_create(
        actor=owner, organization=organization, email="new@example.com", role=Role.MEMBER
    )
    # Operator actions that write audit entries and history.
    operator_client.post(
        admin_url("api_keys_apikey_changelist"),
        {"action": "revoke_keys", "_selected_action": [issued.api_key.pk]},
    )
    operator_client.post(
        admin_url("accounts_organization_changelist"),
        {
            "action": "adjust_balance",
            "_selected_action": [organization.pk],
            "apply": "1",
            "amount": "5",
            "reason": "audit me",
            "token": str(uuid.uuid4()),
        },
    )
    secrets = {
        ACCOUNT_SECRET,
        NEW_ACCOUNT_SECRET,
        issued.plaintext,
        issued.plaintext.removeprefix("mjg_live_"),
        issued.api_key.key_hash,
        webhook_secret,
        webhook_secret.removeprefix("whsec_"),
        invite_token,
        Invitation.objects.get(pk=invitation.pk).token_hash,
        TOTP_SECRET,
    }
    secrets.update(WebhookSecret.objects.values_list("secret_encrypted", flat=True))
    with_ciphertext = UpstreamAccount.objects.extra(select={"raw": "secrets"}).values_list(
        "raw", flat=True
    )
    secrets.update(value for value in with_ciphertext if value)
    secrets.update(User.objects.values_list("password", flat=True))
    assert endpoint.pk and totp.pk and AuditEntry.objects.exists()
    return secrets


def every_page() -> list[str]:
    urls = [
        admin_url("index"),
        admin_url("operator_stats"),
        admin_url("operator_stats") + "?format=json",
    ]
    for model in admin.site._registry:
        opts = model._meta
        base = f"{opts.app_label}_{opts.model_name}"
        urls.append(admin_url(f"{base}_changelist"))
        urls.append(admin_url(f"{base}_add"))
        for pk in model._default_manager.values_list("pk", flat=True)[:50]:
            urls.append(admin_url(f"{base}_change", pk))
            urls.append(admin_url(f"{base}_history", pk))
        if model is User:
            for pk in User.objects.values_list("pk", flat=True):
                urls.append(admin_url("auth_user_password_change", pk))
    return urls


def exports(client: Client) -> list[bytes]:
    from apps.tasks.models import Task

    found = []
    for changelist, model in (
        ("tasks_task_changelist", Task),
        ("engines_upstreamaccount_changelist", UpstreamAccount),
        ("operator_auditentry_changelist", AuditEntry),
    ):
        response = client.post(
            admin_url(changelist),
            {
                "action": "export_csv",
                "_selected_action": [
                    str(pk) for pk in model._default_manager.values_list("pk", flat=True)
                ],
            },
        )
        assert response.status_code == 200
        assert response["Content-Type"] == "text/csv; charset=utf-8"
        found.append(b"".join(response.streaming_content))
    return found


@pytest.mark.slow
def test_no_admin_page_or_export_shows_a_credential(planted, operator_client):
    pages = every_page()
    assert len(pages) > 60
    checked = 0
    for url in pages:
        response = operator_client.get(url)
        assert response.status_code in (200, 403), url
        body = response.content.decode()
        for secret in planted:
            assert secret not in body, f"{url} shows a credential"
        checked += 1
    for body_bytes in exports(operator_client):
        body = body_bytes.decode()
        assert body.count("\n") >= 2
        for secret in planted:
            assert secret not in body
    assert checked == len(pages)


def test_an_operator_can_reset_a_users_mfa_and_it_is_audited(planted, operator, operator_client):
    totp = Authenticator.objects.get(user=operator)
    url = admin_url("mfa_authenticator_change", totp.pk)
    page = operator_client.get(url).content.decode()
    assert 'name="data"' not in page
    assert operator_client.post(url, {"data": "{}"}).status_code == 403
    operator_client.post(admin_url("mfa_authenticator_delete", totp.pk), {"post": "yes"})
    assert not Authenticator.objects.filter(pk=totp.pk).exists()
    entry = AuditEntry.objects.get(action="admin.delete", object_type="mfa.authenticator")
    assert (entry.actor, entry.object_id, entry.before["type"]) == (operator, str(totp.pk), "totp")
    assert TOTP_SECRET not in json.dumps(entry.before)


def test_the_audit_log_holds_markers_not_credentials(planted):
    for entry in AuditEntry.objects.all():
        text = json.dumps([entry.before, entry.after, entry.reason, entry.object_repr])
        for secret in planted:
            assert secret not in text
    change = AuditEntry.objects.get(action="admin.change", object_type="engines.upstreamaccount")
    assert (change.before, change.after) == (
        {"modes": ["FAST", "RELAX", "TURBO"], "secrets": "[redacted]"},
        {"modes": ["FAST"], "secrets": "[changed]"},
    )
