import os

import django
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
django.setup(set_prefix=False)

from apps.core.handlers import PathRoutedWSGIHandler  # noqa: E402 - needs the apps loaded

# API routes take a short middleware chain, every other page the full one (apps/core/handlers.py).
application = PathRoutedWSGIHandler()

# Import the URLconf, and with it every view, while the worker boots: otherwise the first
# request each gunicorn worker serves does it (seconds on a busy machine), and production
# recycles workers every thousand requests (``--max-requests``).
get_resolver().url_patterns  # noqa: B018 - the property imports the URLconf
