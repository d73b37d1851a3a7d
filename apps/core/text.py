"""Checks on short text people type that we store and later put in prompts, mails and headers.

Pure Python like ``errors`` (no Django): the prompt parser uses it and is tested without a
database.
"""

from __future__ import annotations

import functools
import re
import unicodedata

from .errors import ValidationFailed

#: Unicode category Cc, all of it: C0 (U+0000–U+001F), DEL and C1 (U+007F–U+009F).
CONTROL_CHARACTERS = "".join(chr(c) for c in range(0xA0) if unicodedata.category(chr(c)) == "Cc")
#: Characters that end a line without being Cc: the line and paragraph separators. An e-mail
#: client, a log viewer or an upstream may break the line there all the same.
LINE_SEPARATORS = "\u2028\u2029"
_LINE_BREAKS = frozenset("\n\r" + LINE_SEPARATORS)  # what people know as a new line


@functools.lru_cache(maxsize=8)
def _refused(allow: str) -> re.Pattern[str]:
    # One regular-expression search instead of a Python loop per character: a prompt may be
    # thousands of characters long.
    chars = sorted(set(CONTROL_CHARACTERS + LINE_SEPARATORS) - set(allow))
    return re.compile("[" + "".join(re.escape(c) for c in chars) + "]")


def control_character(text: str, *, allow: str = "") -> str | None:
    """The first control character (Unicode category Cc) or line/paragraph separator
    (U+2028, U+2029) in ``text`` that ``allow`` does not list; None when there is none."""
    found = _refused(allow).search(text)
    return None if found is None else found.group()


def refuse_control_characters(text: str, *, what: str, allow: str = "") -> None:
    """Raise ``ValidationFailed`` naming the first character ``control_character`` finds.

    ``what`` starts the sentence ("The prompt", "The organization name")."""
    char = control_character(text, allow=allow)
    if char is None:
        return
    code = f"U+{ord(char):04X}"
    kind = "a line break" if char in _LINE_BREAKS else "a control character"
    raise ValidationFailed(
        f"{what} contains {kind} ({code}); remove it.", details={"character": code}
    )


def single_line(text: str) -> str:
    """``text`` with every control character and line separator turned into a space, runs of
    whitespace made one space and the ends trimmed: safe in an e-mail header (a subject) or a
    one-line message, whatever was stored before the input checks existed."""
    return " ".join(_refused("").sub(" ", text).split())
