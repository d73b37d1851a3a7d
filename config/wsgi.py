import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
application = get_wsgi_application()

# Import the URLconf, and with it every view, while the worker boots: otherwise the first
# request each gunicorn worker serves does it (seconds on a busy machine), and production
# recycles workers every thousand requests (``--max-requests``).
get_resolver().url_patterns  # noqa: B018 - the property imports the URLconf
