from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


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
