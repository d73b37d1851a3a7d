from django.apps import AppConfig


class EnginesConfig(AppConfig):
    name = "apps.engines"
    label = "engines"
    verbose_name = "Upstream engines"

    def ready(self) -> None:
        # The built-in engines: importing a module registers its engine. Lazy because engine
        # modules import models, which Django allows only once the app registry is ready; done
        # here, before any request or worker thread looks an engine up. Add a new engine here.
        from .discord import engine as discord_engine
        from .mjproxy import engine as mjproxy_engine
        from .sandbox import engine as sandbox_engine

        del discord_engine, mjproxy_engine, sandbox_engine
