from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.cache import cache

from apps.translation import fake
from apps.translation.models import Translator, TranslatorKind
from apps.translation.services import translator_save
from tests.protocols.conftest import client_for, finished_imagine, funded, sandbox  # noqa: F401


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    """Translations are cached; every test starts with none."""
    cache.clear()


@pytest.fixture
def fake_translators() -> Iterator[tuple[str, fake.FakeTranslators]]:
    with fake.running() as served:
        yield served


def credentials_for(kind: str, state: fake.FakeTranslators) -> dict[str, Any]:
    return {
        TranslatorKind.OPENAI: {"api_key": state.openai_key},
        TranslatorKind.DEEPL: {"api_key": state.deepl_key},
        TranslatorKind.BAIDU: {"app_id": state.baidu_app_id, "secret_key": state.baidu_secret},
        TranslatorKind.LIBRETRANSLATE: {},
    }[kind]


@pytest.fixture
def use_translator(
    db: None, fake_translators: tuple[str, fake.FakeTranslators]
) -> Callable[..., Translator]:
    """Make a translator of ``kind`` pointing at the fakes the active one."""
    base, state = fake_translators

    def make(kind: str = TranslatorKind.DEEPL, **fields: Any) -> Translator:
        url = f"{base}/v1" if kind == TranslatorKind.OPENAI else base
        translator = Translator(
            name=f"fake {kind}",
            kind=kind,
            base_url=url,
            model="gpt-4o-mini" if kind == TranslatorKind.OPENAI else "",
            secrets=credentials_for(kind, state),
            is_active=True,
            **fields,
        )
        return translator_save(translator=translator)

    return make
