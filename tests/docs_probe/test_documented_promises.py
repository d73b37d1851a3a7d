"""Documented promises a review found broken, kept: the schema's range of the video index,
``Retry-After`` on every dialect's 503, and an image URL over 10 MiB refused as bad input naming
its field."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest
from django.db import OperationalError
from django.test import Client

from apps.protocols.mjproxy import views as mjproxy_views
from apps.protocols.ttapi import views as ttapi_views
from apps.tasks.services.inputs import MAX_DOWNLOAD_BYTES
from tests.protocols.conftest import snapshot

pytestmark = pytest.mark.django_db


def test_the_schema_gives_the_video_index_range_the_route_takes(live_key, client_for):
    client = client_for(live_key)
    refused = client.post("/mj/submit/video", {"taskId": "1", "index": 4}, format="json")
    assert refused.status_code == 200
    assert refused.json()["code"] == 4
    assert refused.json()["description"].startswith("index: Must be 0, 1, 2 or 3")

    schema = Client().get("/api/schema/all/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    body = schema.json()["paths"]["/mj/submit/video"]["post"]["requestBody"]
    index = body["content"]["application/json"]["schema"]["properties"]["index"]
    assert (index["minimum"], index["maximum"]) == (0, 3)


@pytest.mark.parametrize(
    ("views", "path", "failed"),
    [
        (mjproxy_views, "/mj/task/123/fetch", {"code": 9}),
        (ttapi_views, "/midjourney/v1/fetch?jobId=123", {"status": "FAILED"}),
    ],
    ids=["mjproxy", "ttapi"],
)
def test_a_database_outage_says_when_to_retry_in_the_compatible_dialects(
    live_key, monkeypatch, views, path, failed
):
    def down(**kwargs: object) -> object:
        raise OperationalError("connection to server failed")

    monkeypatch.setattr(views, "task_fetch", down)
    response = Client(raise_request_exception=False).get(
        path, HTTP_MJ_API_SECRET=live_key.plaintext
    )
    assert response.status_code == 503
    assert failed.items() <= response.json().items()
    assert response.get("Retry-After") == "5"


@pytest.fixture
def large_image_server() -> Iterator[str]:
    """``/big.png``: a PNG signature followed by more than the 10 MiB an input may have."""
    body = b"\x89PNG\r\n\x1a\n" + b"\0" * MAX_DOWNLOAD_BYTES

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/big.png"
    server.shutdown()
    server.server_close()


def test_an_image_url_over_10_mib_is_a_validation_error_naming_the_field(
    funded,
    live_key,
    sandbox,
    settings,
    large_image_server,
):
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True  # the server is on loopback
    before = snapshot(funded)
    response = Client(raise_request_exception=False).post(
        "/api/v1/tasks",
        json.dumps({"action": "DESCRIBE", "images": [large_image_server]}),
        content_type="application/json",
        HTTP_MJ_API_SECRET=live_key.plaintext,
    )
    assert response.status_code == 400, response.content[:300]
    assert snapshot(funded) == before
    error = response.json()["error"]
    assert error["code"] == "validation_error", error
    assert (error["details"] or {}).get("field") == "images[0]", error
