"""Images uploaded for use in prompts (midjourney-proxy's ``/submit/upload-discord-images``).

The reference proxy uploads them to Discord and answers their CDN URLs; we keep them in our own
storage, under an unguessable name like every input, and answer their stable public URLs. A
client then writes them into a prompt as image prompts, ``--sref`` or ``--cref``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import storage
from ..errors import FIELD, InputError
from .inputs import Caller, discard_files, load_image

#: Most images one upload may carry.
MAX_UPLOAD_IMAGES = 10


def images_upload(*, caller: Caller, images: Sequence[Any]) -> list[str]:
    """Decode and store ``images`` (data URLs or bare base64); their storage names, in order.

    All or nothing: a bad image refuses the whole upload and stores none of them.
    """
    if not images:
        raise InputError(f"{FIELD}: give at least one image to upload.", field="images")
    if len(images) > MAX_UPLOAD_IMAGES:
        raise InputError(
            f"{FIELD}: at most {MAX_UPLOAD_IMAGES} images per upload; got {len(images)}.",
            field="images",
            details={"count": len(images)},
        )
    decoded = [load_image(value, field="images", index=i) for i, value in enumerate(images)]
    names: list[str] = []
    try:
        for image in decoded:
            names.append(storage.store_input(data=image.data, ext=image.format.lower()))
    except BaseException:
        discard_files(names)
        raise
    return names
