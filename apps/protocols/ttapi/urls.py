"""``/midjourney/v1/…`` (TTAPI)."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "ttapi"

urlpatterns = [
    path("imagine", views.ImagineView.as_view(), name="imagine"),
    path("action", views.ActionView.as_view(), name="action"),
    path("blend", views.BlendView.as_view(), name="blend"),
    path("describe", views.DescribeView.as_view(), name="describe"),
    path("inpaint", views.InpaintView.as_view(), name="inpaint"),
    path("seed", views.SeedView.as_view(), name="seed"),
    path("fetch", views.FetchView.as_view(), name="fetch"),
    path("video/submit", views.VideoSubmitView.as_view(), name="video-submit"),
    path("video/extend", views.VideoExtendView.as_view(), name="video-extend"),
]
