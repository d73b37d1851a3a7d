"""Translate a prompt before it goes upstream, never failing the task because of it."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache
from django.db import transaction

from apps.accounts.models import Organization
from apps.core.ratelimit import cache_breaker

from . import segments
from .clients import CLIENTS, TranslationFailed
from .models import MAX_TIMEOUT_SECONDS, OrganizationTranslation, Translator
from .selectors import translation_enabled, translator_active

logger = logging.getLogger(__name__)

#: Translations are deterministic enough to keep: a repeated prompt costs no call.
CACHE_SECONDS = 30 * 24 * 3600


@dataclass(frozen=True)
class PromptTranslation:
    #: What goes upstream: the translation, or the prompt unchanged.
    text: str
    #: ``translated``, ``failed`` (fell back to the original), ``off`` (the organization or
    #: operator has translation off) or ``not_needed`` (nothing outside ASCII).
    status: str
    #: The prompt as written when it held Chinese, else "" (clients show it beside the English).
    chinese_original: str = ""
    translator: str = ""
    reason: str = ""

    def note(self) -> dict[str, Any] | None:
        """What the task's properties record about the translation, when one was tried."""
        if self.status not in ("translated", "failed"):
            return None
        note = {"status": self.status, "translator": self.translator}
        if self.reason:
            note["reason"] = self.reason
        return note


def _cache_key(translator: Translator, text: str) -> str:
    stamp = int(translator.updated_at.timestamp()) if translator.updated_at else 0
    digest = hashlib.sha256(text.encode()).hexdigest()
    return f"translation:{translator.pk}:{stamp}:{digest}"


def _cached(keys: list[str]) -> dict[str, Any]:
    if cache_breaker.is_open():
        return {}
    try:
        return cache.get_many(keys)
    except Exception as exc:  # the cache is an optimisation: Redis down means asking again
        cache_breaker.trip(exc)
        return {}


def _remember(values: dict[str, str]) -> None:
    if cache_breaker.is_open() or not values:
        return
    try:
        cache.set_many(values, CACHE_SECONDS)
    except Exception as exc:  # see _cached
        cache_breaker.trip(exc)


def texts_translate(translator: Translator, texts: list[str]) -> dict[str, str]:
    """Each distinct text → its sanitised English, from the cache or one call to the service."""
    distinct = list(dict.fromkeys(texts))
    keys = {text: _cache_key(translator, text) for text in distinct}
    found = _cached(list(keys.values()))
    result = {text: found[key] for text, key in keys.items() if isinstance(found.get(key), str)}
    missing = [text for text in distinct if text not in result]
    if missing:
        timeout = min(float(translator.timeout_seconds or MAX_TIMEOUT_SECONDS), MAX_TIMEOUT_SECONDS)
        answers = CLIENTS[translator.kind](
            missing,
            base_url=translator.base_url,
            model=translator.model,
            secret=translator.credentials(),
            deadline=time.monotonic() + timeout,
        )
        fresh = {}
        for text, answer in zip(missing, answers, strict=True):
            clean = segments.sanitize(answer)
            if not clean:
                raise TranslationFailed("the answer was empty once cleaned")
            result[text] = clean
            fresh[keys[text]] = clean
        _remember(fresh)
    return result


def prompt_translate(*, organization: Organization, prompt: str) -> PromptTranslation:
    """``prompt`` with its prose in English, parameters and references untouched.

    Never raises: a missing translator, a timeout or an error gives the prompt back unchanged
    with the reason, and the task goes on in the language it was written in.
    """
    if not segments.needs_translation(prompt):
        return PromptTranslation(text=prompt, status="not_needed")
    chinese = prompt if segments.has_chinese(prompt) else ""
    translator = translator_active()
    if translator is None or not translation_enabled(
        organization=organization, translator=translator
    ):
        return PromptTranslation(text=prompt, status="off", chinese_original=chinese)
    pieces = segments.split_prompt(prompt)
    wanted = [piece.text for piece in pieces if piece.translate]
    try:
        translations = texts_translate(translator, wanted)
    except TranslationFailed as exc:
        logger.warning("translation by %s failed: %s", translator, exc)
        return PromptTranslation(
            text=prompt,
            status="failed",
            chinese_original=chinese,
            translator=translator.kind,
            reason=f"{translator.get_kind_display()}: {exc}; the prompt was sent as written",
        )
    return PromptTranslation(
        text=segments.join_pieces(pieces, translations),
        status="translated",
        chinese_original=chinese,
        translator=translator.kind,
    )


def fallback(translation: PromptTranslation, *, original: str, reason: str) -> PromptTranslation:
    """The same outcome, but with the original prompt (the translation was not usable)."""
    return PromptTranslation(
        text=original,
        status="failed",
        chinese_original=translation.chinese_original,
        translator=translation.translator,
        reason=reason,
    )


@transaction.atomic
def translator_save(*, translator: Translator) -> Translator:
    """Save ``translator``; making it active deactivates every other one in the same step."""
    if translator.is_active:
        Translator.objects.filter(is_active=True).exclude(pk=translator.pk).update(is_active=False)
    translator.full_clean()
    translator.save()
    return translator


def organization_translation_set(*, organization: Organization, enabled: bool) -> None:
    OrganizationTranslation.objects.update_or_create(
        organization=organization, defaults={"enabled": enabled}
    )
