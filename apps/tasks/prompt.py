"""Midjourney prompt parsing and validation (SPEC §4.5).

A prompt is ``[image URLs] text [--param value]...``. We validate it before anything is queued so
a typo costs the client an immediate, precise 400 instead of a held balance, a queue slot and an
upstream failure minutes later. The parser is deliberately strict about names (an unknown
``--param`` is almost always a typo that Midjourney would reject too) and about the ranges
Midjourney documents, and lenient about everything it does not understand itself (free text,
``--sref`` codes, ``--style`` values), which it passes through untouched.

Pure module: no Django settings, no database.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from apps.core.errors import ValidationFailed
from apps.core.text import LINE_SEPARATORS, refuse_control_characters
from apps.tasks.enums import Mode

__all__ = [
    "PARAMETER_ALIASES",
    "ParsedPrompt",
    "PromptParam",
    "aspect_ratio",
    "find_banned_word",
    "known_seed",
    "numbered_prompts",
    "parse_prompt",
    "result_prompts",
    "seed",
    "zoom",
]

DEFAULT_MAX_LENGTH = 8192

#: Aspect ratios more extreme than this are refused: Midjourney cannot render them and a grid
#: with a 1-pixel side is useless.
MAX_ASPECT_RATIO = 14


@dataclass(frozen=True)
class PromptParam:
    """One ``--name value`` pair. ``name`` is canonical; ``written`` is the spelling used."""

    name: str
    written: str
    value: str | None

    def render(self) -> str:
        return f"--{self.written}" if self.value is None else f"--{self.written} {self.value}"


@dataclass(frozen=True)
class ParsedPrompt:
    #: The prompt as received, whitespace-stripped.
    original: str
    #: What goes upstream: image URLs, text and parameters, mode flags removed, ``—`` → ``--``.
    clean_prompt: str
    #: The description alone, without image URLs and parameters.
    text: str
    image_urls: tuple[str, ...]
    #: Parameters in the order written, mode flags excluded (see ``mode_flag``).
    params: tuple[PromptParam, ...]
    #: ``Mode.FAST`` / ``Mode.RELAX`` / ``Mode.TURBO`` if the prompt carried ``--fast`` etc.
    mode_flag: str | None

    @property
    def param_dict(self) -> dict[str, str | None]:
        """Canonical name → value (``None`` for flags)."""
        return {p.name: p.value for p in self.params}

    def has(self, name: str) -> bool:
        return _canonical(name) in self.param_dict

    def get(self, name: str) -> str | None:
        """Value of a parameter by canonical name or alias; ``None`` if absent or a flag."""
        return self.param_dict.get(_canonical(name))


# --- parameter table -------------------------------------------------------------------------

# A validator receives the written name (for messages) and the raw value, and returns the value
# to keep (normalised whitespace) or raises.
_Validator = Callable[[str, str | None], str | None]

#: Most digits a whole number may have. Python refuses ``int()`` of a string of more than 4300
#: digits (a ValueError, which would be a 500); no range here comes near 20 digits, so a longer
#: number is refused as out of range before anything converts it, here or in the accessors.
_MAX_DIGITS = 20
_INT_RE = re.compile(rf"^\+?\d{{1,{_MAX_DIGITS}}}$")
_NUMBER_RE = re.compile(r"^\+?(?:\d+(?:\.\d*)?|\.\d+)$")
_RATIO_RE = re.compile(rf"^(\d{{1,{_MAX_DIGITS}}}):(\d{{1,{_MAX_DIGITS}}})$")
_LONG_RATIO_RE = re.compile(r"^\d+:\d+$")


def _fail(message: str, written: str, value: str | None = None) -> ValidationFailed:
    details: dict[str, object] = {"parameter": f"--{written}"}
    if value is not None:
        details["value"] = value
    return ValidationFailed(message, details=details)


def _need_value(written: str, value: str | None, example: str) -> str:
    if value is None:
        raise _fail(f"--{written} needs a value, for example --{written} {example}.", written)
    return value


def _int_range(low: int, high: int) -> _Validator:
    def check(written: str, value: str | None) -> str:
        raw = _need_value(written, value, str((low + high) // 2))
        if not _INT_RE.match(raw) or not low <= int(raw) <= high:
            raise _fail(
                f"--{written} must be a whole number from {low} to {high}; got '{raw}'.",
                written,
                raw,
            )
        return raw

    return check


def _number_range(low: float, high: float) -> _Validator:
    def check(written: str, value: str | None) -> str:
        raw = _need_value(written, value, f"{high:g}")
        if not _NUMBER_RE.match(raw) or not low <= float(raw) <= high:
            raise _fail(
                f"--{written} must be a number from {low:g} to {high:g}; got '{raw}'.",
                written,
                raw,
            )
        return raw

    return check


def _decimal_choice(choices: tuple[str, ...], *, optional: bool = False) -> _Validator:
    # Compared as decimals so "5", "5.0" and "5.00" are the same version, ".5" equals "0.5".
    allowed = {Decimal(c) for c in choices}
    listing = ", ".join(choices)

    def check(written: str, value: str | None) -> str | None:
        if value is None and optional:
            return None
        raw = _need_value(written, value, choices[-1])
        try:
            ok = bool(_NUMBER_RE.match(raw)) and Decimal(raw) in allowed
        except InvalidOperation:  # pragma: no cover - the regex admits only decimals
            ok = False
        if not ok:
            raise _fail(f"--{written} must be one of {listing}; got '{raw}'.", written, raw)
        return raw

    return check


def _flag(written: str, value: str | None) -> None:
    if value is not None:
        raise _fail(f"--{written} takes no value; got '{value}'.", written, value)
    return None


def _text(*, example: str) -> _Validator:
    def check(written: str, value: str | None) -> str:
        return _need_value(written, value, example)

    return check


def _optional_text(written: str, value: str | None) -> str | None:
    return value


def _ratio(written: str, value: str | None) -> str:
    raw = _need_value(written, value, "16:9")
    match = _RATIO_RE.match(raw)
    if match is None and _LONG_RATIO_RE.match(raw):
        raise _fail(
            f"--{written} takes whole numbers of at most {_MAX_DIGITS} digits, like 16:9; "
            f"got '{raw}'.",
            written,
            raw,
        )
    if not match or int(match[1]) == 0 or int(match[2]) == 0:
        raise _fail(
            f"--{written} must be a ratio of two positive whole numbers, like 16:9; got '{raw}'.",
            written,
            raw,
        )
    width, height = int(match[1]), int(match[2])
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise _fail(
            f"--{written} {raw} is too extreme; the ratio must lie between "
            f"1:{MAX_ASPECT_RATIO} and {MAX_ASPECT_RATIO}:1.",
            written,
            raw,
        )
    return raw


#: ``--style`` words Midjourney knows (raw for v5.1+, the niji styles, the v4 styles and the
#: v3 stylize presets); a style code (``--style 3d7fzgKAt1Qm``, from the style tuner or
#: ``--style random``'s answer) is letters and digits with at least one digit.
STYLE_WORDS = ("raw", "cute", "expressive", "original", "scenic", "4a", "4b", "4c", "random")
_STYLE_CODE_RE = re.compile(r"^(?=[A-Za-z0-9-]*\d)[A-Za-z0-9-]{3,64}$")


def _style(written: str, value: str | None) -> str:
    raw = _need_value(written, value, "raw")
    for part in raw.split():
        if part.lower() not in STYLE_WORDS and not _STYLE_CODE_RE.match(part):
            raise _fail(
                f"--{written} must be one of {', '.join(STYLE_WORDS)} or a style code; "
                f"got '{part}'.",
                written,
                raw,
            )
    return raw


#: ``--sref`` / ``--cref`` / ``--oref`` values: image URLs (``::weight`` allowed on style
#: references), style codes (numbers) and ``random`` for ``--sref``; exactly one URL for
#: ``--oref``.
REFERENCE_URL_RE = re.compile(r"^<?(https?://[^\s<>]+?)>?(?:::(\d+(?:\.\d+)?))?$", re.I)
_SREF_CODE_RE = re.compile(r"^\d{1,20}(?:::\d+(?:\.\d+)?)?$")
_REF_EXAMPLES = {
    "sref": "https://example.com/style.png",
    "cref": "https://example.com/character.png",
    "oref": "https://example.com/object.png",
}
#: ``--p`` codes (personalization profiles and moodboards): letters, digits, ``_`` and ``-``.
_PROFILE_CODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def _references(written: str, value: str | None, *, kind: str) -> str:
    raw = _need_value(written, value, _REF_EXAMPLES[kind])
    parts = raw.split()
    if kind == "oref" and len(parts) != 1:
        raise _fail(f"--{written} takes exactly one image URL; got {len(parts)}.", written, raw)
    for part in parts:
        match = REFERENCE_URL_RE.match(part)
        if match is not None and (kind == "sref" or match[2] is None):
            continue
        if kind == "sref" and (part.lower() == "random" or _SREF_CODE_RE.match(part)):
            continue
        wanted = {
            "sref": "image URLs, style codes (numbers) or random",
            "cref": "image URLs",
            "oref": "one image URL",
        }[kind]
        raise _fail(f"--{written} takes {wanted}; got '{part}'.", written, raw)
    return raw


def _personalization(written: str, value: str | None) -> str | None:
    if value is None:
        return None
    for part in value.split():
        if not _PROFILE_CODE_RE.match(part):
            raise _fail(
                f"--{written} takes personalization codes (letters, digits, _ and -); "
                f"got '{part}'.",
                written,
                value,
            )
    return value


def _one_job_only(written: str, value: str | None) -> None:
    # Midjourney runs ``--repeat N`` as N jobs; a task is one job, priced and tracked as one.
    raise _fail(
        f"--{written} is not supported: Midjourney would run the prompt as several jobs, and "
        "a task is one job. Submit the prompt as several tasks instead.",
        written,
        value,
    )


@dataclass(frozen=True)
class _Spec:
    names: tuple[str, ...]  # canonical first
    validate: _Validator


_SPECS: tuple[_Spec, ...] = (
    _Spec(("ar", "aspect"), _ratio),
    _Spec(
        ("v", "version"),
        _decimal_choice(("1", "2", "3", "4", "5", "5.1", "5.2", "6", "6.1", "7")),
    ),
    # niji 7 is accepted as well as the 4-6 of the brief: rejecting a model upstream serves
    # would break clients for no gain.
    _Spec(("niji",), _decimal_choice(("4", "5", "6", "7"), optional=True)),
    _Spec(("stylize", "s"), _int_range(0, 1000)),
    _Spec(("chaos", "c"), _int_range(0, 100)),
    _Spec(("quality", "q"), _decimal_choice((".25", ".5", "1", "2", "4"))),
    _Spec(("seed", "sameseed"), _int_range(0, 4_294_967_295)),
    _Spec(("no",), _text(example="plants")),
    _Spec(("iw",), _number_range(0, 3)),
    _Spec(("sref",), lambda w, v: _references(w, v, kind="sref")),
    _Spec(("cref",), lambda w, v: _references(w, v, kind="cref")),
    _Spec(("oref",), lambda w, v: _references(w, v, kind="oref")),
    _Spec(("cw",), _int_range(0, 100)),
    _Spec(("sw",), _int_range(0, 1000)),
    _Spec(("ow",), _int_range(1, 1000)),
    _Spec(("sv",), _int_range(1, 7)),
    _Spec(("exp",), _int_range(0, 100)),
    _Spec(("zoom",), _number_range(1, 2)),
    _Spec(("tile",), _flag),
    _Spec(("style",), _style),
    _Spec(("raw",), _flag),
    _Spec(("weird", "w"), _int_range(0, 3000)),
    _Spec(("stop",), _int_range(10, 100)),
    _Spec(("repeat", "r"), _one_job_only),
    _Spec(("personalize", "p", "profile"), lambda w, v: _personalization(w, v)),
    _Spec(("draft",), _flag),
    _Spec(("hd",), _flag),
    _Spec(("video",), _flag),
    _Spec(("public",), _flag),
    _Spec(("stealth",), _flag),
    _Spec(("fast",), _flag),
    _Spec(("relax",), _flag),
    _Spec(("turbo",), _flag),
)

_SPEC_BY_NAME: dict[str, _Spec] = {name: spec for spec in _SPECS for name in spec.names}

#: Every accepted spelling (lower-case) → canonical name.
PARAMETER_ALIASES: dict[str, str] = {name: spec.names[0] for name, spec in _SPEC_BY_NAME.items()}

_MODE_FLAGS: dict[str, str] = {"fast": Mode.FAST, "relax": Mode.RELAX, "turbo": Mode.TURBO}


def _canonical(name: str) -> str:
    key = name.strip().lstrip("-").lower()
    return PARAMETER_ALIASES.get(key, key)


# --- parsing ---------------------------------------------------------------------------------

# Phones "smart-punctuate" `--` into an em dash (iOS) or an en dash, keyboards offer other long
# dashes (figure dash, horizontal bar, minus sign, full-width hyphen); Midjourney reads them
# all as `--`, so we normalise them before parsing and the parameter is validated like any
# other. Only a run of dashes that starts a word, holds at least one long dash and is glued to
# a letter is a parameter marker, so "cats — dogs" stays prose.
LONG_DASHES = "\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"
_SMART_DASH_RE = re.compile(
    rf"(?<!\S)[-{LONG_DASHES}]*[{LONG_DASHES}][-{LONG_DASHES}]*(?=[A-Za-z])"
)
_PARAM_START_RE = re.compile(r"(?:^|\s)--(?=[A-Za-z])")
_PARAM_SPLIT_RE = re.compile(r"\s+(?=--[A-Za-z])")
_PARAM_RE = re.compile(r"^--(\S+)(?:\s+(.*))?$", re.S)
_URL_TOKEN_RE = re.compile(r"^<?(https?://[^\s<>]+)>?$", re.I)


def _reject_control_characters(prompt: str) -> None:
    # PostgreSQL cannot store NUL and upstreams choke on the rest. Line breaks of every kind are
    # whitespace to the parser (the prompt is made one line below).
    refuse_control_characters(prompt, what="The prompt", allow="\t\n\r" + LINE_SEPARATORS)


def parse_prompt(prompt: str, *, max_length: int = DEFAULT_MAX_LENGTH) -> ParsedPrompt:
    """Validate a Midjourney prompt and split it into URLs, text, parameters and mode flag.

    Raises ``ValidationFailed`` with a sentence naming the offending parameter and value.
    """
    if not isinstance(prompt, str):
        raise ValidationFailed("The prompt must be a string.", details={"field": "prompt"})
    original = prompt.strip()
    if not original:
        raise ValidationFailed(
            "The prompt is empty; describe the image you want.", details={"field": "prompt"}
        )
    if len(original) > max_length:
        raise ValidationFailed(
            f"The prompt is {len(original)} characters long; the maximum is {max_length}.",
            details={"length": len(original), "max_length": max_length},
        )
    _reject_control_characters(original)

    # Discord prompts are one line; collapsing whitespace also makes the tail easy to split.
    normalized = " ".join(_SMART_DASH_RE.sub("--", original).split())
    _refuse_permutations(normalized)

    start = _PARAM_START_RE.search(normalized)
    head, tail = (
        (normalized, "")
        if start is None
        else (normalized[: start.start()], normalized[start.start() :])
    )

    head_tokens = head.split()
    url_tokens: list[str] = []
    image_urls: list[str] = []
    for token in head_tokens:
        match = _URL_TOKEN_RE.match(token)
        if match is None:
            break
        url_tokens.append(token)
        image_urls.append(match[1])
    text = " ".join(head_tokens[len(url_tokens) :])

    params, mode_flag = _parse_params(tail.strip())
    check_model_version(params, image_urls=tuple(image_urls))

    if not text and len(image_urls) < 2:
        if image_urls:
            raise ValidationFailed(
                "A single image URL is not a prompt; add a description or a second image."
            )
        if params or mode_flag:
            raise ValidationFailed(
                "The prompt has parameters but no description; describe the image before "
                "the parameters."
            )
        raise ValidationFailed(
            "The prompt is empty; describe the image you want.", details={"field": "prompt"}
        )

    clean_prompt = " ".join([*url_tokens, *([text] if text else []), *(p.render() for p in params)])
    return ParsedPrompt(
        original=original,
        clean_prompt=clean_prompt,
        text=text,
        image_urls=tuple(image_urls),
        params=tuple(params),
        mode_flag=mode_flag,
    )


def _permutation(prompt: str) -> str | None:
    """The first permutation group (``{red, green}``) of ``prompt``, if it has one.

    A group is an unescaped ``{`` … ``}`` holding an unescaped comma; ``\\{``, ``\\}`` and
    ``\\,`` are Midjourney's literal characters and a brace without a comma is one option.
    """
    if "{" not in prompt:
        return None
    groups: list[list[int]] = []  # per open brace: [where it opens, whether it has a comma]
    index = 0
    while index < len(prompt):
        char = prompt[index]
        if char == "\\":
            index += 2
            continue
        if char == "{":
            groups.append([index, 0])
        elif char == "," and groups:
            groups[-1][1] = 1
        elif char == "}" and groups:
            start, comma = groups.pop()
            if comma:
                return prompt[start : index + 1]
        index += 1
    return None


def _refuse_permutations(prompt: str) -> None:
    group = _permutation(prompt)
    if group is not None:
        # Midjourney runs one job per combination of the options; a task is one job.
        raise ValidationFailed(
            f"Permutation prompts are not supported: {group} would make Midjourney run one "
            "job per option, and a task is one job. Submit one task per variant instead, or "
            "write \\{ \\} for literal braces.",
            details={"permutation": group},
        )


def _parse_params(tail: str) -> tuple[list[PromptParam], str | None]:
    params: list[PromptParam] = []
    seen: dict[str, str] = {}
    modes: list[str] = []
    if not tail:
        return params, None
    for segment in _PARAM_SPLIT_RE.split(tail):
        match = _PARAM_RE.match(segment)
        if match is None:  # pragma: no cover - the split only yields "--<letter>…" segments
            raise ValidationFailed(f"Could not read the parameter '{segment}'.")
        written, value = match[1], (match[2] or "").strip() or None
        spec = _SPEC_BY_NAME.get(written.lower())
        if spec is None:
            raise _unknown_parameter(written)
        canonical = spec.names[0]
        kept = spec.validate(written, value)
        if canonical in seen:
            first = seen[canonical]
            also = "" if first == written else f" (as --{first} and --{written})"
            raise _fail(f"--{written} is given more than once{also}; keep one.", written)
        seen[canonical] = written
        if canonical in _MODE_FLAGS:
            modes.append(canonical)
            continue
        params.append(PromptParam(name=canonical, written=written, value=kept))
    if len(modes) > 1:
        raise ValidationFailed(
            f"The prompt asks for more than one mode ({', '.join('--' + m for m in modes)}); "
            "use only one of --fast, --relax and --turbo.",
            details={"parameters": [f"--{m}" for m in modes]},
        )
    return params, (_MODE_FLAGS[modes[0]] if modes else None)


def _unknown_parameter(written: str) -> ValidationFailed:
    close = difflib.get_close_matches(written.lower(), list(_SPEC_BY_NAME), n=1, cutoff=0.75)
    hint = f" (did you mean --{close[0]}?)" if close else ""
    return ValidationFailed(
        f"Unknown parameter --{written}{hint}.", details={"parameter": f"--{written}"}
    )


# --- model versions: which parameters each one takes ----------------------------------------
#
# Midjourney's parameters are tied to model versions: character reference (--cref, --cw) is a
# V6 feature that V7 replaced with omni reference (--oref, --ow); draft mode and --exp exist
# only in V7; style references and personalization start at V6 (and niji 6); the image weight's
# range is 0.5-2 on V5 and 0-3 from V6 on. A prompt that names its model (--v, --niji) is
# checked against it here; without one the account's default model decides upstream.


@dataclass(frozen=True)
class _Model:
    family: str  # "v" or "niji"
    version: Decimal

    def shown(self, written: str) -> str:
        number = format(self.version.normalize(), "f")
        return f"--{written} {number}"


#: parameter → (allowed models, in words; the test).
_VERSION_RULES: dict[str, tuple[str, Callable[[_Model], bool]]] = {
    "cref": ("V6, V6.1 and niji 6", lambda m: Decimal(6) <= m.version < Decimal(7)),
    "cw": ("V6, V6.1 and niji 6", lambda m: Decimal(6) <= m.version < Decimal(7)),
    "oref": ("V7", lambda m: m.family == "v" and m.version >= Decimal(7)),
    "ow": ("V7", lambda m: m.family == "v" and m.version >= Decimal(7)),
    "draft": ("V7", lambda m: m.family == "v" and m.version >= Decimal(7)),
    "exp": ("V7", lambda m: m.family == "v" and m.version >= Decimal(7)),
    "sref": ("V6 and later (and niji 6 and later)", lambda m: m.version >= Decimal(6)),
    "sw": ("V6 and later (and niji 6 and later)", lambda m: m.version >= Decimal(6)),
    "personalize": ("V6 and later (and niji 6 and later)", lambda m: m.version >= Decimal(6)),
}
#: ``--iw``'s range by model: (lowest version, low, high), checked from the newest.
_IMAGE_WEIGHT_RANGES: tuple[tuple[Decimal, Decimal, Decimal], ...] = (
    (Decimal(6), Decimal(0), Decimal(3)),
    (Decimal(5), Decimal("0.5"), Decimal(2)),
)
#: ``--niji`` without a number: the current niji model.
_NIJI_DEFAULT = Decimal(6)


def _model_of(params: Iterable[PromptParam]) -> tuple[_Model, str] | None:
    for param in params:
        if param.name == "v" and param.value is not None:
            return _Model("v", Decimal(param.value)), param.written
        if param.name == "niji":
            version = Decimal(param.value) if param.value is not None else _NIJI_DEFAULT
            return _Model("niji", version), param.written
    return None


def check_model_version(params: Iterable[PromptParam], *, image_urls: tuple[str, ...]) -> None:
    """Refuse parameters the prompt's own model (``--v``/``--niji``) does not take, and an
    image weight out of that model's range."""
    params = tuple(params)
    names = {p.name for p in params}
    if "v" in names and "niji" in names:
        raise ValidationFailed(
            "The prompt names two models (--v and --niji); keep one.",
            details={"parameters": ["--v", "--niji"]},
        )
    found = _model_of(params)
    if found is None:
        return
    model, model_written = found
    for param in params:
        rule = _VERSION_RULES.get(param.name)
        if rule is not None and not rule[1](model):
            raise _fail(
                f"--{param.written} works only with {rule[0]}; this prompt uses "
                f"{model.shown(model_written)}.",
                param.written,
                param.value,
            )
        if param.name == "iw" and param.value is not None:
            _check_image_weight(param, model, model_written)


def _check_image_weight(param: PromptParam, model: _Model, model_written: str) -> None:
    weight = Decimal(param.value or "0")
    for lowest, low, high in _IMAGE_WEIGHT_RANGES:
        if model.version >= lowest:
            if not low <= weight <= high:
                raise _fail(
                    f"--{param.written} must be a number from {low} to {high} with "
                    f"{model.shown(model_written)}; got '{param.value}'.",
                    param.written,
                    param.value,
                )
            return
    raise _fail(
        f"--{param.written} works only with V5 and later; this prompt uses "
        f"{model.shown(model_written)}.",
        param.written,
        param.value,
    )


def is_draft(parsed: ParsedPrompt) -> bool:
    """Draft mode (``--draft``, V7): faster, cheaper pictures; priced on its own."""
    return parsed.has("draft")


# --- typed accessors -------------------------------------------------------------------------


def aspect_ratio(parsed: ParsedPrompt) -> tuple[int, int]:
    """``(width, height)`` as written (``--ar 16:9`` → ``(16, 9)``); ``(1, 1)`` by default."""
    value = parsed.get("ar")
    if value is None:
        return (1, 1)
    width, height = value.split(":")
    return (int(width), int(height))


def seed(parsed: ParsedPrompt) -> int | None:
    value = parsed.get("seed")
    return None if value is None else int(value)


def known_seed(*, current: int | None, prompt: str, started: bool) -> int | None:
    """The seed a task's image is made with, as far as it is known without asking anyone.

    ``current`` is the task's seed, ``prompt`` what goes upstream, ``started`` whether the job has
    started upstream. Every task is given a seed of ours when it is accepted, but until it
    starts nobody knows which engine runs it, and an engine whose upstream picks the seed
    replaces ours when the job starts (with the prompt's ``--seed``, or nothing until the
    upstream is asked). So before the start only a seed the prompt fixes is known; from the
    start on the task's own seed is the truth (the sandbox renders with it).
    """
    if started:
        return current
    if "seed" not in prompt.lower():  # no --seed/--sameseed: skip the parse
        return None
    try:
        return seed(parse_prompt(prompt))
    except ValidationFailed:  # an old or odd prompt fixes no seed
        return None


def zoom(parsed: ParsedPrompt) -> float | None:
    value = parsed.get("zoom")
    return None if value is None else float(value)


# --- banned words ----------------------------------------------------------------------------


def _unspaced_script(char: str) -> bool:
    """True for scripts written without spaces, where a word boundary cannot be required."""
    code = ord(char)
    return (
        0x0E00 <= code <= 0x0EFF  # Thai, Lao
        or 0x1000 <= code <= 0x109F  # Myanmar
        or 0x1780 <= code <= 0x17FF  # Khmer
        or 0x2E80 <= code <= 0x9FFF  # CJK radicals, kana, CJK ideographs
        or 0xF900 <= code <= 0xFAFF  # CJK compatibility ideographs
        or 0xFF66 <= code <= 0xFF9F  # half-width katakana
        or 0x20000 <= code <= 0x3FFFF  # CJK extensions
    )


def _word_pattern(phrase: str) -> str:
    body = r"\s+".join(re.escape(part) for part in phrase.split())
    # A boundary is needed only where the phrase itself ends in a word character of a spaced
    # script: "ass" must not match "class", but "色情" must match inside "色情图片" and "$$$"
    # must match in "a$$$".
    # A hyphen joining two words makes one word: "gore" must not match "Gore-tex" nor
    # "anti-gore", while "gore-" or "- gore" still do.
    left = r"(?<!\w)(?<!\w-)" if _is_word_char(phrase[0]) else ""
    right = r"(?!\w)(?!-\w)" if _is_word_char(phrase[-1]) else ""
    return left + body + right


def _is_word_char(char: str) -> bool:
    return (char.isalnum() or char == "_") and not _unspaced_script(char)


@functools.lru_cache(maxsize=32)
def _banned_regex(banned: tuple[str, ...]) -> tuple[re.Pattern[str] | None, tuple[str, ...]]:
    words = tuple(dict.fromkeys(w.strip() for w in banned if w and w.strip()))
    if not words:
        return None, words
    alternation = "|".join(f"(?P<b{i}>{_word_pattern(w)})" for i, w in enumerate(words))
    return re.compile(alternation, re.IGNORECASE), words


def find_banned_word(text: str, banned: Iterable[str]) -> str | None:
    """The first banned word or phrase (as listed) found in ``text``, else ``None``.

    Whole words only and case-insensitive: "ass" does not match "class" but matches "ass," and
    "(ASS)"; a hyphenated compound is one word ("gore" does not match "Gore-tex"). Phrases match across any whitespace. For scripts written without spaces (Chinese,
    Japanese, Thai…) the word is matched as a substring, since there are no boundaries to find.
    """
    regex, words = _banned_regex(tuple(banned))
    if regex is None or not text:
        return None
    match = regex.search(text)
    if match is None or match.lastgroup is None:
        return None
    return words[int(match.lastgroup[1:])]


# --- numbered prompt lists -------------------------------------------------------------------

#: Keycap digits 1️⃣ … 5️⃣ (digit, VS16, combining keycap), as DESCRIBE and SHORTEN results
#: number their prompts.
_NUMBER_MARK_RE = re.compile("([1-5])\ufe0f\u20e3")


def numbered_prompts(text: str) -> list[str]:
    """The prompts of a ``1️⃣ … 2️⃣ …`` list, whitespace collapsed, empty entries skipped.

    The one reader of these lists: engines use it to fill ``properties["prompts"]``, the
    services to start a follow-up from prompt *n*, the dashboard to show them.
    """
    parts = _NUMBER_MARK_RE.split(text or "")
    found: list[str] = []
    for index in range(1, len(parts) - 1, 2):
        candidate = " ".join(parts[index + 1].split())
        if candidate:
            found.append(candidate)
    return found


def result_prompts(properties: Mapping[str, Any] | None) -> list[str]:
    """A DESCRIBE or SHORTEN result's prompts: the kept list, else read from ``finalPrompt``."""
    properties = properties or {}
    kept = properties.get("prompts")
    if isinstance(kept, list) and kept:
        return [str(p) for p in kept]
    return numbered_prompts(str(properties.get("finalPrompt") or ""))
