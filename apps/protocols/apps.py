from django.apps import AppConfig


class ProtocolsConfig(AppConfig):
    name = "apps.protocols"
    label = "protocols"
    verbose_name = "Public API protocols"

    def ready(self) -> None:
        # A task's own hook receives the Task JSON of the dialect that created it (SPEC §7).
        # Lazy because it must be: the payload modules import models, which cannot be imported
        # while Django is still loading this AppConfig.
        from .hooks import register_payloads

        register_payloads()
