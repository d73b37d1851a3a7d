"""allauth hooks: a new user gets a personal organization and the sign-up grant."""

from __future__ import annotations

from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from django.db import transaction
from django.http import HttpRequest

from .models import User
from .services import user_onboard


class AccountAdapter(DefaultAccountAdapter):
    def save_user(self, request: HttpRequest, user: Any, form: Any, commit: bool = True) -> User:
        with transaction.atomic():
            saved: User = super().save_user(request, user, form, commit=commit)
            if commit:
                user_onboard(user=saved)
        return saved
