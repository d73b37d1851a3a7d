from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "apps.core"
    label = "core"

    def ready(self) -> None:
        from django.core import checks

        # Registers the OpenAPI description of key authentication with drf-spectacular.
        from . import schema  # noqa: F401
        from .checks import check_field_encryption_keys

        checks.register(check_field_encryption_keys, checks.Tags.security)
