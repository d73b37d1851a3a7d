from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class BillingConfig(AppConfig):
    name = "apps.billing"
    label = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        # Lazy, as Django wants it in ready(): models and selectors need the app registry.
        from .models import Price
        from .selectors import prices_changed

        post_save.connect(prices_changed, sender=Price, dispatch_uid="prices")
        post_delete.connect(prices_changed, sender=Price, dispatch_uid="prices")
