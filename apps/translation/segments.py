"""Cut a prompt into what a translator may see and what must stay byte for byte.

Only prose is translated: the description and the values of ``--no``. Image URLs, ``<@…>``
and ``<#…>`` references, ``::`` weights, every other parameter (``--ar 3:2``, ``--sref <url>``,
``--p code``) and all whitespace are kept as written. A piece is sent only when it holds a
letter outside ASCII, so an English prompt never reaches a translator.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# The parser reads a run of these dashes glued to a letter as ``--``; one definition for both.
from apps.tasks.prompt import LONG_DASHES

#: Where the parameters start: the first ``--`` glued to a letter that begins a word.
_PARAMS_START = re.compile(r"(?:^|(?<=\s))--(?=[A-Za-z])")
#: Each parameter with the whitespace before the next one.
_PARAM = re.compile(r"--([A-Za-z][\w-]*)(\s+)?((?:(?!\s--[A-Za-z]).)*)", re.S)
#: Kept as written inside the description.
_KEPT = re.compile(
    r"(<?https?://[^\s<>]+>?"  # image prompts and links
    r"|<[@#][^>\s]*>"  # Discord user, role and channel references
    r"|::\s*-?\d*(?:\.\d+)?)"  # multi-prompt separators and their weights
)
#: Parameters whose value is prose.
TRANSLATED_PARAMETERS = frozenset({"no"})

#: Any run of two dashes or more, and any single long dash, becomes one ``-`` in an answer.
_DASHES = re.compile(rf"[-{LONG_DASHES}]{{2,}}|[{LONG_DASHES}]")

_HAN_RANGES = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2FA1F))


@dataclass(frozen=True)
class Piece:
    text: str
    translate: bool


def needs_translation(text: str) -> bool:
    """True when ``text`` holds a letter outside ASCII (Chinese, Cyrillic, accented Latin …)."""
    if text.isascii():  # every prompt in English: one scan in C, no call per character
        return False
    return any(ord(char) > 127 and char.isalpha() for char in text)


def has_chinese(text: str) -> bool:
    if text.isascii():
        return False
    return any(low <= ord(char) <= high for char in text for low, high in _HAN_RANGES)


def _prose(text: str) -> list[Piece]:
    """Runs of prose between kept tokens; the whitespace around each run is kept apart, so
    the translator sees whole phrases and the spacing survives exactly."""
    pieces = []
    for part in _KEPT.split(text):
        if not part:
            continue
        if _KEPT.fullmatch(part):
            pieces.append(Piece(part, translate=False))
            continue
        core = part.strip()
        lead = part[: len(part) - len(part.lstrip())]
        trail = part[len(part.rstrip()) :] if core else ""
        for piece in (
            Piece(lead, False),
            Piece(core, needs_translation(core)),
            Piece(trail, False),
        ):
            if piece.text:
                pieces.append(piece)
    return pieces


def split_prompt(prompt: str) -> list[Piece]:
    """The prompt as pieces whose texts, joined, give back ``prompt`` exactly."""
    start = _PARAMS_START.search(prompt)
    head, tail = (
        (prompt, "") if start is None else (prompt[: start.start()], prompt[start.start() :])
    )
    pieces = _prose(head)
    position = 0
    for match in _PARAM.finditer(tail):
        if match.start() > position:
            pieces.append(Piece(tail[position : match.start()], translate=False))
        name, gap, value = match.group(1), match.group(2) or "", match.group(3)
        if name.lower() in TRANSLATED_PARAMETERS and value:
            stripped = value.rstrip()
            pieces.append(Piece(f"--{name}{gap}", translate=False))
            pieces.extend(_prose(stripped))
            if len(stripped) < len(value):
                pieces.append(Piece(value[len(stripped) :], translate=False))
        else:
            pieces.append(Piece(match.group(0), translate=False))
        position = match.end()
    if position < len(tail):
        pieces.append(Piece(tail[position:], translate=False))
    return pieces


def sanitize(translated: str) -> str:
    """A translator's answer made safe to splice back: one line, and no way to add a
    parameter (``--``, or any dash the prompt parser reads as one: minus sign, figure dash,
    horizontal bar …), a weight (``::``) or a reference (``<@``) the caller did not write."""
    text = unicodedata.normalize("NFKC", translated)
    text = " ".join(text.split())
    text = _DASHES.sub("-", text)
    text = text.replace("::", ":").replace("<", "").replace(">", "")
    return text.strip().strip('"').strip()


def join_pieces(pieces: list[Piece], translations: dict[str, str]) -> str:
    return "".join(translations.get(p.text, p.text) if p.translate else p.text for p in pieces)
