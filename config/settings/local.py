"""Embedded defaults for a developer machine: no services needed."""

from config.env import env_bool, env_str

from .base import *  # noqa: F403
from .base import VAR_DIR

DEBUG = env_bool("DEBUG", True)
# The demo operator has no second factor; production requires one for staff.
ADMIN_REQUIRE_MFA = env_bool("ADMIN_REQUIRE_MFA", False)

# Mails are printed and kept in var/mailbox/; the dashboard lists them at /dev/mailbox/.
EMAIL_BACKEND = env_str("EMAIL_BACKEND") or "apps.dashboard.mailbox.MailboxBackend"
MAILBOX_DIR = str(VAR_DIR / "mailbox") if EMAIL_BACKEND.endswith("MailboxBackend") else None

# Serve static files straight from the app folders while developing (no collectstatic needed).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True

# Celery's lines about the periodic safety nets would bury the demo keys printed at start.
LOGGING = {
    **LOGGING,  # noqa: F405
    "filters": {"periodic_chatter": {"()": "apps.core.logging.PeriodicTaskChatterFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "filters": ["periodic_chatter"],
        }
    },
}
