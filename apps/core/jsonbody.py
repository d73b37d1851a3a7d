"""Bounded JSON request bodies, the same for every API dialect (issue 19).

``json.loads`` costs memory by the number of values, not by the size of the body: 68 MiB of
``[],[],…`` become 34 million list objects, close to 2 GB in one web worker, and the parse
holds the worker for half a minute. So the body is measured before it is parsed, with
operations that run at C speed over the bytes and allocate at most a copy of the body:

* at most :data:`~apps.core.ratelimit.MAX_REQUEST_BODY_BYTES` bytes are read, whatever the
  declared length says (413);
* at most :data:`MAX_JSON_VALUES` values (counted from the commas, brackets and braces outside
  string literals) and :data:`MAX_JSON_DEPTH` levels of nesting (400);
* no string literal longer than :data:`MAX_JSON_STRING_BYTES`, the base64 text of one 10 MiB
  image, the largest single value any endpoint accepts (413).

After parsing, a string that PostgreSQL cannot store or that is not text at all (a NUL
character, an unpaired UTF-16 surrogate such as ``"\\ud800"``) is a validation error naming its
top-level field, instead of a database error (HTTP 500) later.

Every dialect's parser calls :func:`json_body_parse`; each dialect maps the DRF exceptions raised
here to its own error shape.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any, Protocol

from rest_framework import exceptions
from rest_framework.parsers import BaseParser

from .ratelimit import MAX_REQUEST_BODY_BYTES, RequestTooLarge

#: Values (scalars and containers) one body may hold. The largest legitimate body lists 1,000
#: task ids (``list-by-condition``); metadata objects are small.
MAX_JSON_VALUES = 10_000
#: Nesting levels one body may have; no endpoint reads anything nested more than a few deep.
MAX_JSON_DEPTH = 32
#: One string literal as it stands in the body: the base64 text of a 10 MiB image, with room
#: for a data-URL prefix and for encoders that escape ``/`` as ``\\/`` (one base64 character in
#: 64 is a slash).
MAX_JSON_STRING_BYTES = math.ceil(4 * math.ceil(10 * 1024 * 1024 / 3) * 1.05) + 1024

_QUOTE = re.compile(rb'"')
_BRACKET = re.compile(rb"[\[\]{}]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class JSONBodyInvalid(exceptions.ParseError):
    default_detail = "The request body is not valid JSON."


class JSONBodyTooDeep(JSONBodyInvalid):
    default_detail = "JSON parse error - the body is nested too deeply."


class JSONBodyTooManyValues(exceptions.ParseError):
    default_detail = f"The request body holds more than {MAX_JSON_VALUES} JSON values."


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


def json_body_read(stream: Readable | None) -> bytes:
    """The body, never more than the cap (a body sent without a trustworthy length included)."""
    if stream is None:
        return b""
    raw = stream.read(MAX_REQUEST_BODY_BYTES + 1)
    if len(raw) > MAX_REQUEST_BODY_BYTES:
        raise RequestTooLarge(
            f"The request body is larger than {MAX_REQUEST_BODY_BYTES} bytes.",
            details={"max_bytes": MAX_REQUEST_BODY_BYTES},
        )
    return bytes(raw)


def json_body_check(raw: bytes) -> None:
    """Refuse a body whose parse would cost more than any legitimate request's.

    Runs before ``json.loads``. Every step is a C-level search or count over the bytes, and
    nothing but the escape-free copy (only when the body has escapes) is allocated.
    """
    # Without escaped backslashes, then escaped quotes, every '"' opens or closes a string
    # literal. (bytes.replace pairs backslashes left to right, as JSON does; C speed, unlike a
    # regular expression substitution, which takes a minute on millions of escapes.)
    body = raw.replace(b"\\\\", b"").replace(b'\\"', b"") if b"\\" in raw else raw
    if body.count(b'"') > 2 * MAX_JSON_VALUES + 1:
        raise JSONBodyTooManyValues()
    quotes = [match.start() for match in _QUOTE.finditer(body)]
    # Outside the literals: [0, q0), (q1, q2), (q3, q4), …; the literals are (q0, q1), (q2, q3) …
    bounds = [-1, *quotes, len(body)]
    outside = [(bounds[i] + 1, bounds[i + 1]) for i in range(0, len(bounds) - 1, 2)]
    longest = max((quotes[i + 1] - quotes[i] - 1 for i in range(0, len(quotes) - 1, 2)), default=0)
    if longest > MAX_JSON_STRING_BYTES:
        raise RequestTooLarge(
            f"A value in the request body is {longest} bytes long; at most "
            f"{MAX_JSON_STRING_BYTES} bytes (one 10 MiB image as base64) are accepted.",
            details={"max_value_bytes": MAX_JSON_STRING_BYTES},
        )
    # Depth first, over a bounded number of brackets: ``[[[[…`` is "too deep", not merely
    # "too many values", and the loop never runs longer than the value limit allows.
    depth = seen = 0
    for start, end in outside:
        for match in _BRACKET.finditer(body, start, end):
            depth += 1 if match.group() in b"[{" else -1
            if depth > MAX_JSON_DEPTH:
                raise JSONBodyTooDeep()
            seen += 1
            if seen > MAX_JSON_VALUES:
                raise JSONBodyTooManyValues()
    values = 1 + sum(
        body.count(b",", start, end) + body.count(b"[", start, end) + body.count(b"{", start, end)
        for start, end in outside
    )
    if values > MAX_JSON_VALUES:
        raise JSONBodyTooManyValues()


def _strict_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _strings(value: Any) -> Iterator[str]:
    """Every string in a parsed body, keys included (the body is small by now)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def first_surrogate(value: str) -> str | None:
    """The first unpaired UTF-16 surrogate in ``value``, if any (one C-level search)."""
    match = _SURROGATE.search(value)
    return match.group() if match else None


def text_is_storable(value: str) -> bool:
    """False for text PostgreSQL refuses or that is not Unicode text (NUL, lone surrogates)."""
    return "\x00" not in value and _SURROGATE.search(value) is None


def json_text_check(data: Any) -> None:
    """Refuse NUL characters and unpaired surrogates anywhere in a parsed body."""
    fields = data.items() if isinstance(data, dict) else [("body", data)]
    for field, value in fields:
        if not isinstance(field, str) or not text_is_storable(field):
            field, value = "body", field
        for text in _strings(value):
            if not text_is_storable(text):
                raise exceptions.ValidationError(
                    {
                        field: [
                            "Text may not contain NUL characters or unpaired UTF-16 "
                            "surrogates (such as \\u0000 or \\ud800)."
                        ]
                    }
                )


def json_body_parse(raw: bytes) -> Any:
    """Parse a request body under the limits above; DRF exceptions describe every refusal."""
    json_body_check(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONBodyInvalid("The request body is not valid UTF-8.") from exc
    try:
        data = json.loads(text, parse_constant=_strict_constant)
    except RecursionError as exc:  # pragma: no cover - the depth check refuses these first
        raise JSONBodyTooDeep() from exc
    except ValueError as exc:
        raise JSONBodyInvalid(f"JSON parse error - {exc}") from exc
    json_text_check(data)
    return data


class JSONBodyParser(BaseParser):
    """JSON bodies under the limits of :mod:`apps.core.jsonbody` (size, values, depth, text).

    Not DRF's ``JSONParser``: that one reads ``HttpRequest.body``, whose 2.5 MiB
    ``DATA_UPLOAD_MAX_MEMORY_SIZE`` check answers an HTML 400 to a valid 3 MB image, while the
    other dialects accept it. One limit, the same for every dialect.
    """

    media_type = "application/json"

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        return json_body_parse(json_body_read(stream))
