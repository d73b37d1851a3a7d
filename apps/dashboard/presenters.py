"""Turn domain objects into what templates show. No reads, no writes, no rules."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import slugify

from apps.tasks import storage
from apps.tasks.buttons import Button, buttons_of, friendly_name, resolve_button, with_implied
from apps.tasks.enums import Status
from apps.tasks.models import Task
from apps.tasks.prompt import result_prompts

from .selectors import DaySpend


def file_url(name: str | None) -> str | None:
    """A stored file's URL. Local files are linked relative to the site, so the dashboard works
    on whatever host it is opened (PUBLIC_BASE_URL is what API clients are given)."""
    if not name:
        return None
    if settings.STORAGES["default"]["BACKEND"] == "django.core.files.storage.FileSystemStorage":
        return reverse("result-file", kwargs={"path": name})
    return storage.file_url(name)


STATUS_TONE: dict[str, str] = {
    Status.NOT_START: "neutral",
    Status.SUBMITTED: "info",
    Status.IN_PROGRESS: "info",
    Status.MODAL: "warn",
    Status.SUCCESS: "ok",
    Status.FAILURE: "bad",
    Status.CANCEL: "neutral",
}

#: Button groups in the order a result card shows them.
_GROUPS = (
    ("upscale", "Upscale"),
    ("variation", "Vary"),
    ("zoom", "Zoom"),
    ("pan", "Pan"),
    ("prompt", "Use a prompt"),
    ("video", "Video"),
    ("other", "More"),
)


#: Inline SVG drawings of the emoji Midjourney puts on its buttons: a machine without a colour
#: emoji font shows empty boxes for the emoji, never for these. The emoji stays as the text
#: alternative.
_SVG = (
    '<svg class="icon" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" '
    'stroke-linecap="round" stroke-linejoin="round" aria-hidden="true" focusable="false">{}</svg>'
)
_ICON_PATHS: dict[str, str] = {
    "🔄": '<path d="M20 11a8 8 0 0 0-14.3-4.9L4 8M4 4v4h4M4 13a8 8 0 0 0 14.3 4.9L20 16'
    'M20 20v-4h-4"/>',
    "🪄": '<path d="M4 20L15 9M14 4v2M18 6l-1.5 1.5M20 10h-2M12 8l4 4"/>',
    "🖌️": '<path d="M18 3l3 3-9 9-3-3zM9 12c-3 0-5 2-5 5 0 1.5-1 2.5-2 3 4 1 9 0 9-5"/>',
    "🔍": '<circle cx="10.5" cy="10.5" r="6.5"/><path d="M15.5 15.5L21 21"/>',
    "⬅️": '<path d="M20 12H5M11 6l-6 6 6 6"/>',
    "➡️": '<path d="M4 12h15M13 6l6 6-6 6"/>',
    "⬆️": '<path d="M12 20V5M6 11l6-6 6 6"/>',
    "⬇️": '<path d="M12 4v15M6 13l6 6 6-6"/>',
    "🎞️": '<rect x="3" y="5" width="18" height="14" rx="2"/><path d="M7 5v14M17 5v14M3 9h4M3 15h4'
    'M17 9h4M17 15h4"/>',
}
_KEYCAP = "\ufe0f\u20e3"


def button_icon(emoji: str) -> SafeString | None:
    """An inline SVG for a button's emoji, or None when we have no drawing of it."""
    if emoji in _ICON_PATHS:
        return mark_safe(_SVG.format(_ICON_PATHS[emoji]))  # noqa: S308 - constant markup
    if emoji.endswith(_KEYCAP) and emoji[: -len(_KEYCAP)].isdigit():
        digit = emoji[: -len(_KEYCAP)]
        return format_html(
            '<svg class="icon" viewBox="0 0 24 24" aria-hidden="true" focusable="false">'
            '<rect x="2.5" y="2.5" width="19" height="19" rx="5" fill="none" '
            'stroke="currentColor" stroke-width="2"/>'
            '<text x="12" y="16.5" text-anchor="middle" font-size="13" font-weight="700" '
            'fill="currentColor" font-family="system-ui, sans-serif">{}</text></svg>',
            digit,
        )
    return None


@dataclass(frozen=True)
class ButtonView:
    custom_id: str
    text: str
    title: str
    group: str
    modal: bool
    #: The emoji (the icon's text alternative), its drawing and the label without the emoji.
    emoji: str = ""
    icon: SafeString | None = None
    label: str = ""


def _describe_button(button: Button) -> ButtonView:
    name = friendly_name(button)
    text = " ".join(part for part in (button.emoji, button.label) if part) or name
    icon = button_icon(button.emoji) if button.emoji else None
    label = button.label if (button.label or icon) else text
    pressed = resolve_button(button)
    press = pressed.press if pressed is not None else None
    if press is None:  # an upstream's own button: shown as it is
        title, group, modal = button.label or name, "other", False
    else:
        title = press.shown_title(pressed.index if pressed else None, button.label or name)
        group, modal = press.group, press.modal is not None
    return ButtonView(
        button.custom_id, text, title, group, modal, emoji=button.emoji, icon=icon, label=label
    )


def button_groups(task: Task) -> list[tuple[str, list[ButtonView]]]:
    if task.status != Status.SUCCESS:
        return []
    # Animate Manually is offered beside Animate, as on Midjourney's web app.
    views = [_describe_button(b) for b in with_implied(buttons_of(task.buttons))]
    groups = []
    for key, label in _GROUPS:
        members = [v for v in views if v.group == key]
        if members:
            groups.append((label, members))
    return groups


def download_name(task: Task, part: str = "") -> str:
    """A file name that says what the file is: ``mjgate-<id>-<prompt words>[-<part>].png``."""
    words = slugify(task.prompt or "")[:48].strip("-") or task.action.lower()
    ext = "png"
    image = (task.result or {}).get("image") or ""
    if "." in image.rsplit("/", 1)[-1]:
        ext = image.rsplit(".", 1)[-1].lower()
    return "-".join(p for p in ("mjgate", str(task.pk), words, part) if p) + f".{ext}"


def task_images(task: Task) -> dict[str, Any]:
    result = task.result or {}
    splits = [file_url(name) for name in result.get("splits") or []]
    return {
        "image": file_url(result.get("image")),
        "download": download_name(task, "grid" if result.get("is_grid") else ""),
        "thumb": file_url(result.get("thumb")) or file_url(result.get("image")),
        "splits": splits,
        "download_url": reverse("dashboard:task-download", args=[task.pk, "image"]),
        "split_downloads": [
            (
                reverse("dashboard:task-download", args=[task.pk, str(n)]),
                download_name(task, str(n)),
            )
            for n in range(1, len(splits) + 1)
        ],
        "is_grid": bool(result.get("is_grid")),
        "width": result.get("width"),
        "height": result.get("height"),
        "inputs": [file_url(name) for name in task.inputs or []],
        # A video's clips: (url, download name), in batch order; its image is the poster.
        "videos": [
            (
                file_url(name),
                video_download_name(task, n),
                reverse("dashboard:task-download", args=[task.pk, f"video-{n}"]),
            )
            for n, name in enumerate(result.get("videos") or [], start=1)
        ],
    }


def video_download_name(task: Task, n: int) -> str:
    """``mjgate-<id>-<prompt words>-video-<n>.mp4``."""
    return download_name(task, f"video-{n}").rsplit(".", 1)[0] + ".mp4"


@dataclass(frozen=True)
class Cost:
    """What a task cost: ``paid`` tokens, and for one that was not charged what it would have;
    ``refunded``: what the operator's refund of a charged task gave back (``paid`` is net of
    it)."""

    paid: int
    would_have: int
    held: bool
    free: bool
    refunded: int = 0


def task_cost(task: Task) -> Cost:
    price = int(task.price or 0)
    if task.is_test:
        return Cost(paid=0, would_have=0, held=False, free=True)
    if task.status == Status.SUCCESS:
        # What the ledger took (the platform fee when the organization's own account ran it),
        # less what a refund gave back: a refunded task cost nothing, but it was not free.
        paid = task.tokens_charged
        refunded = task.tokens_charged_before_refund - paid
        return Cost(
            paid=paid,
            would_have=price,
            held=False,
            free=paid == 0 and refunded == 0,
            refunded=refunded,
        )
    if task.status in (Status.FAILURE, Status.CANCEL):
        return Cost(paid=0, would_have=price, held=False, free=price == 0)
    return Cost(paid=0, would_have=price, held=task.status != Status.MODAL, free=price == 0)


def numbered_prompts(task: Task) -> list[str]:
    return result_prompts(task.properties)


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    day: str
    tokens: int


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    max_tokens: int
    total: int
    ticks: list[tuple[float, str]]
    first_day: str
    last_day: str


def spend_chart(days: list[DaySpend], *, width: int = 720, height: int = 200) -> Chart:
    """Geometry of a bar chart drawn as inline SVG (no chart library, works without JS)."""
    top, bottom = 12, 24
    plot = height - top - bottom
    peak = max((d.tokens for d in days), default=0)
    scale_max = peak or 1
    slot = width / max(len(days), 1)
    bars = []
    for i, d in enumerate(days):
        h = 0.0 if d.tokens == 0 else max(2.0, plot * d.tokens / scale_max)
        bars.append(
            Bar(
                x=round(i * slot + slot * 0.15, 2),
                y=round(top + plot - h, 2),
                width=round(slot * 0.7, 2),
                height=round(h, 2),
                day=d.day.isoformat(),
                tokens=d.tokens,
            )
        )
    ticks = (
        [(round(top + plot - plot * f, 2), f"{int(peak * f):,}") for f in (0.5, 1.0)]
        if peak
        else []
    )
    return Chart(
        width=width,
        height=height,
        bars=bars,
        max_tokens=peak,
        total=sum(d.tokens for d in days),
        ticks=ticks,
        first_day=days[0].day.strftime("%b %d") if days else "",
        last_day=days[-1].day.strftime("%b %d") if days else "",
    )


@dataclass(frozen=True)
class DeliveryRow:
    """One webhook delivery attempt as the log shows it."""

    delivery: Any
    label: str
    tone: str
    #: The error, unless it only repeats the status code shown next to the state.
    error: str
    can_resend: bool
    next_attempt_at: Any
    request_body: str


def delivery_row(delivery: Any) -> DeliveryRow:
    event = delivery.event
    state = delivery.state
    label = str(delivery.get_state_display())
    tone = {"succeeded": "ok", "pending": "info", "superseded": "neutral"}.get(state, "bad")
    if state == "failed":
        # A failed attempt's retry is its own row; say what became of the message.
        if event.state == "succeeded":
            label, tone = "Failed (delivered later)", "neutral"
        elif event.state == "dead":
            label = "Failed (gave up)"
        else:
            label = "Failed (retry scheduled)"
    error = delivery.error or ""
    if delivery.status_code and error.strip() == f"HTTP {delivery.status_code}":
        error = ""
    elif delivery.status_code and error.startswith(f"HTTP {delivery.status_code}: "):
        error = error[len(f"HTTP {delivery.status_code}: ") :]
    try:
        body = json.dumps(json.loads(event.body), indent=2, ensure_ascii=False)
    except ValueError:
        body = event.body
    return DeliveryRow(
        delivery=delivery,
        label=label,
        tone=tone,
        error=error,
        can_resend=state != "pending",
        next_attempt_at=delivery.next_attempt_at if state == "pending" else None,
        request_body=body,
    )


@dataclass(frozen=True)
class LedgerLine:
    """One line of the ledger as a person reads it: a task, or a single movement."""

    when: Any
    title: str
    note: str
    amount: int
    balance_after: int
    task_id: str | None
    entries: list[Any]


def _task_outcome(kinds: set[str]) -> str:
    if "refund" in kinds:
        return "refunded"
    if "capture" in kinds:
        return "charged"
    if "release" in kinds:
        return "not charged"
    return "held while it runs"


def ledger_lines(page: Any, task_entries: dict[str, list[Any]]) -> list[LedgerLine]:
    """The page's entries, one line per task (its hold, capture or release and refunds folded
    together, newest first, at the place of its newest entry) and one per other movement."""
    lines: list[LedgerLine] = []
    seen: set[str] = set()
    for entry in page:
        if not entry.task_id:
            lines.append(
                LedgerLine(
                    when=entry.created_at,
                    title=str(entry.get_kind_display()),
                    note=entry.reason,
                    amount=entry.delta_available,
                    balance_after=entry.available_after,
                    task_id=None,
                    entries=[entry],
                )
            )
            continue
        task_id = str(entry.task_id)
        if task_id in seen:
            continue
        seen.add(task_id)
        entries = task_entries.get(task_id) or [entry]
        task = entries[0].task
        parts = [str(task.get_action_display()), task.mode.lower()]
        if task.params and task.params.get("index"):
            parts[0] = f"{parts[0]} {task.params['index']}"
        latest = max(entries, key=lambda e: e.pk)
        lines.append(
            LedgerLine(
                when=latest.created_at,
                title=" · ".join(parts),
                note=_task_outcome({e.kind for e in entries}),
                amount=sum(e.delta_available for e in entries),
                balance_after=latest.available_after,
                task_id=task_id,
                entries=entries,
            )
        )
    return lines
