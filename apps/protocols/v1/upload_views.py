"""``POST /api/v1/uploads``: store images for use in prompts and answer their stable URLs.

The native twin of mj-proxy's ``/mj/submit/upload-discord-images``: the same service, the
same storage. A client writes the URLs into a prompt as image prompts, ``--sref``, ``--cref``
or ``--oref``; the upstream then fetches a URL that does not expire.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.api import OrganizationAPIView
from apps.core.fields import StrictFieldsMixin
from apps.core.schema import IDEMPOTENCY_HEADER
from apps.tasks.models import Protocol
from apps.tasks.services.uploads import MAX_UPLOAD_IMAGES, images_upload

from ..common import caller_of
from ..task_fields import stored_file_url
from .errors import NativeErrorsMixin
from .views import _errors


class UploadSerializer(StrictFieldsMixin, serializers.Serializer):
    images = serializers.ListField(
        child=serializers.CharField(),
        min_length=1,
        max_length=MAX_UPLOAD_IMAGES,
        help_text="Data URLs (data:image/png;base64,…) or bare base64, at most 10.",
    )


UPLOADED = inline_serializer(
    "Uploaded",
    {"urls": serializers.ListField(child=serializers.URLField(), help_text="In upload order.")},
)


class UploadView(NativeErrorsMixin, OrganizationAPIView):
    required_key_flags = ("midjourney",)
    writes = True

    @extend_schema(
        summary="Upload images to use in prompts (image prompts, --sref, --cref, --oref)",
        description=(
            "Stores the images and answers their stable public URLs, in order. All or nothing: "
            "one bad image refuses the upload and stores none."
        ),
        parameters=[IDEMPOTENCY_HEADER],
        request=UploadSerializer,
        responses={201: UPLOADED, **_errors(400, 401, 403, 409, 413, 422, 429)},
    )
    def post(self, request: Request) -> Response:
        body = UploadSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        names = images_upload(
            caller=caller_of(self, Protocol.NATIVE), images=body.validated_data["images"]
        )
        return Response(
            {"urls": [stored_file_url(name) for name in names]}, status=status.HTTP_201_CREATED
        )
