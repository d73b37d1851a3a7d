"""A translator cannot hold a submit past its timeout, flood memory or crash it.

``Translator.timeout_seconds`` bounds the whole call, not each read: a service that answers
at once and then trickles its body is given up on at the deadline. An answer over the size cap
and one nested too deeply to parse are failures like any other, so the prompt goes up as
written instead of the submit failing.
"""

from __future__ import annotations

import time

import pytest

from apps.tasks.models import Task
from apps.translation.clients import CLIENTS, MAX_RESPONSE_BYTES, TranslationFailed
from apps.translation.models import TranslatorKind
from apps.translation.services import prompt_translate

from .conftest import credentials_for

KINDS = [k.value for k in TranslatorKind]


def _call(kind, base, state, *, seconds=3.0):
    return CLIENTS[kind](
        ["一只猫"],
        base_url=f"{base}/v1" if kind == TranslatorKind.OPENAI else base,
        model="gpt-4o-mini",
        secret=credentials_for(kind, state),
        deadline=time.monotonic() + seconds,
    )


@pytest.mark.parametrize("kind", KINDS)
def test_a_trickling_answer_is_given_up_on_at_the_deadline(kind, fake_translators):
    base, state = fake_translators
    # Every byte arrives well within any per-read timeout; the whole body takes seconds.
    state.drip = 0.1
    with pytest.raises(TranslationFailed, match="timed out"):
        _call(kind, base, state, seconds=0.5)


@pytest.mark.django_db
def test_a_trickling_translator_falls_back_to_the_prompt_as_written(
    organization, use_translator, fake_translators
):
    _, state = fake_translators
    state.drip = 0.1
    use_translator(TranslatorKind.LIBRETRANSLATE, timeout_seconds=0.5)
    outcome = prompt_translate(organization=organization, prompt="一只猫")
    assert outcome.status == "failed"
    assert outcome.text == "一只猫"
    assert "timed out" in outcome.reason


@pytest.mark.parametrize("kind", KINDS)
def test_an_answer_over_the_size_cap_is_a_failure(kind, fake_translators):
    base, state = fake_translators
    # A well-formed answer of each shape, padded past the cap.
    padding = "x" * MAX_RESPONSE_BYTES
    state.raw_answer = (
        '{"translatedText": ["a cat"], "translations": [{"text": "a cat"}], '
        '"trans_result": [{"src": "一只猫", "dst": "a cat"}], '
        '"choices": [{"message": {"content": "a cat"}}], "pad": "' + padding + '"}'
    ).encode()
    with pytest.raises(TranslationFailed, match="larger than 256 KiB"):
        _call(kind, base, state)


@pytest.mark.parametrize("kind", KINDS)
def test_a_deeply_nested_answer_is_a_failure(kind, fake_translators):
    base, state = fake_translators
    depth = 100_000
    state.raw_answer = b'{"a": ' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(TranslationFailed, match="nested too deeply"):
        _call(kind, base, state)


@pytest.mark.django_db
def test_a_deeply_nested_answer_never_fails_the_submit(
    use_translator, fake_translators, funded, live_key, client_for, sandbox
):
    _, state = fake_translators
    depth = 100_000
    state.raw_answer = b"[" * depth + b"]" * depth
    use_translator(TranslatorKind.DEEPL)
    response = client_for(live_key).post(
        "/mj/submit/imagine", {"prompt": "一只猫 --ar 1:1"}, format="json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["code"] == 1, body
    task = Task.objects.get(pk=body["result"])
    assert task.prompt_en == "一只猫 --ar 1:1"
    assert task.properties["translation"]["status"] == "failed"
    assert "nested too deeply" in task.properties["translation"]["reason"]


@pytest.mark.parametrize("address", ["http://169.254.169.254", "http://[fe80::1]:8080"])
def test_a_metadata_or_link_local_address_is_never_called(address):
    with pytest.raises(TranslationFailed, match="address is not allowed"):
        CLIENTS["libretranslate"](
            ["猫"], base_url=address, model="", secret={}, deadline=time.monotonic() + 1
        )
