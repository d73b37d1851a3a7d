"""``/midjourney/video/…``: TTAPI documents its video routes outside ``/midjourney/v1/``.

The same views answer under ``/midjourney/v1/video/…`` (``urls.py``) for clients that keep one
base URL.
"""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "ttapi_video"

urlpatterns = [
    path("submit", views.VideoSubmitView.as_view(), name="submit"),
    path("extend", views.VideoExtendView.as_view(), name="extend"),
]
