"""Which translator the operator chose, and which organizations use it."""

from __future__ import annotations

from typing import Any

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from apps.accounts.models import Organization
from apps.core.crypto import EncryptedJSONField
from apps.core.models import TimeStampedModel

#: A translator that has not answered by then is given up on; the prompt goes up untranslated.
MAX_TIMEOUT_SECONDS = 3.0


class TranslatorKind(models.TextChoices):
    OPENAI = "openai", "OpenAI-compatible chat completions"
    DEEPL = "deepl", "DeepL API"
    BAIDU = "baidu", "Baidu Translate (fanyi-api)"
    LIBRETRANSLATE = "libretranslate", "LibreTranslate (self-hosted)"


class Translator(TimeStampedModel):
    """One configured translation service. At most one is active at a time."""

    name = models.CharField(max_length=80)
    kind = models.CharField(max_length=20, choices=TranslatorKind.choices)
    base_url = models.URLField(
        max_length=300,
        help_text=(
            "OpenAI: the API root including /v1 (https://api.openai.com/v1). DeepL: "
            "https://api-free.deepl.com or https://api.deepl.com. Baidu: "
            "https://fanyi-api.baidu.com. LibreTranslate: your server's root URL."
        ),
    )
    model = models.CharField(
        max_length=80, blank=True, help_text="OpenAI-compatible only: the model to ask."
    )
    #: {"api_key": …} (OpenAI, DeepL, LibreTranslate) or {"app_id": …, "secret_key": …} (Baidu).
    secrets = EncryptedJSONField(blank=True, default=dict)
    is_active = models.BooleanField(default=False)
    on_by_default = models.BooleanField(
        default=True,
        help_text="Organizations without their own setting translate when this is on.",
    )
    timeout_seconds = models.FloatField(
        default=MAX_TIMEOUT_SECONDS,
        validators=[MinValueValidator(0.2), MaxValueValidator(MAX_TIMEOUT_SECONDS)],
        help_text="Give up after this long (at most 3 s) and send the original prompt.",
    )

    class Meta:
        ordering = ("-is_active", "name", "id")
        constraints = [
            models.UniqueConstraint(
                fields=("is_active",),
                condition=models.Q(is_active=True),
                name="translation_one_active_translator",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"

    def validate_constraints(self, exclude: Any = None) -> None:
        # "One active translator" is kept by ``translator_save``, which deactivates the others
        # in the same transaction; a form must not refuse the switch beforehand. The database
        # constraint still guards every other path.
        super().validate_constraints(exclude={*(exclude or ()), "is_active"})

    def credentials(self) -> dict[str, Any]:
        stored = self.secrets
        return dict(stored) if isinstance(stored, dict) else {}


class OrganizationTranslation(models.Model):
    """An organization's own choice; without a row the active translator's default applies."""

    organization = models.OneToOneField(
        Organization, on_delete=models.CASCADE, related_name="translation_setting"
    )
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.organization}: {'on' if self.enabled else 'off'}"
