from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from apps.accounts.models import User
from tests.factories import UserFactory


def admin_url(name: str, *args: Any) -> str:
    return reverse(f"admin:{name}", args=args)


def grant(user: User, *perms: str) -> User:
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user


@pytest.fixture
def operator(db: None) -> User:
    # Not pytest-django's admin_user: tests/conftest.py's admin_user is an organization admin.
    return UserFactory(email="ops@example.com", is_staff=True, is_superuser=True)


@pytest.fixture
def operator_client(operator: User) -> Client:
    client = Client()
    client.force_login(operator)
    return client


@pytest.fixture
def caller(organization: Any, live_key: Any) -> Any:
    from apps.tasks.services.inputs import Caller

    return Caller(organization=organization, api_key=live_key.api_key)
