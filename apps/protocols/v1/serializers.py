"""Request and response shapes of the native API. Types only: every rule lives in services."""

from __future__ import annotations

import json
from typing import Any

from rest_framework import serializers

from apps.api_keys.models import ApiKey
from apps.core.fields import StrictFieldsMixin, TextField
from apps.tasks.actions import NEW_TASK_ACTIONS, action_spec
from apps.tasks.enums import Action, ErrorCode, Mode, Pool, Status

from .payloads import task_json

#: Largest ``metadata`` object, as compact JSON (SPEC §6.3).
MAX_METADATA_BYTES = 16 * 1024


class ButtonSerializer(serializers.Serializer):
    customId = serializers.CharField(
        help_text="Midjourney's customId, e.g. MJ::JOB::upsample::1::…"
    )
    emoji = serializers.CharField(allow_blank=True)
    label = serializers.CharField(allow_blank=True, help_text="U1…U4, V1…V4, Vary (Region) …")  # type: ignore[assignment]
    type = serializers.IntegerField()
    style = serializers.IntegerField()  # type: ignore[assignment]
    name = serializers.CharField(help_text="Friendly alias accepted as `button`: U1, VARY_SUBTLE …")


class TaskSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.CharField(help_text="Always `task`.")
    action = serializers.ChoiceField(choices=Action.choices)
    status = serializers.ChoiceField(choices=Status.choices)
    mode = serializers.ChoiceField(choices=Mode.choices)
    is_test = serializers.BooleanField(help_text="Created with a test key: free, sandbox only.")
    parent = serializers.CharField(allow_null=True)  # type: ignore[assignment]
    button = serializers.CharField(allow_null=True, help_text="customId pressed on the parent.")
    prompt = serializers.CharField(allow_blank=True)
    prompt_en = serializers.CharField(allow_blank=True, help_text="As sent upstream.")
    description = serializers.CharField(allow_null=True)
    metadata = serializers.DictField()
    webhook_url = serializers.CharField(allow_null=True)
    progress = serializers.IntegerField(min_value=0, max_value=100)
    image_url = serializers.URLField(allow_null=True, help_text="Public, needs no auth.")
    image_urls = serializers.ListField(
        child=serializers.URLField(), help_text="The four split images of a grid."
    )
    thumbnail_url = serializers.URLField(allow_null=True)
    video_urls = serializers.ListField(
        child=serializers.URLField(), help_text="VIDEO: the MP4 clips (H.264), batch order."
    )
    poster_url = serializers.URLField(
        allow_null=True, help_text="VIDEO: the poster image (first frame); null otherwise."
    )
    buttons = ButtonSerializer(many=True)
    properties = serializers.DictField(help_text="Includes `finalPrompt`.")
    seed = serializers.IntegerField(allow_null=True)
    fail_reason = serializers.CharField(allow_null=True)
    error_code = serializers.ChoiceField(choices=ErrorCode.choices, allow_null=True)
    price = serializers.IntegerField(help_text="Tokens held, charged only on success.")
    pool = serializers.ChoiceField(
        choices=Pool.choices, help_text="Whose upstream accounts may run it (shared, own, …)."
    )
    platform_fee = serializers.IntegerField(
        allow_null=True,
        help_text="Own pools: what success costs when your own account runs it (instead of "
        "`price`; the rest of the hold is given back).",
    )
    created_at = serializers.DateTimeField()
    submitted_at = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)

    def to_representation(self, instance: Any) -> dict[str, Any]:
        return task_json(instance)


class TaskPageSerializer(serializers.Serializer):
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = TaskSerializer(many=True)


def _check_metadata(value: Any) -> Any:
    if (
        len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
        > MAX_METADATA_BYTES
    ):
        raise serializers.ValidationError(
            f"metadata may be at most {MAX_METADATA_BYTES} bytes of JSON."
        )
    return value


#: What a button press refuses, and why: it would otherwise be dropped silently.
_NOT_ON_A_PRESS = {
    "images": "A button press takes no images; it works on the parent's result.",
    "dimensions": "A button press takes no dimensions (BLEND only).",
}


#: Fields only a VIDEO task takes; on any other request they are refused, never dropped.
_VIDEO_FIELDS = ("motion", "batch_size", "loop", "extend", "index", "resolution", "end_image")


class TaskCreateSerializer(StrictFieldsMixin, serializers.Serializer):
    action = serializers.ChoiceField(
        choices=[*NEW_TASK_ACTIONS, "ANIMATE"],
        required=False,
        help_text=(
            "For a new task. Follow-ups give `parent` and `button` instead. VIDEO (alias "
            "ANIMATE) animates `images[0]` (the start frame) or the image of `parent`, or "
            "extends a clip of the video `parent` (`extend`, `index`)."
        ),
    )
    motion = serializers.ChoiceField(
        choices=["low", "high"], required=False, help_text="VIDEO: low (default) or high motion."
    )
    batch_size = serializers.ChoiceField(
        choices=[1, 2, 4], required=False, help_text="VIDEO: clips per job (default 4)."
    )
    loop = serializers.BooleanField(
        required=False, help_text="VIDEO: the clip returns to its first frame."
    )
    extend = serializers.BooleanField(
        required=False, help_text="VIDEO: extend clip `index` of the video `parent` by 4 s."
    )
    resolution = serializers.ChoiceField(
        choices=["480p", "720p"],
        required=False,
        help_text=(
            "VIDEO: 480p (SD, default) or 720p (HD: FAST/TURBO only, priced as VIDEO_HD). An "
            "extension keeps its video's."
        ),
    )
    end_image = serializers.CharField(
        required=False,
        help_text=(
            "VIDEO: the end frame (data URL or http(s) URL): the clips end on this image. "
            "`--end <url>` in the prompt does the same; not with `loop`."
        ),
    )
    index = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=4,
        help_text="VIDEO: which image of a grid `parent` to animate, or which clip to extend.",
    )
    prompt = TextField(required=False, allow_blank=True, trim_whitespace=False)
    images = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        max_length=5,
        help_text="Data URLs (data:image/png;base64,…) or http(s) URLs.",
    )
    mode = serializers.CharField(
        required=False, allow_null=True, help_text="FAST, RELAX (or NORMAL) or TURBO."
    )
    dimensions = serializers.ChoiceField(
        choices=["PORTRAIT", "SQUARE", "LANDSCAPE"], required=False, help_text="BLEND only."
    )
    parent = serializers.CharField(required=False, help_text="Task whose button to press.")  # type: ignore[assignment]
    button = serializers.CharField(
        required=False,
        help_text="Alias (U1, V3, REROLL, VARY_SUBTLE, ZOOM_2X, PAN_LEFT …) or a raw customId.",
    )
    mask = serializers.CharField(
        required=False,
        help_text=(
            "EDIT: the area to repaint, white on black (data URL or URL); transparent parts "
            "of the image (an enlarged canvas) are painted too. A VARY_REGION press: its mask."
        ),
    )
    remix = serializers.BooleanField(
        required=False,
        help_text=(
            "A press of a variation, reroll or pan: `true` waits in MODAL for the (changed) "
            "prompt, `false` never does; left out, the key's remix default decides. A new "
            "task (not VIDEO): remix mode for its follow-ups. A `prompt` on such a press "
            "remixes at once."
        ),
    )
    webhook_url = serializers.CharField(required=False, allow_blank=True)
    metadata = serializers.DictField(
        required=False, validators=[_check_metadata], help_text="Your JSON object, ≤ 16 KiB."
    )
    pool = serializers.CharField(
        required=False,
        max_length=32,
        help_text=(
            "Whose upstream accounts run a new task: `shared` (the platform's), `own` (your "
            "organization's own accounts only, charged the platform fee) or `own_then_shared`. "
            "Left out: the `X-Mjgate-Pool` header, else the key's default. Follow-ups run "
            "where their parent ran."
        ),
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("action") == "ANIMATE":
            attrs["action"] = Action.VIDEO
        if attrs.get("action") == Action.VIDEO:
            return _video_attrs(attrs)
        for field in _VIDEO_FIELDS:
            if field in attrs:
                raise serializers.ValidationError({field: "Only a VIDEO task takes it."})
        if "parent" in attrs or "button" in attrs:
            if "action" in attrs:
                raise serializers.ValidationError(
                    {"action": "Give either action, or parent and button."}
                )
            for field in ("parent", "button"):
                if not attrs.get(field):
                    raise serializers.ValidationError({field: "This field is required."})
            for field, message in _NOT_ON_A_PRESS.items():
                if field in attrs:
                    raise serializers.ValidationError({field: message})
        elif "action" not in attrs:
            raise serializers.ValidationError(
                {"action": "Give an action, or parent and button for a follow-up."}
            )
        else:
            _check_inputs_taken(attrs)
        return attrs


def _video_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """A VIDEO task may name a ``parent`` (to animate or extend) but presses no ``button``."""
    if "button" in attrs:
        raise serializers.ValidationError(
            {"button": "A VIDEO task presses no button; give parent (and index) instead."}
        )
    if "dimensions" in attrs:
        raise serializers.ValidationError({"dimensions": "VIDEO takes no dimensions."})
    if "mask" in attrs:
        raise serializers.ValidationError(
            {"mask": "VIDEO takes no mask; only the editor (EDIT) and VARY_REGION do."}
        )
    if "remix" in attrs:
        raise serializers.ValidationError(
            {"remix": "VIDEO takes no remix; press Extend with remix to guide an extension."}
        )
    return attrs


def _check_inputs_taken(attrs: dict[str, Any]) -> None:
    """A field the action does not take is an error naming it, never dropped."""
    action = attrs["action"]
    inputs = action_spec(action).inputs
    if inputs is None:  # pragma: no cover - every action a client may start has its inputs
        return
    if attrs.get("prompt") and not inputs.prompt:
        raise serializers.ValidationError({"prompt": f"{action} takes no prompt."})
    if attrs.get("images") and not inputs.max_images:
        raise serializers.ValidationError({"images": f"{action} takes no images."})
    if "dimensions" in attrs and not inputs.dimensions:
        raise serializers.ValidationError({"dimensions": f"{action} takes no dimensions."})


class TaskModalSerializer(StrictFieldsMixin, serializers.Serializer):
    prompt = TextField(required=False, allow_blank=True, trim_whitespace=False)
    mask = serializers.CharField(
        required=False, help_text="Vary (Region): the area to change, white on black (data URL)."
    )


class TaskListQuerySerializer(serializers.Serializer):
    status = serializers.MultipleChoiceField(choices=Status.choices, required=False)
    action = serializers.MultipleChoiceField(choices=Action.choices, required=False)
    mode = serializers.MultipleChoiceField(choices=Mode.choices, required=False)
    is_test = serializers.BooleanField(required=False, allow_null=True, default=None)
    search = serializers.CharField(required=False, max_length=200)
    cursor = serializers.CharField(required=False)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=100)


class PermissionsSerializer(StrictFieldsMixin, serializers.Serializer):
    """``permissions``: the same flags as the top-level fields, grouped; unknown ones refused."""

    midjourney = serializers.BooleanField(required=False)
    read_only = serializers.BooleanField(required=False)  # type: ignore[assignment]
    billing_read = serializers.BooleanField(required=False)


def merge_permissions(serializer: serializers.Serializer, attrs: dict[str, Any]) -> dict[str, Any]:
    """Fold ``permissions`` into the top-level flags; the same flag given twice must agree."""
    grouped = attrs.pop("permissions", None) or {}
    sent = serializer.initial_data if isinstance(serializer.initial_data, dict) else {}
    for name, value in grouped.items():
        if name in sent and attrs.get(name) != value:
            raise serializers.ValidationError(
                {"permissions": f"'{name}' is given twice with different values."}
            )
        attrs[name] = value
    return attrs


class ApiKeySerializer(serializers.ModelSerializer):
    midjourney = serializers.BooleanField(source="can_midjourney")
    billing_read = serializers.BooleanField(source="can_read_billing")
    allowed_ips = serializers.ListField(child=serializers.CharField())
    active = serializers.BooleanField(source="is_active")
    permissions = serializers.SerializerMethodField(
        help_text="`midjourney`, `read_only`, `billing_read`, as the top-level fields."
    )

    class Meta:
        model = ApiKey
        fields: tuple[str, ...] = (
            "id",
            "name",
            "prefix",
            "is_test",
            "midjourney",
            "read_only",
            "billing_read",
            "remix",
            "pool",
            "allowed_ips",
            "expires_at",
            "revoked_at",
            "last_used_at",
            "created_at",
            "active",
            "permissions",
        )
        read_only_fields: tuple[str, ...] = fields

    def get_permissions(self, obj: ApiKey) -> dict[str, bool]:
        return {
            "midjourney": obj.can_midjourney,
            "read_only": obj.read_only,
            "billing_read": obj.can_read_billing,
        }


class ApiKeyCreatedSerializer(ApiKeySerializer):
    secret = serializers.SerializerMethodField(help_text="The key itself. Shown only this once.")

    class Meta(ApiKeySerializer.Meta):
        fields = (*ApiKeySerializer.Meta.fields, "secret")
        read_only_fields = fields

    def get_secret(self, obj: ApiKey) -> str:
        return str(self.context["secret"])


class ApiKeyCreateSerializer(StrictFieldsMixin, serializers.Serializer):
    name = serializers.CharField(max_length=100)
    is_test = serializers.BooleanField(default=False)
    midjourney = serializers.BooleanField(default=True)
    read_only = serializers.BooleanField(default=False)  # type: ignore[assignment]
    billing_read = serializers.BooleanField(default=True)
    remix = serializers.BooleanField(
        default=False,
        help_text="Remix by default: variations, rerolls and pans open a prompt step (MODAL).",
    )
    pool = serializers.ChoiceField(
        choices=Pool.choices,
        default=Pool.SHARED,
        help_text="Default pool of the key's new tasks: shared, own or own_then_shared.",
    )
    allowed_ips = serializers.ListField(
        child=serializers.CharField(max_length=64),
        required=False,
        allow_null=True,
        max_length=100,
        help_text="Left out, `null` or `[]`: the calling key's allow-list (none if it has none).",
    )
    expires_at = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text="Left out or `null`: the calling key's expiry (none if it has none).",
    )
    permissions = PermissionsSerializer(
        required=False, help_text="The flags grouped: `{midjourney, read_only, billing_read}`."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return merge_permissions(self, attrs)


class ApiKeyUpdateSerializer(StrictFieldsMixin, serializers.Serializer):
    """Fields left out stay as they are; ``null`` clears the allow-list or the expiry."""

    name = serializers.CharField(max_length=100, required=False)
    midjourney = serializers.BooleanField(required=False)
    read_only = serializers.BooleanField(required=False)  # type: ignore[assignment]
    billing_read = serializers.BooleanField(required=False)
    remix = serializers.BooleanField(
        required=False, help_text="Remix by default (variations, rerolls, pans ask for a prompt)."
    )
    pool = serializers.ChoiceField(
        choices=Pool.choices,
        required=False,
        help_text="Default pool of the key's new tasks: shared, own or own_then_shared.",
    )
    allowed_ips = serializers.ListField(
        child=serializers.CharField(max_length=64),
        required=False,
        allow_null=True,
        max_length=100,
        help_text="`null` or `[]` allows any address.",
    )
    expires_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="`null`: the key never expires."
    )
    permissions = PermissionsSerializer(
        required=False, help_text="The flags grouped: `{midjourney, read_only, billing_read}`."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return merge_permissions(self, attrs)
