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


def prompt_urls(parsed: prompts.ParsedPrompt) -> list[str]:
    """Every image URL of the prompt: image prompts, then reference parameters, each once."""
    found = list(parsed.image_urls)
    for param in parsed.params:
        if param.name in _REFERENCE_PARAMS and param.value:
            for part in param.value.split():
                match = prompts.REFERENCE_URL_RE.match(part)
                if match is not None:
                    found.append(match[1])
    return list(dict.fromkeys(found))


def _ours(url: str) -> bool:
    own = f"{settings.PUBLIC_BASE_URL}/files/"
    stored_prefix = storage.file_url("x") or ""
    return url.startswith(own) or (
        bool(stored_prefix) and url.startswith(stored_prefix.removesuffix("x"))
    )


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
        return Rehosted(text=text, files=[], urls={})
    foreign = [url for url in prompt_urls(parsed) if not _ours(url)]
    if len(foreign) > MAX_PROMPT_URLS:
        raise InputError(
            f"{FIELD} may point at {MAX_PROMPT_URLS} images at most; it has {len(foreign)}.",
            field="prompt",
            details={"count": len(foreign)},
        )
    files: list[str] = []
    urls: dict[str, str] = {}
    try:
        for url in foreign:
            image = _fetched(url)
            name = storage.store_input(data=image.data, ext=image.format.lower())
            files.append(name)
            urls[url] = storage.file_url(name) or url
    except BaseException:
        discard_files(files)
        raise
    # Longest first, so a URL that is a prefix of another does not cut into it.
    for url in sorted(urls, key=len, reverse=True):
        text = text.replace(url, urls[url])
    return Rehosted(text=text, files=files, urls=urls)


def with_rehosted(properties: dict[str, Any], rehosted: Rehosted | None) -> dict[str, Any]:
    """The task's properties with the final prompt as it is sent (with our URLs)."""
    if rehosted is None or not rehosted.urls:
        return properties
    return {**properties, "finalPrompt": rehosted.text}
