"""The prompt as it goes upstream: translated to English when the organization wants it.

Only ever called after the prompt as written passed validation. A translation that is not a
valid prompt itself is dropped for the original (with a note); one that carries a banned word
is refused like any other banned prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from apps.accounts.models import Organization
from apps.core.errors import BannedPrompt, ValidationFailed
from apps.translation.services import fallback, prompt_translate

from .. import prompt as prompts
from .inputs import parse_checked


@dataclass(frozen=True)
class UpstreamPrompt:
    #: ``prompt_en``: what the engine sends.
    text: str
    #: Merged into the task's properties: the final prompt, the original when it was Chinese,
    #: and a note when a translation was tried.
    properties: dict[str, Any] = field(default_factory=dict)


def prompt_for_upstream(
    *, organization: Organization, parsed: prompts.ParsedPrompt, allow_zoom: bool = False
) -> UpstreamPrompt:
    """``allow_zoom``: as given to ``parse_checked`` for the prompt as written (Custom Zoom's
    second step), so the translation is checked by the same rules as the original."""
    outcome = prompt_translate(organization=organization, prompt=parsed.clean_prompt)
    text = parsed.clean_prompt
    if outcome.status == "translated":
        try:
            text = parse_checked(outcome.text, allow_zoom=allow_zoom).clean_prompt
        except BannedPrompt:
            raise
        except ValidationFailed as exc:
            outcome = fallback(
                outcome,
                original=parsed.clean_prompt,
                reason=f"the translation was not a valid prompt ({exc.message}); "
                "the prompt was sent as written",
            )
    properties: dict[str, Any] = {"finalPrompt": text}
    if outcome.chinese_original:
        properties["finalZhPrompt"] = outcome.chinese_original
    note = outcome.note()
    if note is not None:
        properties["translation"] = note
    return UpstreamPrompt(text=text, properties=properties)
