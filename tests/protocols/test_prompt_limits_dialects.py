"""Every surface refuses the same prompts the same way (they share the parser): numbers too long
to read are a validation error, not a 500, and prompts Midjourney would run as several jobs
(``--repeat``, ``{a, b}`` permutations) are refused naming what to change; nothing is held,
queued or stored."""

from __future__ import annotations

import pytest

from apps.accounts.models import Organization, User
from apps.tasks.models import Task
from tests.dashboard.helpers import login

from .conftest import snapshot

pytestmark = pytest.mark.django_db

HUGE = "9" * 4400


def test_mjproxy_shorten_with_a_huge_seed_answers_code_4(funded, live_key, client_for, sandbox):
    client = client_for(live_key)
    before = snapshot(funded)
    response = client.post(
        "/mj/submit/shorten", {"prompt": f"a red fox --seed {HUGE}"}, format="json"
    )
    assert response.status_code == 200, response.content[:300]
    body = response.json()
    assert body["code"] == 4
    assert body["description"].startswith("--seed must be a whole number from 0 to 4294967295")
    assert snapshot(funded) == before


@pytest.mark.parametrize(
    ("prompt", "says"),
    [
        (f"a red fox --ar 1:{HUGE}", "--ar takes whole numbers of at most 20 digits"),
        (f"a red fox --seed {HUGE}", "--seed must be a whole number"),
        ("a red fox --repeat 40", "--repeat is not supported"),
        ("a red fox --r 4", "--r is not supported"),
        ("a {red, green} {fox, owl}", "Permutation prompts are not supported: {red, green}"),
    ],
    ids=["huge-ar", "huge-seed", "repeat", "r", "permutations"],
)
def test_every_dialect_refuses_the_prompt_alike(
    prompt: str,
    says: str,
    funded: Organization,
    owner: User,
    live_key,
    client_for,
    sandbox,
) -> None:
    client = client_for(live_key)
    before = snapshot(funded)

    native = client.post("/api/v1/tasks", {"action": "IMAGINE", "prompt": prompt}, format="json")
    assert native.status_code == 400, native.content[:300]
    assert says in str(native.json())

    mjproxy = client.post("/mj/submit/imagine", {"prompt": prompt}, format="json")
    assert (mjproxy.status_code, mjproxy.json()["code"]) == (200, 4)
    assert says in mjproxy.json()["description"]

    ttapi = client.post("/midjourney/v1/imagine", {"prompt": prompt}, format="json")
    assert ttapi.status_code == 400, ttapi.content[:300]
    assert says in ttapi.json()["message"]

    dashboard = login(owner).post(
        "/create/", {"action": "IMAGINE", "prompt": prompt, "mode": "FAST"}, HTTP_HX_REQUEST="true"
    )
    assert dashboard.status_code == 400, dashboard.content[:300]
    assert says.split(":")[0] in dashboard.content.decode()  # HTML-escaped after the colon

    assert snapshot(funded) == before
    assert not Task.objects.filter(organization=funded).exists()
