"""docker/: what can be checked without a container engine. The image runs unprivileged with a
health check and static files collected at build time; compose reads only documented variables;
the health probe talks to its own port whatever proxy the environment names."""

from __future__ import annotations

import http.server
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()
COMPOSE = (ROOT / "docker" / "compose.yml").read_text()


def _env_example_names() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#?\s?([A-Z][A-Z0-9_]*)=", text, re.MULTILINE))


def test_the_image_runs_unprivileged_with_a_health_check_and_collected_static_files():
    instructions = [line.split()[0] for line in DOCKERFILE.splitlines() if line[:1].isalpha()]
    runtime = DOCKERFILE.split("AS runtime", 1)[1]
    # Nothing runs as root after the switch, and the switch comes after every RUN.
    assert runtime.rstrip().count("USER mjgate") == 1
    assert "RUN" not in runtime.split("USER mjgate", 1)[1]
    assert "HEALTHCHECK" in instructions
    assert 'CMD ["python", "docker/healthcheck.py"]' in DOCKERFILE
    assert "python manage.py collectstatic --noinput" in runtime
    assert "DJANGO_SETTINGS_MODULE=config.settings.production" in runtime


def test_compose_reads_only_documented_variables():
    """Every ${VAR} compose interpolates is one a newcomer finds in .env.example."""
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", COMPOSE))
    assert used >= {"SECRET_KEY", "ALLOWED_HOSTS", "PUBLIC_BASE_URL", "POSTGRES_PASSWORD"}
    assert sorted(used - _env_example_names()) == []


def test_compose_runs_migrations_once_before_the_app_services():
    services = COMPOSE.split("\nservices:\n", 1)[1]
    assert 'command: ["python", "manage.py", "migrate", "--noinput"]' in services
    for name in ("web", "worker", "beat", "discord-gateway"):
        block = services.split(f"\n  {name}:\n", 1)[1].split("\n\n  ", 1)[0]
        assert "migrate:\n        condition: service_completed_successfully" in block, name


def test_compose_lowers_the_results_worker_against_the_other_containers():
    """A nice value weighs only inside its own container: the results worker's container also
    has a lower CPU weight than the engine worker's (config/priority.py)."""
    services = COMPOSE.split("\nservices:\n", 1)[1]
    results = services.split("\n  results:\n", 1)[1].split("\n\n  ", 1)[0]
    worker = services.split("\n  worker:\n", 1)[1].split("\n\n  ", 1)[0]
    assert 'CELERY_WORKER_NICE: "10"' in results
    shares = re.search(r"^    cpu_shares: (\d+)$", results, re.MULTILINE)
    assert shares and int(shares.group(1)) < 1024  # Docker's default weight
    assert "cpu_shares" not in worker


class _Recorder(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, status: int = 200) -> None:
        recorder = self
        self.requests: list[dict[str, Any]] = []
        self.connections = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.requests.append({"path": self.path, **dict(self.headers.items())})
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.connections += 1
        return True

    @property
    def port(self) -> int:
        return int(self.server_address[1])


def _probe(port: int, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run(
        [sys.executable, "docker/healthcheck.py"],
        cwd=ROOT,
        env={**clean, "PORT": str(port), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_healthcheck_probes_its_own_port_past_any_proxy(variable):
    app, proxy = _Recorder(), _Recorder(status=502)
    try:
        result = _probe(
            app.port,
            ALLOWED_HOSTS=".mjgate.example.com,api.mjgate.example.com",
            **{variable: f"http://127.0.0.1:{proxy.port}"},
        )
        assert result.returncode == 0, result.stderr
        assert proxy.connections == 0
        [request] = app.requests
        assert request["path"] == "/healthz"
        # A host production serves, and "came through TLS": no 400, no redirect.
        assert request["Host"] == "healthcheck.mjgate.example.com"
        assert request["X-Forwarded-Proto"] == "https"
    finally:
        app.shutdown()
        proxy.shutdown()


def test_healthcheck_fails_when_nothing_answers():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = _probe(port, ALLOWED_HOSTS="mjgate.example.com")
    assert result.returncode == 1
    assert "healthcheck failed" in result.stderr
