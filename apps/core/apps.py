from django.apps import AppConfig
from django.core import checks


class CoreConfig(AppConfig):
    name = "apps.core"
    label = "core"

    def ready(self) -> None:
        # Lazy, as Django wants it in ready(): settings-dependent code that must not load before
        # the app registry. (``schema``, the OpenAPI description of key authentication, is
        # imported by the URLconf that serves the schema: a worker never loads drf-spectacular.)
        from .checks import check_field_encryption_keys

        checks.register(check_field_encryption_keys, checks.Tags.security)
