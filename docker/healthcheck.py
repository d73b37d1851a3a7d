"""Docker HEALTHCHECK for the web container: GET /healthz must answer 200.

Django answers 400 to a Host it does not serve, so the probe presents one of ALLOWED_HOSTS, and
it says it came through TLS so SECURE_SSL_REDIRECT has nothing to redirect. HTTP_PROXY and
friends, set for the application's outbound calls, must not capture this loopback probe.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def probe_host() -> str:
    for host in os.environ.get("ALLOWED_HOSTS", "").split(","):
        host = host.strip()
        if not host or host == "*":
            continue
        return f"healthcheck{host}" if host.startswith(".") else host
    return "localhost"


def main() -> int:
    port = os.environ.get("PORT", "8000")
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/healthz",
        headers={"Host": probe_host(), "X-Forwarded-Proto": "https"},
    )
    # No proxy from the environment: the probe is for this container's own port.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        sys.stderr.write(f"healthcheck failed: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
