"""Writes of the mjproxy engine on its own rows: the per-account callback token.

The callback itself arrives on the tasks side (``apps.tasks.views.engine_callback``): the
engine authenticates and parses it (``MjproxyEngine.callback_authentic``/``parse_callback``),
the lifecycle applies it. Nothing here touches a task.
"""

from __future__ import annotations

import secrets
from typing import Any, cast

from django.db import transaction

from apps.engines.models import UpstreamAccount


def mjproxy_callback_token_ensure(*, account_id: int) -> str:
    """The account's callback token, generated once (under a row lock, so exactly once)."""
    with transaction.atomic():
        locked = UpstreamAccount.objects.select_for_update().get(pk=account_id)
        # The field decrypts to a dict; its static type is its database column's (text).
        stored = dict(cast("dict[str, Any]", locked.secrets or {}))
        if not stored.get("callback_token"):
            stored["callback_token"] = secrets.token_urlsafe(32)
            UpstreamAccount.objects.filter(pk=account_id).update(secrets=stored)
    return str(stored["callback_token"])
