"""Create, watch and follow up tasks; gallery, history and detail."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, cast

from django import forms
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.roles import Capability
from apps.billing.selectors import ledger_list, plan_get, price_table_get
from apps.core.errors import NotFound, ServiceError, ValidationFailed
from apps.tasks.actions import ACTIONS
from apps.tasks.enums import TERMINAL_STATUSES, VIDEO_HD, Action, Mode, Status
from apps.tasks.models import Protocol, Task
from apps.tasks.selectors import task_get, task_list, task_queue_estimate
from apps.tasks.services.acceptance import SubmitOutcome
from apps.tasks.services.cancel import task_cancel
from apps.tasks.services.inputs import Caller
from apps.tasks.services.press import task_press, task_submit_modal
from apps.tasks.services.submit import task_submit
from apps.tasks.services.uploads import images_upload
from apps.tasks.services.video import task_submit_video
from apps.tasks.storage import file_url, open_result_file

from .. import presenters
from ..selectors import task_children
from ..tenancy import can, dashboard_view, organization_of
from .errors import is_htmx, service_error_response
from .webhooks import task_deliveries

#: What the Create page can start; follow-ups come from the buttons of a result.
CREATE_ACTIONS = (
    (Action.IMAGINE, "Imagine", "A prompt, optionally with reference images."),
    (Action.DESCRIBE, "Describe", "Four prompts that could have made an image."),
    (Action.BLEND, "Blend", "Mix 2–5 images."),
    (Action.SHORTEN, "Shorten", "Analyse a prompt and suggest shorter ones."),
    (Action.SWAP_FACE, "Face swap", "Put the face of one picture onto another."),
    (Action.VIDEO, "Video", "Animate a start frame into four short clips (prompt optional)."),
    (Action.EDIT, "Edit", "Repaint the white part of a mask of one image."),
    (Action.RETEXTURE, "Retexture", "Keep an image's shapes, restyle its surfaces."),
)
#: The Create page's image-reference pickers: the prompt parameter each one adds.
REFERENCE_PICKERS = (
    ("sref", "Style reference"),
    ("cref", "Character reference"),
    ("oref", "Object reference"),
)
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_UPLOADS = 5
FEED_SIZE = 6
PAGE_SIZE = 25
GALLERY_PAGE_SIZE = 24
#: Actions whose results are pictures (the gallery shows only these).
IMAGE_ACTIONS = [a for a, spec in ACTIONS.items() if not spec.lists_prompts]


@dataclass(frozen=True)
class DashboardCaller(Caller):
    """A person in the dashboard. With no API key to say which kind of task they run,
    ``test_mode`` does: a test task runs on the built-in sandbox pool and is free, exactly
    as with a ``mjg_test_`` key (the task services apply the same rules either way)."""

    test_mode: bool = False

    @property
    def is_test(self) -> bool:
        return self.test_mode


class CreateForm(forms.Form):
    action = forms.ChoiceField(choices=[(a, label) for a, label, _ in CREATE_ACTIONS])
    prompt = forms.CharField(required=False, max_length=8192, widget=forms.Textarea)
    mode = forms.ChoiceField(choices=Mode.choices)
    test_mode = forms.BooleanField(required=False)
    dimensions = forms.ChoiceField(
        required=False,
        choices=[
            ("SQUARE", "Square 1:1"),
            ("PORTRAIT", "Portrait 2:3"),
            ("LANDSCAPE", "Landscape 3:2"),
        ],
    )
    resolution = forms.ChoiceField(
        required=False, choices=[("480p", "SD 480p"), ("720p", "HD 720p (fast modes)")]
    )


class FilterForm(forms.Form):
    q = forms.CharField(required=False, label="Search prompts")
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *Status.choices])
    action = forms.ChoiceField(required=False, choices=[("", "Any action"), *Action.choices])
    mode = forms.ChoiceField(required=False, choices=[("", "Any mode"), *Mode.choices])
    test = forms.ChoiceField(
        required=False,
        label="Live or test",
        choices=[("", "Live and test"), ("live", "Live only"), ("test", "Test only")],
    )


def _price(table: dict[str, dict[str, int]], action: str, mode: str) -> int | None:
    spec = ACTIONS.get(action)
    return table.get(spec.price_key if spec else action, {}).get(mode)


def _caller(request: HttpRequest, *, test_mode: bool = False) -> Caller:
    return DashboardCaller(
        organization=organization_of(request),
        user=request.user,
        protocol=Protocol.DASHBOARD,
        test_mode=test_mode,
    )


def _uploads(request: HttpRequest, action: str = "") -> list[str]:
    if action == Action.SWAP_FACE:
        # Two labelled pickers, so the user says which picture is the face.
        face, target = request.FILES.get("face"), request.FILES.get("target")
        if face is None or target is None:
            raise ValidationFailed("Face swap needs a face image and a target image.")
        files = [face, target]
    else:
        files = request.FILES.getlist("images")
    if len(files) > MAX_UPLOADS:
        raise ValidationFailed(f"Attach at most {MAX_UPLOADS} images; you chose {len(files)}.")
    images = []
    for upload in files:
        if upload.size and upload.size > MAX_UPLOAD_BYTES:
            raise ValidationFailed(f"{upload.name} is larger than 10 MiB.")
        # The services take images as base64, whatever protocol they arrive by.
        images.append(base64.b64encode(upload.read()).decode())
    return images


def _upload_one(request: HttpRequest, name: str) -> str | None:
    upload = request.FILES.get(name)
    if upload is None:
        return None
    if upload.size and upload.size > MAX_UPLOAD_BYTES:
        raise ValidationFailed(f"{upload.name} is larger than 10 MiB.")
    return base64.b64encode(upload.read()).decode()


def _with_references(request: HttpRequest, caller: Caller, action: str, prompt: str) -> str:
    """The prompt with ``--sref``/``--cref``/``--oref`` pointing at the pictures picked for
    them (stored like uploads; the prompt parser then checks them against the model)."""
    if action != Action.IMAGINE:
        return prompt
    picked = [(kind, _upload_one(request, f"{kind}_image")) for kind, _ in REFERENCE_PICKERS]
    picked = [(kind, data) for kind, data in picked if data]
    if not picked:
        return prompt
    names = images_upload(caller=caller, images=[data for _, data in picked])
    extra = " ".join(
        f"--{kind} {file_url(name)}" for (kind, _), name in zip(picked, names, strict=True)
    )
    return f"{prompt.strip()} {extra}"


def queue_note(task: Task) -> dict[str, Any] | None:
    """Where a queued task stands, for "n ahead, starts ~hh:mm" (None unless it is queued):
    ``ahead`` tasks wait for a slot before it in its pool's fair queue, ``starts`` is the
    expected start (``task_queue_estimate``: the slots that may serve it over the pool's
    typical job, or its measured throughput when faster; None while neither is known),
    ``now``: a free slot takes it at once."""
    if task.status != Status.NOT_START:
        return None
    estimate = task_queue_estimate(task=task)
    return {
        "now": estimate.position == 0,
        "ahead": max(estimate.position - 1, 0),
        "starts": estimate.expected_start,
    }


def card_context(request: HttpRequest, task: Task) -> dict[str, Any]:
    return {
        "task": task,
        "images": presenters.task_images(task),
        "button_groups": presenters.button_groups(task),
        "prompts": presenters.numbered_prompts(task),
        "queue": queue_note(task),
        "polling": task.status not in TERMINAL_STATUSES and task.status != Status.MODAL,
        "can_create": can(request, Capability.CREATE_TASKS),
    }


def _card(request: HttpRequest, task: Task, *, status: int = 200) -> HttpResponse:
    return render(
        request, "dashboard/partials/task_card.html", card_context(request, task), status=status
    )


def _feed_card(request: HttpRequest, task: Task) -> HttpResponse:
    """A new task's card, added at the top of the page's feed."""
    response = _card(request, task)
    response["HX-Retarget"] = "#task-feed"
    response["HX-Reswap"] = "afterbegin"
    return response


def _modal(
    request: HttpRequest,
    task: Task,
    *,
    error: str = "",
    typed: str | None = None,
    status: int = 200,
) -> HttpResponse:
    context = {
        "task": task,
        # A refused value stays in the field, so the user corrects it instead of retyping it.
        "prompt_value": task.prompt_en if typed is None else typed,
        "variant": (task.params or {}).get("variant", ""),
        "parent_images": presenters.task_images(task.parent) if task.parent else None,
        "error": error,
    }
    if not is_htmx(request):
        return render(
            request, "dashboard/task_input.html", {**context, "nav": "create"}, status=status
        )
    response = render(request, "dashboard/partials/modal_step.html", context, status=status)
    response["HX-Retarget"] = "#modal-root"
    response["HX-Reswap"] = "innerHTML"
    return response


def _after_submit(request: HttpRequest, outcome: SubmitOutcome) -> HttpResponse:
    if outcome.result == SubmitOutcome.MODAL:
        if is_htmx(request):
            return _modal(request, outcome.task)
        return redirect("dashboard:task-input", task_id=outcome.task.pk)
    if is_htmx(request):
        return _feed_card(request, outcome.task)
    return redirect("dashboard:task-detail", task_id=outcome.task.pk)


@dashboard_view()
def create(request: HttpRequest) -> HttpResponse:
    organization = organization_of(request)
    if request.method == "POST":
        if not can(request, Capability.CREATE_TASKS):
            return service_error_response(
                request, ValidationFailed("Your role cannot create tasks.")
            )
        form = CreateForm(request.POST)
        error = ""
        if form.is_valid():
            data = form.cleaned_data
            try:
                caller = _caller(request, test_mode=data["test_mode"])
                if data["action"] == Action.VIDEO:
                    outcome = task_submit_video(
                        caller=caller,
                        prompt=data["prompt"],
                        images=_uploads(request, data["action"]),
                        mode=data["mode"],
                        resolution=data["resolution"] or None,
                        end_image=_upload_one(request, "end_image"),
                    )
                    return _after_submit(request, outcome)
                outcome = task_submit(
                    caller=caller,
                    action=data["action"],
                    prompt=_with_references(request, caller, data["action"], data["prompt"]),
                    images=_uploads(request, data["action"]),
                    mode=data["mode"],
                    dimensions=data["dimensions"] or None,
                    mask=_upload_one(request, "mask") if data["action"] == Action.EDIT else None,
                )
            except ServiceError as exc:
                error = exc.message
            else:
                return _after_submit(request, outcome)
        else:
            error = "; ".join(str(e) for errors in form.errors.values() for e in errors)
        if is_htmx(request):
            response = render(
                request, "dashboard/partials/form_error.html", {"message": error}, status=400
            )
            response["HX-Retarget"] = "#create-feedback"
            response["HX-Reswap"] = "innerHTML"
            return response
    else:
        form = CreateForm(
            initial={
                "action": Action.IMAGINE,
                "mode": Mode.FAST,
                "test_mode": request.GET.get("test") == "1",
            }
        )
        error = ""
    plan = plan_get(organization=organization)
    prices = price_table_get(organization=organization)
    chosen = form["action"].value() or Action.IMAGINE
    feed = list(task_list(organization=organization)[:FEED_SIZE])
    return render(
        request,
        "dashboard/create.html",
        {
            "form": form,
            "error": error,
            "actions": CREATE_ACTIONS,
            "reference_pickers": REFERENCE_PICKERS,
            "modes": [
                (
                    mode,
                    label,
                    _price(prices.prices, chosen, mode),
                    mode in plan.allowed_modes,
                )
                for mode, label in Mode.choices
            ],
            "plan": plan,
            # The mode tiles show the price of the chosen action (the script switches it).
            "price_table": {
                **{
                    action: {mode: _price(prices.prices, action, mode) for mode in Mode.values}
                    for action, _, _ in CREATE_ACTIONS
                },
                # An HD video is priced on its own row (the resolution select switches to it).
                VIDEO_HD: {mode: _price(prices.prices, VIDEO_HD, mode) for mode in Mode.values},
            },
            "feed": [card_context(request, task) for task in feed],
            "nav": "create",
        },
        status=400 if error else 200,
    )


@require_GET
@dashboard_view()
def card(request: HttpRequest, task_id: str) -> HttpResponse:
    try:
        task = task_get(organization=organization_of(request), task_id=task_id)
    except NotFound:
        if not is_htmx(request):
            raise
        # A polling card whose task is gone from view (the organization was switched in
        # another tab, the membership ended): replace the card and stop polling (htmx: 286),
        # rather than answering 404 every second.
        return render(
            request, "dashboard/partials/task_gone.html", {"task_id": task_id}, status=286
        )
    return _card(request, task)


@require_POST
@dashboard_view(Capability.CREATE_TASKS)
def action(request: HttpRequest, task_id: str) -> HttpResponse:
    # A button runs its follow-up in the parent's kind (test or live), as the same button
    # would through a key of that kind.
    parent = task_get(organization=organization_of(request), task_id=task_id)
    try:
        outcome = task_press(
            caller=_caller(request, test_mode=parent.is_test),
            parent_id=task_id,
            custom_id=request.POST.get("custom_id", ""),
            # The card's Remix box: ticked asks for the prompt step; unticked, the default.
            remix=True if request.POST.get("remix") in ("1", "on") else None,
        )
    except ServiceError as exc:
        return service_error_response(request, exc)
    return _after_submit(request, outcome)


@dashboard_view(Capability.CREATE_TASKS)
def task_input(request: HttpRequest, task_id: str) -> HttpResponse:
    """The second step of a MODAL action: draw a mask (vary region) or edit the prompt."""
    task = task_get(organization=organization_of(request), task_id=task_id)
    if request.method != "POST":
        if task.status != Status.MODAL:
            return redirect("dashboard:task-detail", task_id=task.pk)
        return _modal(request, task)
    try:
        outcome = task_submit_modal(
            caller=_caller(request, test_mode=task.is_test),
            task_id=task.pk,
            prompt=request.POST.get("prompt") or None,
            mask=request.POST.get("mask") or None,
        )
    except ServiceError as exc:
        task.refresh_from_db()
        return _modal(
            request, task, error=exc.message, typed=request.POST.get("prompt"), status=400
        )
    if is_htmx(request):
        response = _feed_card(request, outcome.task)
        # After the swap: closing first would remove the form htmx is still swapping for.
        response["HX-Trigger-After-Swap"] = "dashboard:close-modal"
        return response
    return redirect("dashboard:task-detail", task_id=outcome.task.pk)


@require_POST
@dashboard_view(Capability.CREATE_TASKS)
def cancel(request: HttpRequest, task_id: str) -> HttpResponse:
    organization = organization_of(request)
    try:
        task = task_cancel(organization=organization, task_id=task_id)
    except ServiceError as exc:
        return service_error_response(request, exc)
    if is_htmx(request):
        return _card(request, task)
    return redirect("dashboard:task-detail", task_id=task.pk)


def _filtered(request: HttpRequest, *, image_only: bool) -> tuple[FilterForm, Any]:
    form = FilterForm(request.GET or None)
    data = form.cleaned_data if form.is_valid() else {}
    test = data.get("test") or ""
    actions = [data["action"]] if data.get("action") else None
    statuses = [data["status"]] if data.get("status") else None
    if image_only:
        actions = [a for a in (actions or IMAGE_ACTIONS) if a in IMAGE_ACTIONS]
        statuses = [Status.SUCCESS]
    qs = task_list(
        organization=organization_of(request),
        statuses=statuses,
        actions=actions,
        modes=[data["mode"]] if data.get("mode") else None,
        is_test={"live": False, "test": True}.get(test),
        search=(data.get("q") or "").strip() or None,
    )
    return form, qs


def _query_without_page(request: HttpRequest) -> str:
    query = request.GET.copy()
    query.pop("page", None)
    return query.urlencode()


@require_GET
@dashboard_view()
def history(request: HttpRequest) -> HttpResponse:
    form, qs = _filtered(request, image_only=False)
    page = Paginator(qs.select_related("created_by", "api_key"), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "dashboard/history.html",
        {
            "form": form,
            "page": page,
            "rows": [(task, presenters.task_images(task), queue_note(task)) for task in page],
            "query": _query_without_page(request),
            "nav": "history",
        },
    )


@require_GET
@dashboard_view()
def gallery(request: HttpRequest) -> HttpResponse:
    form, qs = _filtered(request, image_only=True)
    page = Paginator(qs, GALLERY_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "dashboard/gallery.html",
        {
            "form": form,
            "page": page,
            "items": [(task, presenters.task_images(task)) for task in page if task.result],
            "query": _query_without_page(request),
            "nav": "gallery",
        },
    )


@require_GET
@dashboard_view()
def detail(request: HttpRequest, task_id: str) -> HttpResponse:
    organization = organization_of(request)
    task = task_get(organization=organization, task_id=task_id)
    return render(
        request,
        "dashboard/task_detail.html",
        {
            **card_context(request, task),
            "ledger": list(ledger_list(organization=organization, task_id=task.pk)),
            "deliveries": task_deliveries(organization=organization, task=task),
            # Endpoint URLs may carry a token; members see where a message went, not the URL.
            "can_see_webhook_urls": can(request, Capability.MANAGE_WEBHOOKS),
            "children": list(task_children(organization=organization, task=task)[:50]),
            # Until the job starts only a seed the prompt fixes is known (the engine may
            # replace the one drawn at acceptance).
            "seed": task.seed_known,
            "nav": "history",
        },
    )


@require_GET
@dashboard_view()
def download(request: HttpRequest, task_id: str, part: str) -> HttpResponse:
    """A result file as an attachment named after the task (``image`` or a split 1-4); the
    public file URL would be saved as ``image.png``."""
    task = task_get(organization=organization_of(request), task_id=task_id)
    result = task.result or {}
    filename = ""
    if part == "image":
        name, label = result.get("image"), ("grid" if result.get("is_grid") else "")
    elif part.startswith("video-") and part[6:].isdigit():
        videos = result.get("videos") or []
        index = int(part[6:])
        name = videos[index - 1] if 1 <= index <= len(videos) else None
        label, filename = part, presenters.video_download_name(task, index)
    else:
        splits = result.get("splits") or []
        index = int(part) if part.isdigit() else 0
        name = splits[index - 1] if 1 <= index <= len(splits) else None
        label = str(index)
    if not name:
        raise Http404("This task has no such file.")
    try:
        handle = open_result_file(name, result)  # a split not made yet is made now
    except (FileNotFoundError, OSError, ValueError) as exc:
        raise Http404("This file is gone.") from exc
    # A streaming response; the dashboard's view decorator is typed for plain ones.
    response: Any = FileResponse(
        handle, as_attachment=True, filename=filename or presenters.download_name(task, label)
    )
    return cast(HttpResponse, response)
