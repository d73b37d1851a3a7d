"""An organization's admins turn prompt translation on or off from the dashboard (issue 18)."""

from __future__ import annotations

import pytest

from apps.tasks.models import Task
from apps.translation.models import OrganizationTranslation, TranslatorKind
from tests.dashboard.helpers import login

pytestmark = pytest.mark.django_db

CHINESE = "一只猫 在草地上 --ar 3:2"
ENGLISH = "a cat on the grass --ar 3:2"


def _submit(client) -> Task:
    body = client.post("/mj/submit/imagine", {"prompt": CHINESE}, format="json").json()
    assert body["code"] == 1, body
    return Task.objects.get(pk=body["result"])


def test_an_admin_turns_translation_off_and_on(
    admin_user, use_translator, funded, live_key, client_for, sandbox
):
    use_translator(TranslatorKind.DEEPL)
    api = client_for(live_key)
    web = login(admin_user)
    page = web.get("/settings/")
    assert page.status_code == 200
    assert page.context["translation_enabled"] is True
    assert 'name="translate"' in page.content.decode()

    off = web.post("/settings/translation/", {"translate": "off"})
    assert off.status_code == 302
    assert OrganizationTranslation.objects.get(organization=funded).enabled is False
    assert web.get("/settings/").context["translation_enabled"] is False
    assert _submit(api).prompt_en == CHINESE  # sent as written

    on = web.post("/settings/translation/", {"translate": "on"})
    assert on.status_code == 302
    assert _submit(api).prompt_en == ENGLISH


def test_a_member_sees_the_setting_but_cannot_change_it(member, organization, use_translator):
    use_translator(TranslatorKind.DEEPL)
    web = login(member)
    page = web.get("/settings/")
    assert page.status_code == 200
    assert 'name="translate"' not in page.content.decode()
    refused = web.post("/settings/translation/", {"translate": "off"})
    assert refused.status_code == 403
    assert not OrganizationTranslation.objects.filter(organization=organization).exists()


def test_a_bad_choice_is_refused_and_changes_nothing(owner, organization, use_translator):
    use_translator(TranslatorKind.DEEPL)
    refused = login(owner).post("/settings/translation/", {"translate": "maybe"})
    assert refused.status_code == 400
    assert not OrganizationTranslation.objects.filter(organization=organization).exists()


def test_without_a_translator_the_page_says_so(owner):
    page = login(owner).get("/settings/").content.decode()
    assert "No translator is configured" in page
