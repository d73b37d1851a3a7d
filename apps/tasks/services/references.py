"""Image URLs in prompts (image prompts, ``--sref``, ``--cref``, ``--oref``), re-hosted.

A prompt may point at images anywhere. Before the task is accepted each foreign URL is fetched
through the SSRF guard (``load_image``: private addresses, redirects and oversized bodies are
refused), checked to be an image, stored like an upload, and replaced in the prompt that goes
upstream by our stable URL, so the upstream never depends on a link that may expire or change.
URLs we already serve (``/api/v1/uploads``, ``/mj/submit/upload-discord-images``, results) are
left as they are. A URL that cannot be used refuses the request with nothing changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings

from .. import prompt as prompts
from .. import storage
from ..errors import FIELD, InputError
from ..imageinput import DecodedImage
from .inputs import discard_files, load_image

#: Task params: the stored images the prompt references, by kind.
REFERENCES = "references"
#: Most distinct foreign image URLs one prompt may carry.
MAX_PROMPT_URLS = 10
_REFERENCE_PARAMS = ("sref", "cref", "oref")


@dataclass(frozen=True)
class Rehosted:
    #: The prompt for the upstream, foreign URLs replaced by ours.
    text: str
    #: The files stored for it (to discard if the request fails later).
    files: list[str]
    #: Foreign URL → our URL.
    urls: dict[str, str]
    #: The stored images the prompt references, by kind (``image``, ``sref``, ``cref``,
    #: ``oref``): for the task's params, so a renderer can read them.
    references: dict[str, list[str]]


def urls_by_kind(parsed: prompts.ParsedPrompt) -> dict[str, list[str]]:
    """The prompt's image URLs by kind: ``image`` (image prompts), ``sref``, ``cref``, ``oref``."""
    found: dict[str, list[str]] = {}
    if parsed.image_urls:
        found["image"] = list(parsed.image_urls)
    for param in parsed.params:
        if param.name in _REFERENCE_PARAMS and param.value:
            for part in param.value.split():
                match = prompts.REFERENCE_URL_RE.match(part)
                if match is not None:
                    found.setdefault(param.name, []).append(match[1])
    return found


def prompt_urls(parsed: prompts.ParsedPrompt) -> list[str]:
    """Every image URL of the prompt: image prompts, then reference parameters, each once."""
    return list(dict.fromkeys(url for urls in urls_by_kind(parsed).values() for url in urls))


def _our_prefixes() -> tuple[str, ...]:
    stored = (storage.file_url("x") or "").removesuffix("x")
    return tuple(p for p in (f"{settings.PUBLIC_BASE_URL}/files/", stored) if p)


def _ours(url: str) -> bool:
    return url.startswith(_our_prefixes())


def _stored_name(url: str) -> str | None:
    for prefix in _our_prefixes():
        if url.startswith(prefix):
            return url.removeprefix(prefix)
    return None


def _fetched(url: str) -> DecodedImage:
    try:
        return load_image(url, field="prompt")
    except InputError as exc:
        if exc.template.startswith(f"{FIELD}:"):
            raise  # a download error, already naming the field
        raise InputError(
            f"{FIELD}: {url} cannot be used: {exc.template.replace(FIELD, 'it', 1)}",
            field="prompt",
            code=exc.code,
        ) from exc


def rehost_prompt_urls(parsed: prompts.ParsedPrompt, text: str) -> Rehosted:
    """``text`` (the prompt for the upstream) with ``parsed``'s foreign image URLs re-hosted."""
    if not settings.REHOST_PROMPT_URLS:
        return Rehosted(text=text, files=[], urls={}, references=_references(parsed, {}))
    foreign = [url for url in prompt_urls(parsed) if not _ours(url)]
    if len(foreign) > MAX_PROMPT_URLS:
        raise InputError(
            f"{FIELD} may point at {MAX_PROMPT_URLS} images at most; it has {len(foreign)}.",
            field="prompt",
            details={"count": len(foreign)},
        )
    files: list[str] = []
    urls: dict[str, str] = {}
    names: dict[str, str] = {}
    try:
        for url in foreign:
            image = _fetched(url)
            name = storage.store_input(data=image.data, ext=image.format.lower())
            files.append(name)
            urls[url] = storage.file_url(name) or url
            names[url] = name
    except BaseException:
        discard_files(files)
        raise
    # Longest first, so a URL that is a prefix of another does not cut into it.
    for url in sorted(urls, key=len, reverse=True):
        text = text.replace(url, urls[url])
    return Rehosted(text=text, files=files, urls=urls, references=_references(parsed, names))


def _references(parsed: prompts.ParsedPrompt, names: dict[str, str]) -> dict[str, list[str]]:
    """The stored images of each kind: re-hosted ones and those that were ours already."""
    found: dict[str, list[str]] = {}
    for kind, urls in urls_by_kind(parsed).items():
        stored = [names.get(url) or _stored_name(url) for url in urls]
        kept = [name for name in stored if name]
        if kept:
            found[kind] = kept
    return found


def with_rehosted(properties: dict[str, Any], rehosted: Rehosted | None) -> dict[str, Any]:
    """The task's properties with the final prompt as it is sent (with our URLs)."""
    if rehosted is None or not rehosted.urls:
        return properties
    return {**properties, "finalPrompt": rehosted.text}
