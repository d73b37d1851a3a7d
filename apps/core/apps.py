from django.apps import AppConfig
from django.core import checks


class CoreConfig(AppConfig):
    name = "apps.core"
    label = "core"

    def ready(self) -> None:
        # Lazy, as Django wants it in ready(): these import DRF, drf-spectacular and settings-
        # dependent code that must not load before the app registry. Importing ``schema``
        # registers the OpenAPI description of key authentication with drf-spectacular.
        from . import schema  # noqa: F401
        from .checks import check_field_encryption_keys

        checks.register(check_field_encryption_keys, checks.Tags.security)
