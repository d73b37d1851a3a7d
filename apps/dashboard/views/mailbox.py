"""The local mailbox page (development settings only; a 404 everywhere else)."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from ..mailbox import mail_list, mailbox_dir


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    # No sign-in: the verification mail is read before there is an account to sign in with.
    if mailbox_dir() is None:
        raise Http404("The local mailbox exists only with the development settings.")
    return render(request, "dashboard/mailbox.html", {"mails": mail_list()})
