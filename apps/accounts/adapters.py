"""allauth hooks: a new user gets a personal organization and the sign-up grant; MFA secrets
are encrypted at rest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from allauth.account.adapter import DefaultAccountAdapter
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


def public_url(url: str) -> str:
    """``url`` (an absolute link allauth built on the request's Host) on ``PUBLIC_BASE_URL``.

    The Host header is the client's to write: where ALLOWED_HOSTS lets any through (``*``),
    a stranger asking for someone's password reset would otherwise have the mailed link, and
    its key, point at a host of theirs. A relative URL is returned as it is.
    """
    parts = urlsplit(url)
    if not parts.netloc:
        return url
    return settings.PUBLIC_BASE_URL + urlunsplit(("", "", parts.path, parts.query, parts.fragment))


class AccountAdapter(DefaultAccountAdapter):
    def send_mail(self, template_prefix: str, email: str, context: dict[str, Any]) -> None:
        # Links in mails (activate_url, password_reset_url, signup_url …) and the site's
        # address go to PUBLIC_BASE_URL, never to the host a request named.
        links = {
            key: public_url(value)
            for key, value in context.items()
            if key.endswith("_url") and isinstance(value, str)
        }
        site = ProductSite(
            name=settings.SITE_NAME, domain=urlsplit(settings.PUBLIC_BASE_URL).netloc
        )
        super().send_mail(template_prefix, email, {**context, **links, "current_site": site})

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
