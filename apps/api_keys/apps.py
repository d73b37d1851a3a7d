from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class ApiKeysConfig(AppConfig):
    name = "apps.api_keys"
    label = "api_keys"
    verbose_name = "API keys"

    def ready(self) -> None:
        # Lazy, as Django wants it in ready(): models and services need the app registry.
        from apps.accounts.models import MembershipTier, Organization

        # Lazy like the import above: the models need the app registry.
        from .models import ApiKey
        from .services import api_key_saved, organization_saved, tier_saved

        post_save.connect(api_key_saved, sender=ApiKey, dispatch_uid="api-key-cache")
        post_delete.connect(api_key_saved, sender=ApiKey, dispatch_uid="api-key-cache")
        post_save.connect(organization_saved, sender=Organization, dispatch_uid="api-key-cache")
        post_save.connect(tier_saved, sender=MembershipTier, dispatch_uid="api-key-cache")
