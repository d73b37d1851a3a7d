import os

# The module itself, not ``from django.contrib.admin import apps``: reading a name from the
# package would run its ``__init__`` (ModelAdmin, the filters, widgets and sites), which a
# Celery process defers to first use (config/celery_cli.py, DEFERRED).
import django.contrib.admin.apps as admin_apps
from django.apps import AppConfig

#: Set (to "1") in the Celery processes config/celery_cli.py starts: they serve no admin page,
#: so they do not import the apps' admin modules at boot (issue 15, P6).
CELERY_PROCESS_ENV = "MJGATE_CELERY_PROCESS"


class OperatorConfig(AppConfig):
    """The operator admin: audit log, stats, and the admin site itself (SPEC §10)."""

    default = True
    name = "apps.operator"
    label = "operator"
    verbose_name = "Operations"
    default_auto_field = "django.db.models.BigAutoField"


class OperatorAdminConfig(admin_apps.AdminConfig):
    """``django.contrib.admin`` with our site as the default one.

    Every ``admin.site.register`` in the project then lands on ``OperatorAdminSite``, which
    sends logins through allauth and requires MFA for staff.
    """

    default = False
    default_site = "apps.operator.site.OperatorAdminSite"

    def ready(self) -> None:
        """Import every app's ``admin`` module, except in a Celery process.

        The admin modules bring the admin's forms and widgets, allauth's admins and the services
        that only admin actions call (operator tools, translation, acceptance): about 1.5 MiB
        that a prefork worker's parent held and each pool process counted again (issue 15, P6).
        There the admin's checks are still registered, and ``config/urls.py`` imports the admin
        modules itself, so an admin URL reversed in a worker still resolves.
        """
        if os.environ.get(CELERY_PROCESS_ENV) == "1":
            admin_apps.SimpleAdminConfig.ready(self)
            return
        super().ready()
