from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class TasksConfig(AppConfig):
    name = "apps.tasks"
    label = "tasks"
    verbose_name = "Tasks"

    def ready(self) -> None:
        # Lazy, as Django wants it in ready(): models and selectors need the app registry.
        from .models import BannedWord
        from .selectors import banned_words_changed

        post_save.connect(banned_words_changed, sender=BannedWord, dispatch_uid="banned-words")
        post_delete.connect(banned_words_changed, sender=BannedWord, dispatch_uid="banned-words")
