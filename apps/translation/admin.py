"""Translators and per-organization switches in the operator admin.

Credentials are write-only, as for upstream accounts: fields that replace them, never a
rendering of what is stored. Saves go through ``translator_save`` (one active translator).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from apps.operator.admin_tools import AuditedAdminMixin

from .models import OrganizationTranslation, Translator, TranslatorKind
from .services import translator_save

#: The credential fields each kind needs (Baidu signs with an app id and a secret key).
#: A LibreTranslate server may run without a key, so it needs none.
SECRET_FIELDS: dict[str, tuple[str, ...]] = {
    TranslatorKind.OPENAI: ("api_key",),
    TranslatorKind.DEEPL: ("api_key",),
    TranslatorKind.BAIDU: ("app_id", "secret_key"),
}


def _write_only(label: str, help_text: str) -> forms.CharField:
    return forms.CharField(
        label=label,
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=help_text,
    )


class TranslatorForm(forms.ModelForm):
    base_url = forms.URLField(
        max_length=300,
        assume_scheme="https",
        help_text=Translator._meta.get_field("base_url").help_text,
    )
    new_api_key = _write_only(
        "API key", "Write-only. OpenAI, DeepL and (when the server needs one) LibreTranslate."
    )
    new_app_id = _write_only("Baidu app id", "Write-only. Baidu only.")
    new_secret_key = _write_only("Baidu secret key", "Write-only. Baidu only.")
    clear_secrets = forms.BooleanField(required=False, help_text="Forget every stored credential.")

    class Meta:
        model = Translator
        fields = (
            "name",
            "kind",
            "base_url",
            "model",
            "is_active",
            "on_by_default",
            "timeout_seconds",
        )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        stored: dict[str, Any] = (
            {} if data.get("clear_secrets") else dict(self.instance.secrets or {})
        )
        for name in ("api_key", "app_id", "secret_key"):
            if data.get(f"new_{name}"):
                stored[name] = data[f"new_{name}"]
        kind = data.get("kind")
        if kind == TranslatorKind.OPENAI and not data.get("model"):
            self.add_error("model", "Name the model to ask (for example gpt-4o-mini).")
        missing = [name for name in SECRET_FIELDS.get(str(kind), ()) if not stored.get(name)]
        if missing:
            self.add_error(None, f"This translator needs: {', '.join(missing)}.")
        self.instance.secrets = stored
        return data


@admin.register(Translator)
class TranslatorAdmin(AuditedAdminMixin, admin.ModelAdmin):
    form = TranslatorForm
    list_display = ("name", "kind", "base_url", "is_active", "on_by_default", "timeout_seconds")
    list_filter = ("kind", "is_active")
    readonly_fields = ("credentials_state",)
    fieldsets = (
        (None, {"fields": ("name", "kind", "base_url", "model", "timeout_seconds")}),
        ("Use", {"fields": ("is_active", "on_by_default")}),
        (
            "Credentials",
            {
                "fields": (
                    "credentials_state",
                    "new_api_key",
                    "new_app_id",
                    "new_secret_key",
                    "clear_secrets",
                )
            },
        ),
    )

    @admin.display(description="Stored credentials")
    def credentials_state(self, obj: Translator) -> str:
        names = sorted(obj.credentials()) if obj and obj.pk else []
        if not names:
            return "none"
        return format_html(
            "{} <span class='operator-secret-note'>(values are never shown)</span>",
            ", ".join(names),
        )

    def perform_save(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        translator_save(translator=obj)


@admin.register(OrganizationTranslation)
class OrganizationTranslationAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("organization", "enabled", "updated_at")
    list_filter = ("enabled",)
    search_fields = ("organization__name",)
    autocomplete_fields = ("organization",)
