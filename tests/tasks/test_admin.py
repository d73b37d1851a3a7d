"""Finding and inspecting tasks, and managing banned words, in the operator admin.

The task actions and the upstream account pages are covered in ``tests/operator``.
"""

from __future__ import annotations

import pytest
from django.test import Client

from apps.tasks.enums import Action, Status
from apps.tasks.models import BannedWord, Task
from apps.tasks.services.submit import task_submit
from tests.factories import OrganizationFactory, UserFactory

from .helpers import run_to_completion, sandbox_account

pytestmark = pytest.mark.django_db

TASKS = "/admin/tasks/task/"
WORDS = "/admin/tasks/bannedword/"
ACCOUNTS = "/admin/engines/upstreamaccount/"


@pytest.fixture
def superuser_client() -> Client:
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def tasks(caller, organization, fund):
    fund(organization, 1_000_000)
    sandbox_account()
    done = run_to_completion(
        task_submit(caller=caller, action=Action.SHORTEN, prompt="a winding river").task.pk
    )
    running = task_submit(caller=caller, action=Action.IMAGINE, prompt="a tall lighthouse").task
    return done, Task.objects.get(pk=running.pk)


def listed(response) -> str:
    assert response.status_code == 200
    return response.content.decode()


def test_the_task_list_searches_by_id_prompt_and_organization(superuser_client, tasks):
    done, running = tasks
    OrganizationFactory(name="Unrelated")
    page = listed(superuser_client.get(TASKS, {"q": running.pk}))
    assert running.pk in page and done.pk not in page
    page = listed(superuser_client.get(TASKS, {"q": "lighthouse"}))
    assert running.pk in page and done.pk not in page
    page = listed(superuser_client.get(TASKS, {"q": "Acme"}))
    assert running.pk in page and done.pk in page
    page = listed(superuser_client.get(TASKS, {"status__exact": Status.SUCCESS}))
    assert done.pk in page and running.pk not in page
    page = listed(superuser_client.get(TASKS, {"mode__exact": "FAST", "engine": "sandbox"}))
    assert done.pk in page


def test_a_task_page_is_read_only(superuser_client, tasks):
    done, _ = tasks
    page = listed(superuser_client.get(f"{TASKS}{done.pk}/change/"))
    assert "a winding river" in page
    assert 'name="_save"' not in page
    before = Task.objects.get(pk=done.pk).status
    superuser_client.post(f"{TASKS}{done.pk}/change/", {"status": Status.FAILURE})
    assert Task.objects.get(pk=done.pk).status == before
    assert superuser_client.get(f"{TASKS}add/").status_code == 403
    assert superuser_client.get(f"{TASKS}{done.pk}/delete/").status_code == 403


def test_banned_words_are_managed_in_the_admin(superuser_client):
    response = superuser_client.post(f"{WORDS}add/", {"word": "  Very   BAD ", "is_active": "on"})
    assert response.status_code == 302
    assert list(BannedWord.objects.values_list("word", "is_active")) == [("very bad", True)]
    assert "very bad" in listed(superuser_client.get(WORDS, {"q": "bad"}))


def test_staff_without_permissions_see_nothing(tasks):
    client = Client()
    client.force_login(UserFactory(is_staff=True))
    assert client.get(TASKS).status_code == 403
    assert client.get(ACCOUNTS).status_code == 403
