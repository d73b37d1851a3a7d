"""The editor: repaint a painted-over part of a finished picture, or retexture it."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from apps.accounts.roles import Capability
from apps.core.errors import ServiceError
from apps.tasks.enums import Action
from apps.tasks.selectors import task_get
from apps.tasks.services.editor import task_edit_result

from .. import presenters
from ..tenancy import dashboard_view, organization_of
from .errors import is_htmx
from .tasks import _caller, _feed_card

_KINDS = {"edit": Action.EDIT, "retexture": Action.RETEXTURE}


def _form(
    request: HttpRequest,
    task: object,
    kind: str,
    *,
    error: str = "",
    prompt: str = "",
    status: int = 200,
) -> HttpResponse:
    response = render(
        request,
        "dashboard/partials/editor_form.html",
        {
            "task": task,
            "kind": kind,
            "images": presenters.task_images(task),  # type: ignore[arg-type]
            "error": error,
            "prompt_value": prompt or getattr(task, "prompt_en", ""),
        },
        status=status,
    )
    response["HX-Retarget"] = "#modal-root"
    response["HX-Reswap"] = "innerHTML"
    return response


@dashboard_view(Capability.CREATE_TASKS)
def editor(request: HttpRequest, task_id: str) -> HttpResponse:
    task = task_get(organization=organization_of(request), task_id=task_id)
    kind = request.POST.get("kind") or request.GET.get("kind") or "edit"
    if kind not in _KINDS:
        kind = "edit"
    if request.method != "POST":
        return _form(request, task, kind)
    prompt = request.POST.get("prompt", "")
    try:
        outcome = task_edit_result(
            caller=_caller(request, test_mode=task.is_test),
            task_id=task.pk,
            action=_KINDS[kind],
            prompt=prompt,
            mask=request.POST.get("mask") or None,
            canvas=request.POST.get("image") or None,
        )
    except ServiceError as exc:
        return _form(request, task, kind, error=exc.message, prompt=prompt, status=400)
    if is_htmx(request):
        response = _feed_card(request, outcome.task)
        response["HX-Trigger-After-Swap"] = "dashboard:close-modal"
        return response
    return redirect("dashboard:task-detail", task_id=outcome.task.pk)
