"""allauth hooks: a new user gets a personal organization and the sign-up grant; MFA secrets
are encrypted at rest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from allauth.core import context as allauth_context
from allauth.mfa.adapter import DefaultMFAAdapter
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest

from apps.core.crypto import decrypt_text, encrypt_text

from .models import User
from .services import user_onboard


@dataclass(frozen=True)
class ProductSite:
    """What mails call the site: the product's name, not the host the request came to."""

    name: str
    domain: str


class AccountAdapter(DefaultAccountAdapter):
    def send_mail(self, template_prefix: str, email: str, context: dict[str, Any]) -> None:
        request = context.get("request") or allauth_context.request
        domain = request.get_host() if isinstance(request, HttpRequest) else ""
        site = ProductSite(name=settings.SITE_NAME, domain=domain)
        super().send_mail(template_prefix, email, {**context, "current_site": site})

    def save_user(self, request: HttpRequest, user: Any, form: Any, commit: bool = True) -> User:
        with transaction.atomic():
            saved: User = super().save_user(request, user, form, commit=commit)
            if commit:
                user_onboard(user=saved)
        return saved


class MFAAdapter(DefaultMFAAdapter):
    """Keeps MFA secrets (the TOTP key, the recovery-code seed) encrypted at rest.

    allauth stores them in ``Authenticator.data`` as given; this encrypts them with the field
    encryption keys (``apps.core.crypto``), so a database dump or backup does not hand out
    anyone's second factor. Values written before this adapter (no prefix) still read as they
    are; migration ``operator.0002`` encrypts them.
    """

    PREFIX = "enc:"

    def encrypt(self, text: str) -> str:
        return self.PREFIX + encrypt_text(text)

    def decrypt(self, encrypted_text: str) -> str:
        if encrypted_text.startswith(self.PREFIX):
            return decrypt_text(encrypted_text[len(self.PREFIX) :])
        return encrypted_text
