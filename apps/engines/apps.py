from django.apps import AppConfig


class EnginesConfig(AppConfig):
    name = "apps.engines"
    label = "engines"
    verbose_name = "Upstream engines"

    def ready(self) -> None:
        # Register the engines before any worker thread looks one up.
        from .base import _load_builtin_engines

        _load_builtin_engines()
