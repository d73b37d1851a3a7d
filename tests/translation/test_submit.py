"""Translated prompts through every dialect's submit: what goes upstream, what clients see."""

from __future__ import annotations

import pytest

from apps.billing.selectors import balance_get
from apps.tasks.models import BannedWord, Task
from apps.translation.models import TranslatorKind
from apps.translation.services import organization_translation_set
from tests.tasks.helpers import png_data_url, run_to_completion

pytestmark = pytest.mark.django_db

CHINESE = "一只猫 在草地上 --ar 3:2 --no 汽车, 人 --stylize 200"
ENGLISH = "a cat on the grass --ar 3:2 --no cars, people --stylize 200"


def _mjproxy(client, prompt):
    response = client.post("/mj/submit/imagine", {"prompt": prompt}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


@pytest.mark.parametrize("kind", [k.value for k in TranslatorKind])
def test_chinese_prompt_goes_up_in_english_with_parameters_intact(
    kind, use_translator, funded, live_key, client_for, sandbox
):
    use_translator(kind)
    body = _mjproxy(client_for(live_key), CHINESE)
    assert body["code"] == 1
    task = Task.objects.get(pk=body["result"])
    assert task.prompt == CHINESE
    assert task.prompt_en == ENGLISH
    fetched = client_for(live_key).get(f"/mj/task/{task.pk}/fetch").json()
    assert fetched["prompt"] == CHINESE
    assert fetched["promptEn"] == ENGLISH
    assert fetched["properties"]["finalPrompt"] == ENGLISH
    assert fetched["properties"]["finalZhPrompt"] == CHINESE
    assert fetched["properties"]["translation"] == {"status": "translated", "translator": kind}


def test_native_and_ttapi_translate_too(use_translator, funded, live_key, client_for, sandbox):
    use_translator(TranslatorKind.LIBRETRANSLATE)
    client = client_for(live_key)
    native = client.post("/api/v1/tasks", {"action": "IMAGINE", "prompt": CHINESE}, format="json")
    assert native.status_code == 201, native.content
    assert native.json()["prompt_en"] == ENGLISH
    ttapi = client.post("/midjourney/v1/imagine", {"prompt": CHINESE}, format="json")
    assert ttapi.status_code == 200, ttapi.content
    job = Task.objects.get(pk=ttapi.json()["data"]["jobId"])
    assert job.prompt_en == ENGLISH
    fetched = client.get(f"/midjourney/v1/fetch?jobId={job.pk}").json()["data"]
    assert fetched["finalPrompt"] == ENGLISH


def test_weights_urls_and_references_survive_byte_for_byte(
    use_translator, funded, live_key, client_for, sandbox
):
    use_translator(TranslatorKind.OPENAI)
    prompt = "https://example.com/a.png 红色的花::2 蓝天::-0.5 --sref https://e.x/b.png --chaos 10"
    task = Task.objects.get(pk=_mjproxy(client_for(live_key), prompt)["result"])
    assert task.prompt_en == (
        "https://example.com/a.png red flowers::2 blue sky::-0.5 --sref https://e.x/b.png --chaos 10"
    )


def test_a_timeout_falls_back_to_the_original_with_a_note(
    use_translator, fake_translators, funded, live_key, client_for, sandbox
):
    _, state = fake_translators
    state.delay = 1.5
    use_translator(TranslatorKind.DEEPL, timeout_seconds=0.5)
    body = _mjproxy(client_for(live_key), CHINESE)
    assert body["code"] == 1
    task = Task.objects.get(pk=body["result"])
    assert task.prompt_en == CHINESE
    note = task.properties["translation"]
    assert note["status"] == "failed" and "timed out" in note["reason"]
    assert task.properties["finalZhPrompt"] == CHINESE


def test_a_broken_translator_never_fails_the_task(
    use_translator, fake_translators, funded, live_key, client_for, sandbox
):
    _, state = fake_translators
    state.fail_with = 503
    use_translator(TranslatorKind.OPENAI)
    task = Task.objects.get(pk=_mjproxy(client_for(live_key), "一只狗")["result"])
    assert task.prompt_en == "一只狗"
    assert "HTTP 503" in task.properties["translation"]["reason"]


def test_repeated_prompts_are_served_from_the_cache(
    use_translator, fake_translators, funded, live_key, client_for, sandbox
):
    _, state = fake_translators
    use_translator(TranslatorKind.DEEPL)
    for _ in range(3):
        _mjproxy(client_for(live_key), CHINESE)
    assert state.calls["/v2/translate"] == 1


def test_english_prompts_never_call_the_translator(
    use_translator, fake_translators, funded, live_key, client_for, sandbox
):
    _, state = fake_translators
    use_translator(TranslatorKind.DEEPL)
    task = Task.objects.get(pk=_mjproxy(client_for(live_key), "a red fox --ar 3:2")["result"])
    assert task.prompt_en == "a red fox --ar 3:2"
    assert "translation" not in task.properties and "finalZhPrompt" not in task.properties
    assert sum(state.calls.values()) == 0


def test_an_organization_can_switch_it_off(
    use_translator, fake_translators, funded, live_key, client_for, sandbox
):
    _, state = fake_translators
    use_translator(TranslatorKind.DEEPL)
    organization_translation_set(organization=funded, enabled=False)
    task = Task.objects.get(pk=_mjproxy(client_for(live_key), CHINESE)["result"])
    assert task.prompt_en == CHINESE
    assert task.properties["finalZhPrompt"] == CHINESE
    assert "translation" not in task.properties
    assert sum(state.calls.values()) == 0


def test_off_by_default_until_an_organization_opts_in(
    use_translator, fake_translators, funded, live_key, client_for, sandbox
):
    use_translator(TranslatorKind.DEEPL, on_by_default=False)
    assert Task.objects.get(pk=_mjproxy(client_for(live_key), "猫")["result"]).prompt_en == "猫"
    organization_translation_set(organization=funded, enabled=True)
    assert Task.objects.get(pk=_mjproxy(client_for(live_key), "猫")["result"]).prompt_en == "cat"


def test_a_banned_word_in_the_translation_is_refused_and_nothing_changes(
    use_translator, funded, live_key, client_for, sandbox
):
    use_translator(TranslatorKind.BAIDU)
    BannedWord.objects.create(word="cars")
    before = balance_get(organization=funded)
    count = Task.objects.count()
    response = client_for(live_key).post("/mj/submit/imagine", {"prompt": CHINESE}, format="json")
    # mj-proxy's code for a banned prompt, naming the word as the translation spelled it.
    assert response.json()["code"] == 24
    assert "cars" in response.json()["description"]
    assert Task.objects.count() == count
    assert balance_get(organization=funded) == before


def test_a_translation_that_adds_parameters_is_defused(
    use_translator, fake_translators, funded, live_key, client_for, sandbox, monkeypatch
):
    from apps.translation import fake  # the fake's glossary, patched for this one test

    monkeypatch.setitem(fake.GLOSSARY, "坏", "a cat --fast --ar 99:1")
    monkeypatch.setattr(fake, "_BY_LENGTH", sorted(fake.GLOSSARY, key=len, reverse=True))
    use_translator(TranslatorKind.DEEPL)
    task = Task.objects.get(pk=_mjproxy(client_for(live_key), "坏 --ar 1:1")["result"])
    assert task.prompt_en == "a cat -fast -ar 99:1 --ar 1:1"
    assert task.mode == "FAST"


def test_a_modal_prompt_is_translated_too(
    use_translator, funded, live_key, client_for, finished_imagine
):
    use_translator(TranslatorKind.DEEPL)
    client = client_for(live_key)
    grid = finished_imagine()
    upscaled_id = client.post(
        "/mj/submit/action",
        {"taskId": grid.pk, "customId": _button(grid, "U1")},
        format="json",
    ).json()["result"]
    upscaled = run_to_completion(upscaled_id)
    waiting = client.post(
        "/mj/submit/action",
        {"taskId": upscaled.pk, "customId": _button(upscaled, "Vary (Region)")},
        format="json",
    ).json()["result"]
    done = client.post(
        "/mj/submit/modal",
        {
            "taskId": waiting,
            "prompt": "一只狗 --ar 1:1",
            "maskBase64": png_data_url((255, 255, 255)),
        },
        format="json",
    ).json()
    assert done["code"] == 1, done
    task = Task.objects.get(pk=waiting)
    assert task.prompt == "一只狗 --ar 1:1"
    assert task.prompt_en == "a dog --ar 1:1"
    assert task.properties["finalPrompt"] == "a dog --ar 1:1"
    assert task.properties["finalZhPrompt"] == "一只狗 --ar 1:1"


def _button(task, label):
    return next(b["custom_id"] for b in task.buttons if b["label"] == label)
