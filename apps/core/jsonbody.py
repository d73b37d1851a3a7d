"""Bounded JSON request bodies, the same for every API dialect (issue 19).

``json.loads`` costs memory by the number of values, not by the size of the body: 68 MiB of
``[],[],…`` become 34 million list objects, close to 2 GB in one web worker, and the parse
holds the worker for half a minute. So the body is measured *while it is read*, in chunks,
with operations that run at C speed over each chunk, and a body that breaks a limit is refused
as soon as the chunk that breaks it arrives: a 60 MB bomb costs the web process the few MB
read before the refusal, never the whole body, let alone its parse. The limits:

* at most :data:`~apps.core.ratelimit.MAX_REQUEST_BODY_BYTES` bytes are read, whatever the
  declared length says (413);
* at most :data:`MAX_JSON_VALUES` values (counted from the commas, brackets and braces outside
  string literals) and :data:`MAX_JSON_DEPTH` levels of nesting (400);
* no string literal longer than :data:`MAX_JSON_STRING_BYTES`, the base64 text of one 10 MiB
  image, the largest single value any endpoint accepts (413);
* at most :data:`MAX_JSON_LARGE_STRINGS` literals longer than :data:`LARGE_STRING_BYTES` (the
  images), at most :data:`MAX_JSON_SMALL_TEXT_BYTES` in all other literals together, and at
  most :data:`MAX_JSON_STRUCTURE_BYTES` outside literals (whitespace, numbers, punctuation)
  (413). Only a body shaped like the largest legitimate request (five images as base64) is
  read and parsed in full.

After parsing, a string that PostgreSQL cannot store or that is not text at all (a NUL
character, an unpaired UTF-16 surrogate such as ``"\\ud800"``) is a validation error naming its
top-level field, instead of a database error (HTTP 500) later.

Every dialect's parser calls :func:`json_body_read` and :func:`json_body_parse`; each dialect
maps the DRF exceptions raised here to its own error shape.
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

#: A literal at least this long counts as an image (base64); shorter ones are text. Above the
#: longest text any field accepts (``state``: 65,536 characters, up to 6 bytes each escaped).
LARGE_STRING_BYTES = 1024 * 1024
#: Literals of image size one body may hold: five reference images.
MAX_JSON_LARGE_STRINGS = 5
#: All shorter literals together: five images just under the image size, the longest state
#: and prompt, 1,000 task ids and metadata fit.
MAX_JSON_SMALL_TEXT_BYTES = 8 * 1024 * 1024
#: Bytes outside literals (whitespace, numbers, punctuation): a pretty-printed body of
#: MAX_JSON_VALUES values fits.
MAX_JSON_STRUCTURE_BYTES = 2 * 1024 * 1024
#: Bytes read (and checked) at a time.
READ_CHUNK_BYTES = 256 * 1024

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
    """The body, never more than the cap, checked chunk by chunk as it is read.

    Raises the errors of :func:`json_body_check` as soon as a chunk breaks a limit, so a
    bomb is refused after a few MB, not after the whole body was read into memory.
    """
    if stream is None:
        return b""
    scanner = _Scanner()
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(READ_CHUNK_BYTES)
        if not chunk:
            break
        size += len(chunk)
        if size > MAX_REQUEST_BODY_BYTES:
            raise RequestTooLarge(
                f"The request body is larger than {MAX_REQUEST_BODY_BYTES} bytes.",
                details={"max_bytes": MAX_REQUEST_BODY_BYTES},
            )
        chunk = bytes(chunk)
        scanner.feed(chunk)
        chunks.append(chunk)
    scanner.finish()
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def json_body_check(raw: bytes) -> None:
    """Refuse a body whose parse would cost more than any legitimate request's.

    Runs before ``json.loads``; the same checks :func:`json_body_read` makes while reading.
    """
    scanner = _Scanner()
    view = memoryview(raw)
    for start in range(0, len(raw), READ_CHUNK_BYTES):
        scanner.feed(bytes(view[start : start + READ_CHUNK_BYTES]))
    scanner.finish()


class _Scanner:
    """The limits, checked incrementally over the chunks of a body.

    Every step is a C-level search, count or replace over one chunk; the only Python loops run
    over quotes and brackets, whose number the value limit bounds before they are visited.
    """

    def __init__(self) -> None:
        self.in_string = False
        self.string_bytes = 0  # of the literal being read
        self.string_is_large = False  # counted as an image already
        self.carry = b""  # a backslash that may escape the next chunk's first byte
        self.quotes = 0
        self.values = 1
        self.brackets = 0
        self.depth = 0
        self.structure_bytes = 0
        self.small_text_bytes = 0
        self.large_strings = 0

    def feed(self, chunk: bytes) -> None:
        data = self.carry + chunk if self.carry else chunk
        self.carry = b""
        if data.endswith(b"\\"):
            run = len(data) - len(data.rstrip(b"\\"))
            if run % 2:  # the last backslash escapes whatever comes next
                self.carry, data = b"\\", data[:-1]
        self._scan(data)

    def finish(self) -> None:
        if self.carry:
            self._scan(self.carry)
            self.carry = b""
        if self.in_string:  # an unterminated literal: json.loads says where
            self._string_end()

    def _scan(self, data: bytes) -> None:
        if b"\\" in data:
            # Escaped backslashes, then escaped quotes, become two neutral bytes (as JSON pairs
            # them, left to right): every remaining '"' opens or closes a literal, and every
            # offset still counts the body's own bytes.
            data = data.replace(b"\\\\", b"__").replace(b'\\"', b"__")
        self.quotes += data.count(b'"')
        if self.quotes > 2 * MAX_JSON_VALUES + 1:
            raise JSONBodyTooManyValues()
        start = 0
        for match in _QUOTE.finditer(data):
            self._segment(data, start, match.start())
            if self.in_string:
                self._string_end()
            self.in_string = not self.in_string
            start = match.start() + 1
        self._segment(data, start, len(data))

    def _segment(self, data: bytes, start: int, end: int) -> None:
        if end <= start:
            return
        if self.in_string:
            self.string_bytes += end - start
            if self.string_bytes > MAX_JSON_STRING_BYTES:
                raise RequestTooLarge(
                    f"A value in the request body is over {MAX_JSON_STRING_BYTES} bytes long; "
                    f"at most {MAX_JSON_STRING_BYTES} bytes (one 10 MiB image as base64) are "
                    "accepted.",
                    details={"max_value_bytes": MAX_JSON_STRING_BYTES},
                )
            if not self.string_is_large and self.string_bytes >= LARGE_STRING_BYTES:
                # Counted as soon as it is long enough, not when it ends: the sixth image is
                # refused after its first MiB.
                self.string_is_large = True
                self.large_strings += 1
                if self.large_strings > MAX_JSON_LARGE_STRINGS:
                    raise RequestTooLarge(
                        f"The request body holds more than {MAX_JSON_LARGE_STRINGS} values of "
                        f"{LARGE_STRING_BYTES} bytes or more (images); send at most five.",
                        details={"max_large_values": MAX_JSON_LARGE_STRINGS},
                    )
            return
        self.structure_bytes += end - start
        if self.structure_bytes > MAX_JSON_STRUCTURE_BYTES:
            raise RequestTooLarge(
                f"The request body has more than {MAX_JSON_STRUCTURE_BYTES} bytes outside its "
                "string values (whitespace, numbers, punctuation).",
                details={"max_structure_bytes": MAX_JSON_STRUCTURE_BYTES},
            )
        # Depth over a bounded number of brackets: ``[[[[…`` is "too deep", not merely "too
        # many values", and the loop never runs longer than the value limit allows.
        for match in _BRACKET.finditer(data, start, end):
            self.brackets += 1
            if self.brackets > 2 * MAX_JSON_VALUES:
                raise JSONBodyTooManyValues()
            self.depth += 1 if match.group() in b"[{" else -1
            if self.depth > MAX_JSON_DEPTH:
                raise JSONBodyTooDeep()
        self.values += (
            data.count(b",", start, end)
            + data.count(b"[", start, end)
            + data.count(b"{", start, end)
        )
        if self.values > MAX_JSON_VALUES:
            raise JSONBodyTooManyValues()

    def _string_end(self) -> None:
        if not self.string_is_large:
            self.small_text_bytes += self.string_bytes
            if self.small_text_bytes > MAX_JSON_SMALL_TEXT_BYTES:
                raise RequestTooLarge(
                    f"The request body holds more than {MAX_JSON_SMALL_TEXT_BYTES} bytes of text "
                    "(values shorter than an image).",
                    details={"max_text_bytes": MAX_JSON_SMALL_TEXT_BYTES},
                )
        self.string_bytes = 0
        self.string_is_large = False


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


def json_body_parse(raw: bytes, *, checked: bool = False) -> Any:
    """Parse a request body under the limits above; DRF exceptions describe every refusal.

    ``checked``: ``raw`` came from :func:`json_body_read`, which made the same checks while
    reading it (a second scan of the body would find nothing new)."""
    if not checked:
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
        return json_body_parse(json_body_read(stream), checked=True)
