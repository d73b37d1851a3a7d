"""Turn domain objects into what templates show. No reads, no writes, no rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.urls import reverse

from apps.tasks import storage
from apps.tasks.buttons import Button, buttons_of, friendly_name, resolve_button
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
    ("other", "More"),
)


@dataclass(frozen=True)
class ButtonView:
    custom_id: str
    text: str
    title: str
    group: str
    modal: bool


def _describe_button(button: Button) -> ButtonView:
    name = friendly_name(button)
    text = " ".join(part for part in (button.emoji, button.label) if part) or name
    pressed = resolve_button(button)
    press = pressed.press if pressed is not None else None
    if press is None:  # an upstream's own button: shown as it is
        return ButtonView(button.custom_id, text, button.label or name, "other", False)
    title = press.shown_title(pressed.index if pressed else None, button.label or name)
    return ButtonView(button.custom_id, text, title, press.group, press.modal is not None)


def button_groups(task: Task) -> list[tuple[str, list[ButtonView]]]:
    if task.status != Status.SUCCESS:
        return []
    views = [_describe_button(b) for b in buttons_of(task.buttons)]
    groups = []
    for key, label in _GROUPS:
        members = [v for v in views if v.group == key]
        if members:
            groups.append((label, members))
    return groups


def task_images(task: Task) -> dict[str, Any]:
    result = task.result or {}
    return {
        "image": file_url(result.get("image")),
        "thumb": file_url(result.get("thumb")) or file_url(result.get("image")),
        "splits": [file_url(name) for name in result.get("splits") or []],
        "is_grid": bool(result.get("is_grid")),
        "width": result.get("width"),
        "height": result.get("height"),
        "inputs": [file_url(name) for name in task.inputs or []],
    }


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
