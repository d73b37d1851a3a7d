from __future__ import annotations

from apps.accounts.models import Organization

from .models import OrganizationTranslation, Translator


def translator_active() -> Translator | None:
    return Translator.objects.filter(is_active=True).first()


def translation_enabled(*, organization: Organization, translator: Translator) -> bool:
    """The organization's own choice, or the translator's default when it made none."""
    chosen = (
        OrganizationTranslation.objects.filter(organization=organization)
        .values_list("enabled", flat=True)
        .first()
    )
    return translator.on_by_default if chosen is None else chosen


def organization_translation_choice(*, organization: Organization) -> bool | None:
    """The organization's own on/off choice; None when it made none (the default applies)."""
    return (
        OrganizationTranslation.objects.filter(organization=organization)
        .values_list("enabled", flat=True)
        .first()
    )
