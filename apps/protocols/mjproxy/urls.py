"""``/mj/…`` and the mode prefixes ``/mj-fast/mj/…``, ``/mj-relax/mj/…``, ``/mj-turbo/mj/…``.

The prefix only sets ``path_mode``; the task services apply the mode precedence (SPEC §3).
"""

from __future__ import annotations

from typing import Any

from django.urls import URLPattern, path

from . import edit_views, views

app_name = "mjproxy"

_ROUTES: list[tuple[str, Any, str]] = [
    ("submit/imagine", views.ImagineView, "imagine"),
    ("submit/action", views.ActionView, "action"),
    ("submit/modal", views.ModalView, "modal"),
    ("submit/describe", views.DescribeView, "describe"),
    ("submit/blend", views.BlendView, "blend"),
    ("submit/shorten", views.ShortenView, "shorten"),
    ("submit/video", views.VideoView, "video"),
    ("submit/change", views.ChangeView, "change"),
    ("submit/simple-change", views.SimpleChangeView, "simple-change"),
    ("submit/upload-discord-images", views.UploadDiscordImagesView, "upload-discord-images"),
    ("submit/edits", edit_views.EditsView, "edits"),
    ("submit/retexture", edit_views.RetextureView, "retexture"),
    ("insight-face/swap", views.SwapFaceView, "swap-face"),
    ("task/<str:task_id>/fetch", views.FetchView, "fetch"),
    ("task/list-by-condition", views.ListByConditionView, "list-by-condition"),
    ("task/list", views.ListView, "list"),
    ("task/queue", views.QueueView, "queue"),
    ("task/<str:task_id>/image-seed", views.ImageSeedView, "image-seed"),
    ("task/<str:task_id>/cancel", views.CancelView, "cancel"),
]

PATH_MODES = {"mj-fast/mj/": "FAST", "mj-relax/mj/": "RELAX", "mj-turbo/mj/": "TURBO"}


def _patterns() -> list[URLPattern]:
    patterns = [path(f"mj/{route}", view.as_view(), name=name) for route, view, name in _ROUTES]
    for prefix, mode in PATH_MODES.items():
        patterns += [
            path(
                f"{prefix}{route}",
                view.as_view(),
                {"path_mode": mode},
                name=f"{name}-{mode.lower()}",
            )
            for route, view, name in _ROUTES
        ]
    return patterns


urlpatterns = _patterns()
