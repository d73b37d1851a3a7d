from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from apps.core import schema  # noqa: F401  (registers key authentication with drf-spectacular)
from apps.core import views as core_views
from apps.protocols.openapi_dialects import ALL_DIALECTS_SETTINGS
from apps.tasks import views as task_views

# The admin's pages are built from what the apps' admin modules register; Celery processes do not
# import those modules when Django starts (apps/operator/apps.py), so this URLconf does, before
# ``admin.site.urls`` below reads the registry (a no-op where Django already imported them).
admin.autodiscover()

urlpatterns = [
    path("healthz", core_views.healthz, name="healthz"),
    # Browsers ask for /favicon.ico on pages that name no icon (the API docs, error pages).
    path("favicon.ico", core_views.favicon, name="favicon"),
    path("readyz", core_views.readyz, name="readyz"),
    path("files/<path:path>", task_views.result_file, name="result-file"),
    path("api/v1/", include("apps.protocols.v1.urls")),
    path("", include("apps.protocols.mjproxy.urls")),
    path("midjourney/v1/", include("apps.protocols.ttapi.urls")),
    path("midjourney/video/", include("apps.protocols.ttapi.video_urls")),
    path("billing/", include("apps.billing.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The native schema plus the midjourney-proxy and TTAPI routes: what the docs page shows.
    path(
        "api/schema/all/",
        SpectacularAPIView.as_view(custom_settings=ALL_DIALECTS_SETTINGS),
        name="schema-all",
    ),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema-all"), name="api-docs"),
    path("accounts/", include("allauth.urls")),
    path("engines/", include("apps.tasks.urls")),
    path(settings.ADMIN_URL, admin.site.urls),
    # The end-user dashboard owns the site root; keep it last so it never shadows an API route.
    path("", include("apps.dashboard.urls")),
]

# A path no API route matches answers in that API's JSON shape; other paths get Django's page.
handler404 = "apps.protocols.common.page_not_found"
# Likewise bad requests Django refuses before a view (a NUL in the URL, a malformed body) and
# every unhandled error: an API client never gets an HTML page.
handler400 = "apps.protocols.common.bad_request"
handler500 = "apps.protocols.common.server_error"
