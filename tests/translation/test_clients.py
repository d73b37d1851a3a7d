"""Each translator's client against a fake that speaks that service's real wire format."""

from __future__ import annotations

import time

import pytest

from apps.translation.clients import CLIENTS, TranslationFailed, baidu_sign
from apps.translation.models import TranslatorKind

from .conftest import credentials_for

KINDS = [k.value for k in TranslatorKind]


def _call(kind, base, state, texts, *, seconds=3.0, secret=None):
    return CLIENTS[kind](
        texts,
        base_url=f"{base}/v1" if kind == TranslatorKind.OPENAI else base,
        model="gpt-4o-mini",
        secret=credentials_for(kind, state) if secret is None else secret,
        deadline=time.monotonic() + seconds,
    )


@pytest.mark.parametrize("kind", KINDS)
def test_translates_every_text_in_order(kind, fake_translators):
    base, state = fake_translators
    assert _call(kind, base, state, ["一只猫 在草地上", "汽车, 人"]) == [
        "a cat on the grass",
        "cars, people",
    ]


def test_each_service_gets_its_own_request_shape(fake_translators):
    base, state = fake_translators
    for kind in KINDS:
        _call(kind, base, state, ["猫"])
    routes = dict(state.requests)
    assert routes["/v2/translate"] == {"text": ["猫"], "target_lang": "EN-US"}
    assert routes["/translate"] == {"q": ["猫"], "source": "auto", "target": "en", "format": "text"}
    baidu = routes["/api/trans/vip/translate"]
    assert baidu["q"] == "猫" and baidu["from"] == "auto" and baidu["to"] == "en"
    assert baidu["sign"] == baidu_sign(state.baidu_app_id, "猫", baidu["salt"], state.baidu_secret)
    chat = routes["/v1/chat/completions"]
    assert chat["model"] == "gpt-4o-mini" and chat["messages"][-1] == {
        "role": "user",
        "content": "猫",
    }


@pytest.mark.parametrize(
    ("kind", "secret", "reason"),
    [
        (TranslatorKind.OPENAI, {"api_key": "wrong"}, "HTTP 401 (invalid_api_key)"),
        (TranslatorKind.DEEPL, {"api_key": "wrong"}, "HTTP 403 (Authorization failure"),
        (
            TranslatorKind.BAIDU,
            {"app_id": "20240001", "secret_key": "x"},
            "error 54001 (Invalid Sign)",
        ),
        (
            TranslatorKind.BAIDU,
            {"app_id": "1", "secret_key": "x"},
            "error 52003 (UNAUTHORIZED USER)",
        ),
    ],
)
def test_bad_credentials_name_the_services_error(kind, secret, reason, fake_translators):
    base, state = fake_translators
    with pytest.raises(TranslationFailed) as failed:
        _call(kind, base, state, ["猫"], secret=secret)
    assert str(failed.value).startswith(reason)


def test_libretranslate_with_a_key_configured_refuses_a_call_without_one(fake_translators):
    base, state = fake_translators
    state.libre_key = "libre-key"
    with pytest.raises(TranslationFailed, match=r"HTTP 403 \(Invalid API key\)"):
        _call(TranslatorKind.LIBRETRANSLATE, base, state, ["猫"])
    assert _call(
        TranslatorKind.LIBRETRANSLATE, base, state, ["猫"], secret={"api_key": "libre-key"}
    ) == ["cat"]


@pytest.mark.parametrize("kind", KINDS)
def test_rate_limits_and_errors_fail_cleanly(kind, fake_translators):
    base, state = fake_translators
    state.rate_limit = True
    with pytest.raises(TranslationFailed):
        _call(kind, base, state, ["猫"])
    state.rate_limit = False
    state.fail_with = 500
    with pytest.raises(TranslationFailed):
        _call(kind, base, state, ["猫"])


@pytest.mark.parametrize("kind", KINDS)
def test_a_slow_service_is_given_up_on_at_the_deadline(kind, fake_translators):
    base, state = fake_translators
    state.delay = 1.0
    # The fake answers after 1 s; a client that waited would succeed instead of timing out.
    with pytest.raises(TranslationFailed, match="timed out"):
        _call(kind, base, state, ["猫"], seconds=0.3)


def test_an_unreachable_service_fails_cleanly():
    with pytest.raises(TranslationFailed, match="unreachable"):
        CLIENTS["deepl"](
            ["猫"],
            base_url="http://127.0.0.1:9",
            model="",
            secret={},
            deadline=time.monotonic() + 1,
        )
