"""Operators configure translators in the admin: credentials write-only, one active."""

from __future__ import annotations

import pytest
from django.test import Client

from apps.operator.models import AuditEntry
from apps.translation.models import Translator

pytestmark = pytest.mark.django_db

ADD = "/admin/translation/translator/add/"


@pytest.fixture
def staff_client(django_user_model) -> Client:
    user = django_user_model.objects.create_superuser(email="ops@example.com", password="x" * 12)
    client = Client()
    client.force_login(user)
    return client


def _form(**overrides):
    form = {
        "name": "DeepL",
        "kind": "deepl",
        "base_url": "https://api-free.deepl.com",
        "model": "",
        "timeout_seconds": "3",
        "is_active": "on",
        "on_by_default": "on",
        "new_api_key": "secret-deepl-key",
    }
    form.update(overrides)
    return form


def test_add_stores_the_key_encrypted_and_never_shows_it(staff_client):
    response = staff_client.post(ADD, _form())
    assert response.status_code == 302, response.content.decode()[:2000]
    translator = Translator.objects.get()
    assert translator.credentials() == {"api_key": "secret-deepl-key"}
    page = staff_client.get(f"/admin/translation/translator/{translator.pk}/change/")
    assert page.status_code == 200
    assert "secret-deepl-key" not in page.content.decode()
    assert "api_key" in page.content.decode()
    entry = AuditEntry.objects.filter(action="admin.add").latest("id")
    assert "secret-deepl-key" not in str(entry.after)


def test_missing_credentials_and_model_are_refused(staff_client):
    response = staff_client.post(ADD, _form(kind="baidu", new_api_key=""))
    assert response.status_code == 200
    assert "This translator needs: app_id, secret_key." in response.content.decode()
    response = staff_client.post(ADD, _form(kind="openai", base_url="https://api.openai.com/v1"))
    assert "Name the model to ask" in response.content.decode()
    assert not Translator.objects.exists()


def test_activating_one_deactivates_the_other(staff_client):
    staff_client.post(ADD, _form(name="first"))
    staff_client.post(ADD, _form(name="second"))
    assert list(Translator.objects.filter(is_active=True).values_list("name", flat=True)) == [
        "second"
    ]
    first = Translator.objects.get(name="first")
    staff_client.post(
        f"/admin/translation/translator/{first.pk}/change/", _form(name="first", new_api_key="")
    )
    assert list(Translator.objects.filter(is_active=True).values_list("name", flat=True)) == [
        "first"
    ]
    assert Translator.objects.get(name="first").credentials() == {"api_key": "secret-deepl-key"}
