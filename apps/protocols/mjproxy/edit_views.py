"""The Plus proxies' editor routes: ``/mj/submit/edits`` and ``/mj/submit/retexture``.

``{prompt, base64Array: [image], maskBase64}`` edits the masked area (or an enlarged, transparent
canvas); ``{prompt, base64Array: [image]}`` retextures. ``image`` (one data URL or URL) is
accepted in place of ``base64Array``, as some clients send it.
"""

from __future__ import annotations

from typing import Any

from apps.tasks.enums import Action
from apps.tasks.services.acceptance import SubmitOutcome
from apps.tasks.services.submit import task_submit

from ..common import optional_text, string_list, text_field
from .views import SubmitView, _echo, _requested_mode


def _image(data: dict[str, Any]) -> list[str]:
    images = string_list(data, "base64Array")
    if not images and text_field(data, "image"):
        images = [text_field(data, "image")]
    return images


class EditsView(SubmitView):
    def submit(self, data: dict[str, Any]) -> SubmitOutcome:
        return task_submit(
            caller=self.caller,
            action=Action.EDIT,
            prompt=text_field(data, "prompt"),
            images=_image(data),
            mask=optional_text(data, "maskBase64"),
            mode=_requested_mode(data),
            path_mode=self.path_mode,
            echo=_echo(data),
            remix=bool(self.remix),
        )


class RetextureView(SubmitView):
    def submit(self, data: dict[str, Any]) -> SubmitOutcome:
        return task_submit(
            caller=self.caller,
            action=Action.RETEXTURE,
            prompt=text_field(data, "prompt"),
            images=_image(data),
            mode=_requested_mode(data),
            path_mode=self.path_mode,
            echo=_echo(data),
            remix=bool(self.remix),
        )
