"""Who gets an admin page: staff only, through allauth's login, with MFA when required."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from allauth.mfa.models import Authenticator
from django.contrib import admin
from django.test import Client
from django.urls import reverse

from tests.factories import UserFactory

from .conftest import admin_url, grant

pytestmark = pytest.mark.django_db

BRAND = "mjgate operator"


def every_admin_page() -> list[str]:
    """The index, each model's list and add page, the stats page and the audit log."""
    urls = [admin_url("index"), admin_url("operator_stats")]
    for model in admin.site._registry:
        opts = model._meta
        urls.append(admin_url(f"{opts.app_label}_{opts.model_name}_changelist"))
        urls.append(admin_url(f"{opts.app_label}_{opts.model_name}_add"))
    return urls


def test_the_site_is_branded_and_links_the_stats_and_the_audit_log(operator_client):
    page = operator_client.get(admin_url("index"))
    assert page.status_code == 200
    html = page.content.decode()
    assert f"<title>Operations | {BRAND}</title>" in html
    assert f'<div id="site-name"><a href="{admin_url("index")}">{BRAND}</a></div>' in html
    assert f'href="{admin_url("operator_stats")}">Live stats</a>' in html
    assert f'href="{admin_url("operator_auditentry_changelist")}">Audit log</a>' in html
    assert "operator/admin.css" in html


def test_anonymous_visitors_are_sent_to_the_allauth_login_and_see_no_admin_content():
    client = Client()
    for url in every_admin_page():
        response = client.get(url)
        assert response.status_code == 302, url
        assert BRAND not in response.content.decode()
    response = client.get(admin_url("index"), follow=True)
    final = response.redirect_chain[-1][0]
    parts = urlsplit(final)
    assert parts.path == reverse("account_login")
    assert parse_qs(parts.query)["next"] == [admin_url("index")]
    assert BRAND not in response.content.decode()


def test_the_admin_login_url_redirects_to_allauth_keeping_a_safe_next():
    client = Client()
    login = admin_url("login")
    response = client.get(login, {"next": admin_url("tasks_task_changelist")})
    assert response.status_code == 302
    assert response["Location"] == (
        f"{reverse('account_login')}?next={admin_url('tasks_task_changelist').replace('/', '%2F')}"
    )
    unsafe = client.get(login, {"next": "https://evil.example/"})
    assert unsafe["Location"] == f"{reverse('account_login')}?next=%2Fadmin%2F"
    # Django's own admin login form is never offered, not even to a POST.
    posted = client.post(login, {"username": "x", "password": "y"})
    assert posted.status_code == 302
    assert posted["Location"].startswith(reverse("account_login"))


def test_a_logged_in_non_staff_user_gets_403_and_no_admin_content(owner):
    client = Client()
    client.force_login(owner)
    for url in every_admin_page():
        response = client.get(url)
        assert response.status_code in (302, 403), url
        assert BRAND not in response.content.decode(), url
        if response.status_code == 302:
            # Straight on to the admin login, which refuses a logged-in non-staff user.
            follow = client.get(response["Location"])
            assert follow.status_code == 403
            assert BRAND not in follow.content.decode()
    assert client.get(admin_url("login")).status_code == 403


def test_staff_without_permissions_see_the_index_but_no_model_pages():
    client = Client()
    client.force_login(UserFactory(is_staff=True))
    assert client.get(admin_url("index")).status_code == 200
    assert client.get(admin_url("tasks_task_changelist")).status_code == 403
    assert client.get(admin_url("operator_stats")).status_code == 403
    assert client.get(admin_url("operator_auditentry_changelist")).status_code == 403


def test_the_stats_page_needs_its_permission():
    user = grant(UserFactory(is_staff=True), "operator.view_stats")
    client = Client()
    client.force_login(user)
    assert client.get(admin_url("operator_stats")).status_code == 200


def test_an_inactive_staff_user_gets_no_admin_page():
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True, is_active=False))
    response = client.get(admin_url("index"))
    assert response.status_code == 302
    assert BRAND not in response.content.decode()


class TestMfaRequired:
    @pytest.fixture(autouse=True)
    def _require_mfa(self, settings):
        settings.ADMIN_REQUIRE_MFA = True

    def test_staff_without_a_second_factor_are_sent_to_set_one_up(self, operator_client):
        for url in every_admin_page():
            response = operator_client.get(url)
            assert response.status_code == 302, url
            assert response["Location"] == (
                f"{reverse('mfa_activate_totp')}?next={admin_url('index').replace('/', '%2F')}"
            )
            assert BRAND not in response.content.decode()

    def test_recovery_codes_alone_are_not_a_second_factor(self, operator, operator_client):
        Authenticator.objects.create(user=operator, type=Authenticator.Type.RECOVERY_CODES, data={})
        response = operator_client.get(admin_url("index"))
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("mfa_activate_totp"))

    def test_staff_with_totp_get_in(self, operator, operator_client):
        Authenticator.objects.create(user=operator, type=Authenticator.Type.TOTP, data={})
        for url in every_admin_page():
            expected = {200, 403} if url.endswith("/add/") else {200}  # some models: no add
            assert operator_client.get(url).status_code in expected, url

    def test_logout_works_without_a_second_factor(self, operator_client):
        response = operator_client.post(admin_url("logout"))
        assert response.status_code == 200
        assert "_auth_user_id" not in operator_client.session

    def test_the_production_default_requires_mfa(self):
        from config.settings import base

        assert base.ADMIN_REQUIRE_MFA is True


def test_mfa_is_not_required_when_turned_off(settings, operator_client):
    settings.ADMIN_REQUIRE_MFA = False
    assert operator_client.get(admin_url("index")).status_code == 200
