"""The four translation services, each spoken in its own wire format.

Every client takes the texts to translate and a deadline, and returns one English text per
input or raises :class:`TranslationFailed` with a short reason (the service's own error code
or message where it gives one). Nothing here touches the database.
"""

from __future__ import annotations

import hashlib
import json as _json
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlencode

import httpcore

from apps.core.http import OutboundHTTPError, Timeout, UnsafeURL, safe_request

SYSTEM_PROMPT = (
    "You translate Midjourney image prompts into English. Answer with the English text only: "
    "no quotes, no explanations. Keep names, numbers and punctuation; do not add words."
)


#: The most of an answer read; a longer one is a failure (the prompt goes up as written).
MAX_RESPONSE_BYTES = 256 * 1024


class TranslationFailed(Exception):
    """The service could not translate: unreachable, slow, refused, or an unreadable answer."""


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0.05:
        raise TranslationFailed("timed out")
    return left


def _call(
    method: str,
    url: str,
    *,
    deadline: float,
    json: Any = None,
    data: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any] | None]:
    """One request through the SSRF-guarded client, given up on at ``deadline``.

    ``deadline`` bounds the whole exchange (every socket operation is clamped to what is left
    of it), so a service that trickles its answer cannot hold the submit past it; an answer
    over :data:`MAX_RESPONSE_BYTES` is not read further. The base URL is the operator's, so
    private addresses (a LibreTranslate beside the gateway) are allowed; link-local and cloud
    metadata addresses never are, and redirects are not followed.
    """
    request_headers = {"Accept": "application/json", **(headers or {})}
    if json is not None:
        content = _json.dumps(json, ensure_ascii=False).encode()
        request_headers["Content-Type"] = "application/json"
    else:
        content = urlencode(data or {}).encode()
        request_headers["Content-Type"] = "application/x-www-form-urlencoded"
    left = _remaining(deadline)
    try:
        response = safe_request(
            method,
            url,
            headers=request_headers,
            content=content,
            timeout=Timeout(connect=left, read=left, total=left),
            max_response_bytes=MAX_RESPONSE_BYTES,
            allow_private=True,
        )
    except UnsafeURL as exc:
        raise TranslationFailed(f"the address is not allowed ({exc.message})") from None
    except OutboundHTTPError as exc:
        if isinstance(exc.__cause__, httpcore.TimeoutException):
            raise TranslationFailed("timed out") from None
        # The class only: the message names the operator's host, and the reason is shown
        # to the customer in the task's properties.
        cause = exc.__cause__ or exc
        raise TranslationFailed(f"unreachable ({cause.__class__.__name__})") from None
    if response.truncated:
        raise TranslationFailed(f"the answer was larger than {MAX_RESPONSE_BYTES // 1024} KiB")
    try:
        body = _json.loads(response.body)
    except ValueError:
        body = None
    except RecursionError:
        raise TranslationFailed("the answer was not readable (nested too deeply)") from None
    return response.status, body if isinstance(body, dict) else None


def _texts(values: Any, count: int) -> list[str]:
    if not isinstance(values, list) or len(values) != count:
        raise TranslationFailed("the answer did not hold one translation per text")
    if not all(isinstance(v, str) and v.strip() for v in values):
        raise TranslationFailed("the answer held an empty translation")
    return list(values)


def openai_translate(
    texts: Sequence[str], *, base_url: str, model: str, secret: dict[str, Any], deadline: float
) -> list[str]:
    """``POST {base}/chat/completions``, one short conversation per text."""
    out = []
    headers = {"Authorization": f"Bearer {secret.get('api_key', '')}"}
    for text in texts:
        status, body = _call(
            "POST",
            f"{base_url.rstrip('/')}/chat/completions",
            deadline=deadline,
            headers=headers,
            json={
                "model": model or "gpt-4o-mini",
                "temperature": 0,
                "messages": [
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": text},
                ],
            },
        )
        if status != 200 or body is None:
            error = (body or {}).get("error") or {}
            message = error.get("code") or error.get("type") if isinstance(error, dict) else None
            raise TranslationFailed(f"HTTP {status}" + (f" ({message})" if message else ""))
        try:
            content = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise TranslationFailed("the answer had no choices[0].message.content") from None
        out.extend(_texts([content], 1))
    return out


def deepl_translate(
    texts: Sequence[str], *, base_url: str, model: str, secret: dict[str, Any], deadline: float
) -> list[str]:
    """``POST {base}/v2/translate`` with every text in one request."""
    status, body = _call(
        "POST",
        f"{base_url.rstrip('/')}/v2/translate",
        deadline=deadline,
        headers={"Authorization": f"DeepL-Auth-Key {secret.get('api_key', '')}"},
        json={"text": list(texts), "target_lang": "EN-US"},
    )
    if status != 200 or body is None:
        reasons = {403: "authorization failed", 456: "quota exceeded", 429: "too many requests"}
        detail = (body or {}).get("message")
        raise TranslationFailed(f"HTTP {status} ({detail or reasons.get(status, 'error')})")
    translations = body.get("translations")
    if not isinstance(translations, list):
        raise TranslationFailed("the answer had no translations")
    return _texts(
        [t.get("text") if isinstance(t, dict) else None for t in translations], len(texts)
    )


def baidu_sign(app_id: str, query: str, salt: str, secret_key: str) -> str:
    """Baidu's request signature: MD5 of app id, query, salt and key, in that order."""
    return hashlib.md5(
        f"{app_id}{query}{salt}{secret_key}".encode(), usedforsecurity=False
    ).hexdigest()


def baidu_translate(
    texts: Sequence[str], *, base_url: str, model: str, secret: dict[str, Any], deadline: float
) -> list[str]:
    """``POST {base}/api/trans/vip/translate``: one line per text, one result per line."""
    app_id = str(secret.get("app_id", ""))
    query = "\n".join(texts)
    salt = secrets.token_hex(4)
    status, body = _call(
        "POST",
        f"{base_url.rstrip('/')}/api/trans/vip/translate",
        deadline=deadline,
        data={
            "q": query,
            "from": "auto",
            "to": "en",
            "appid": app_id,
            "salt": salt,
            "sign": baidu_sign(app_id, query, salt, str(secret.get("secret_key", ""))),
        },
    )
    if body is None:
        raise TranslationFailed(f"HTTP {status}")
    if "error_code" in body and str(body["error_code"]) != "52000":
        raise TranslationFailed(f"error {body['error_code']} ({body.get('error_msg', '')})")
    results = body.get("trans_result")
    if not isinstance(results, list):
        raise TranslationFailed("the answer had no trans_result")
    return _texts([r.get("dst") if isinstance(r, dict) else None for r in results], len(texts))


def libretranslate_translate(
    texts: Sequence[str], *, base_url: str, model: str, secret: dict[str, Any], deadline: float
) -> list[str]:
    """``POST {base}/translate`` with ``q`` as a list; ``translatedText`` comes back as one."""
    payload: dict[str, Any] = {"q": list(texts), "source": "auto", "target": "en", "format": "text"}
    if secret.get("api_key"):
        payload["api_key"] = secret["api_key"]
    status, body = _call(
        "POST", f"{base_url.rstrip('/')}/translate", deadline=deadline, json=payload
    )
    if status != 200 or body is None:
        detail = (body or {}).get("error")
        raise TranslationFailed(f"HTTP {status}" + (f" ({detail})" if detail else ""))
    return _texts(body.get("translatedText"), len(texts))


Client = Callable[..., list[str]]

CLIENTS: dict[str, Client] = {
    "openai": openai_translate,
    "deepl": deepl_translate,
    "baidu": baidu_translate,
    "libretranslate": libretranslate_translate,
}
