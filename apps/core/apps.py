from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "apps.core"
    label = "core"

    def ready(self) -> None:
        # Registers the OpenAPI description of key authentication with drf-spectacular.
        from . import schema  # noqa: F401
