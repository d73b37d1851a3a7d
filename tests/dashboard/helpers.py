"""Shared helpers of the dashboard tests."""

from __future__ import annotations

from typing import Any

from django.test import Client

from apps.accounts.models import User


def login(user: User, **kwargs: Any) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client
