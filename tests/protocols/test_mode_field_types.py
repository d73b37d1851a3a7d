"""The compatible dialects' mode hints refuse a value of the wrong type instead of dropping it.

TTAPI's ``model`` (its examples spell a mode there) and the mj-proxy ``accountFilter.modes``
name the task's mode; a value of another type was ignored and the task ran (and was charged)
in the default mode. Nothing is created or held on a refusal.
"""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from apps.tasks.models import Task

from .conftest import snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(live_key) -> APIClient:
    c = APIClient()
    c.credentials(HTTP_MJ_API_SECRET=live_key.plaintext)
    return c


@pytest.mark.parametrize("model", [{"x": 1}, ["relax"], 5, True])
def test_ttapi_refuses_a_model_that_is_not_a_text(client, funded, model):
    before = snapshot(funded), Task.objects.count()
    response = client.post(
        "/midjourney/v1/imagine", {"prompt": "a red fox", "model": model}, format="json"
    )
    assert response.status_code == 400, response.content
    assert response.json()["status"] == "FAILED"
    assert (snapshot(funded), Task.objects.count()) == before


def test_ttapi_still_reads_a_mode_named_in_model(client, funded):
    response = client.post(
        "/midjourney/v1/imagine", {"prompt": "a red fox", "model": "relax"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert Task.objects.get().mode == "RELAX"


@pytest.mark.parametrize(
    "account_filter",
    [{"modes": "RELAX"}, {"modes": [1]}, {"modes": True}, "garbage", True, 5, ["RELAX"]],
)
def test_mjproxy_refuses_an_account_filter_of_the_wrong_shape(client, funded, account_filter):
    before = snapshot(funded), Task.objects.count()
    response = client.post(
        "/mj/submit/imagine",
        {"prompt": "a red fox", "accountFilter": account_filter},
        format="json",
    )
    assert response.json()["code"] == 4, response.content
    assert (snapshot(funded), Task.objects.count()) == before


def test_mjproxy_still_reads_the_first_mode_of_an_account_filter(client, funded):
    response = client.post(
        "/mj/submit/imagine",
        {"prompt": "a red fox", "accountFilter": {"modes": ["RELAX"], "instanceId": "x"}},
        format="json",
    )
    assert response.json()["code"] in (1, 22), response.content
    assert Task.objects.get().mode == "RELAX"
