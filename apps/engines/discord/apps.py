from django.apps import AppConfig


class DiscordEngineConfig(AppConfig):
    """The discord engine keeps its own tables (jobs it sent, gateway leases)."""

    name = "apps.engines.discord"
    label = "discord_engine"
    verbose_name = "Discord engine"
    default_auto_field = "django.db.models.BigAutoField"
