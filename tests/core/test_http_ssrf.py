"""The SSRF guard of apps/core/http.py (SPEC §7).

A canary HTTP listener on loopback counts every connection it accepts. With private addresses
refused, no spelling of a loopback, private or metadata address may reach it, nor may anything
open a socket to a refused address (``http_wire.open_socket`` is spied on as well).
"""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from apps.core import http as outbound
from apps.core import http_wire
from apps.core.http import (
    OutboundHTTPError,
    ResponseTooLarge,
    Timeout,
    UnsafeURL,
    address_is_public,
    check_url,
    safe_download,
    safe_request,
)

REAL_GETADDRINFO = socket.getaddrinfo


class Canary:
    """A loopback HTTP server that records every connection and request."""

    def __init__(self, host: str = "127.0.0.1", *, handler_status: int = 200) -> None:
        canary = self
        self.connections = 0
        self.requests: list[dict[str, Any]] = []
        self.status = handler_status
        self.location: str | None = None
        self.body = b"canary"

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                canary.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": self.rfile.read(length) if length else b"",
                    }
                )
                self.send_response(canary.status)
                if canary.location:
                    self.send_header("Location", canary.location)
                self.send_header("Content-Length", str(len(canary.body)))
                self.end_headers()
                self.wfile.write(canary.body)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            daemon_threads = True

            def verify_request(self, request: Any, client_address: Any) -> bool:
                canary.connections += 1
                return True

        self.server = Server((host, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def canary() -> Iterator[Canary]:
    server = Canary()
    yield server
    server.close()


@pytest.fixture
def canary6() -> Iterator[Canary | None]:
    try:
        server = Canary("::1")
    except OSError:  # no IPv6 loopback here; the guard is still exercised
        yield None
        return
    yield server
    server.close()


@pytest.fixture
def refuse_private(settings: Any) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = False


@pytest.fixture
def allow_private(settings: Any) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True


@pytest.fixture
def socket_spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    opened: list[tuple[str, int]] = []
    real = http_wire.open_socket

    def spy(address: str, port: int, timeout: float) -> socket.socket:
        opened.append((address, port))
        return real(address, port, timeout)

    monkeypatch.setattr(http_wire, "open_socket", spy)
    return opened


def fake_dns(monkeypatch: pytest.MonkeyPatch, table: dict[str, list[str]]) -> list[str]:
    """Answer lookups of the names in ``table`` as given; count them; pass others through."""
    lookups: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if isinstance(host, str) and host in table:
            lookups.append(host)
            answers = []
            for address in table[host]:
                if ":" in address:
                    answers.append(
                        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))
                    )
                else:
                    answers.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
            return answers
        return REAL_GETADDRINFO(host, port, *args, **kwargs)

    monkeypatch.setattr(outbound.socket, "getaddrinfo", getaddrinfo)
    return lookups


# Every spelling below would land on the canary (127.0.0.1:<port>) if the guard let it through.
LOOPBACK_SPELLINGS = [
    "http://127.0.0.1:{port}/",
    "http://127.0.0.2:{port}/",
    "http://127.255.255.254:{port}/",
    "http://127.1:{port}/",
    "http://2130706433:{port}/",  # decimal
    "http://0x7f000001:{port}/",  # hex
    "http://0x7f.1:{port}/",  # hex, short form
    "http://0x7f.0x0.0x0.0x1:{port}/",
    "http://017700000001:{port}/",  # octal
    "http://0177.0.0.1:{port}/",  # octal dotted
    "http://0177.1:{port}/",
    "http://127.000.000.001:{port}/",
    "http://0:{port}/",  # 0.0.0.0 reaches the local host on Linux
    "http://0.0.0.0:{port}/",
    "http://localhost:{port}/",
    "http://LOCALHOST:{port}/",
    "http://localhost.:{port}/",
    "http://foo.localhost:{port}/",
    "https://localhost:{port}/",
    "http://[::ffff:127.0.0.1]:{port}/",  # IPv4-mapped IPv6
    "http://[::ffff:7f00:1]:{port}/",
    "http://[0:0:0:0:0:ffff:127.0.0.1]:{port}/",
    "http://[::127.0.0.1]:{port}/",  # IPv4-compatible IPv6
    "http://[64:ff9b::7f00:1]:{port}/",  # NAT64 embedding 127.0.0.1
    "http://[2002:7f00:1::]:{port}/",  # 6to4 embedding 127.0.0.1
    "http://[::1]:{port}/",
    "http://[0:0:0:0:0:0:0:1]:{port}/",
    "http://[::]:{port}/",
]

PRIVATE_TARGETS = [
    "http://10.0.0.1/",
    "http://10.255.255.255:8080/",
    "http://172.16.0.1/",
    "http://172.31.255.1/",
    "http://192.168.0.1/",
    "http://192.168.1.254:8443/",
    "http://100.64.0.1/",  # carrier-grade NAT
    "http://100.127.255.254/",
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://169.254.169.254/computeMetadata/v1/",
    "http://[fd00::1]/",  # unique local
    "http://[fe80::1]/",  # link-local
    "http://[fec0::1]/",  # site-local
    "http://[ff02::1]/",  # multicast
    "http://224.0.0.1/",
    "http://239.255.255.250/",
    "http://255.255.255.255/",
    "http://240.0.0.1/",
    "http://198.18.0.1/",
    "http://192.0.0.8/",
    "http://[::ffff:10.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 embedding 169.254.169.254
    "http://[2001:0::1]/",  # Teredo
    "https://192.168.0.1/",
]

MALFORMED = [
    "ftp://example.com/file",
    "file:///etc/passwd",
    "gopher://127.0.0.1:70/",
    "dict://127.0.0.1:11211/",
    "javascript:alert(1)",
    "//example.com/",
    "http:///nohost",
    "http://user:pass@example.com/",
    "http://127.0.0.1\\@example.com/",
    "http://ex%61mple.com/",
    "http://exa mple.com/",
    "http://example.com:0/",
    "http://example.com:99999/",
    "http://[fe80::1%25eth0]/",
    "",
]


@pytest.mark.usefixtures("refuse_private")
@pytest.mark.parametrize("template", LOOPBACK_SPELLINGS)
def test_loopback_spellings_never_reach_the_canary(
    template: str, canary: Canary, canary6: Canary | None, socket_spy: list[Any]
) -> None:
    url = template.format(port=canary.port)
    with pytest.raises(UnsafeURL):
        safe_request("POST", url, content=b"{}")
    with pytest.raises(UnsafeURL):
        safe_download(url, max_bytes=1024)
    assert socket_spy == []
    assert canary.connections == 0
    assert canary.requests == []
    if canary6 is not None:
        assert canary6.connections == 0


@pytest.mark.usefixtures("refuse_private")
@pytest.mark.parametrize("url", PRIVATE_TARGETS)
def test_private_link_local_cgnat_multicast_and_metadata_are_refused(
    url: str, socket_spy: list[Any]
) -> None:
    with pytest.raises(UnsafeURL):
        safe_request("GET", url)
    assert socket_spy == []


@pytest.mark.parametrize("url", MALFORMED)
def test_bad_schemes_userinfo_and_odd_hosts_are_refused_even_when_private_is_allowed(
    url: str, allow_private: None, socket_spy: list[Any]
) -> None:
    with pytest.raises(UnsafeURL):
        safe_request("GET", url)
    assert socket_spy == []


@pytest.mark.usefixtures("refuse_private")
def test_public_name_resolving_to_loopback_is_refused(
    monkeypatch: pytest.MonkeyPatch, canary: Canary, socket_spy: list[Any]
) -> None:
    lookups = fake_dns(
        monkeypatch,
        {
            "hooks.customer.example": ["127.0.0.1"],
            "rebind.customer.example": ["93.184.216.34", "127.0.0.1"],
            "mapped.customer.example": ["::ffff:127.0.0.1"],
            "metadata.customer.example": ["169.254.169.254"],
        },
    )
    for host in lookups_hosts():
        with pytest.raises(UnsafeURL):
            safe_request("POST", f"http://{host}:{canary.port}/hook", content=b"{}")
    # Each name was resolved once, and a single non-public answer is enough to refuse.
    assert lookups == lookups_hosts()
    assert socket_spy == []
    assert canary.connections == 0


def lookups_hosts() -> list[str]:
    return [
        "hooks.customer.example",
        "rebind.customer.example",
        "mapped.customer.example",
        "metadata.customer.example",
    ]


@pytest.mark.usefixtures("refuse_private")
def test_redirect_to_a_private_address_is_not_followed(
    monkeypatch: pytest.MonkeyPatch, canary: Canary
) -> None:
    """An allowed (public) target answers 302 to the canary; the client stops at the 302."""
    redirector = Canary()
    redirector.status = 302
    redirector.location = f"http://127.0.0.1:{canary.port}/stolen"
    try:
        fake_dns(monkeypatch, {"public.customer.example": ["93.184.216.34"]})
        real_open = http_wire.open_socket
        dialled: list[tuple[str, int]] = []

        def route(address: str, port: int, timeout: float) -> socket.socket:
            # Stand-in for the internet: the public address is served by the loopback redirector.
            dialled.append((address, port))
            assert address == "93.184.216.34"
            return real_open("127.0.0.1", redirector.port, timeout)

        monkeypatch.setattr(http_wire, "open_socket", route)
        response = safe_request("POST", "http://public.customer.example/hook", content=b"{}")
        assert response.status == 302
        assert response.headers["location"] == f"http://127.0.0.1:{canary.port}/stolen"
        assert response.address == "93.184.216.34"
        with pytest.raises(OutboundHTTPError) as excinfo:
            safe_download("http://public.customer.example/image.png", max_bytes=1024)
        assert excinfo.value.status == 302
        assert excinfo.value.permanent is True
        assert dialled == [("93.184.216.34", 80), ("93.184.216.34", 80)]
        assert len(redirector.requests) == 2
        assert redirector.requests[0]["headers"]["host"] == "public.customer.example"
        assert canary.connections == 0
    finally:
        redirector.close()


def test_address_policy_examples() -> None:
    public = [
        "93.184.216.34",
        "8.8.8.8",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
    ]
    for address in public:
        assert address_is_public(ipaddress.ip_address(address)), address
    refused = [
        "127.0.0.1",
        "10.1.2.3",
        "100.64.0.1",
        "169.254.169.254",
        "::1",
        "fc00::1",
        "2002:a00:1::",
    ]
    for address in refused:
        assert not address_is_public(ipaddress.ip_address(address)), address


def test_with_the_switch_on_a_loopback_receiver_gets_the_request(
    allow_private: None, canary: Canary
) -> None:
    response = safe_request(
        "POST",
        f"http://127.0.0.1:{canary.port}/hook?x=1",
        headers={"Content-Type": "application/json", "webhook-id": "msg_1"},
        content=b'{"ok":true}',
    )
    assert response.status == 200
    assert response.body == b"canary"
    assert response.truncated is False
    assert response.address == "127.0.0.1"
    assert canary.connections == 1
    [request] = canary.requests
    assert request["method"] == "POST"
    assert request["path"] == "/hook?x=1"
    assert request["body"] == b'{"ok":true}'
    assert request["headers"]["host"] == f"127.0.0.1:{canary.port}"
    assert request["headers"]["webhook-id"] == "msg_1"
    assert request["headers"]["content-type"] == "application/json"


def test_the_switch_is_read_from_settings_per_call(settings: Any, canary: Canary) -> None:
    url = f"http://127.0.0.1:{canary.port}/"
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = False
    with pytest.raises(UnsafeURL):
        safe_request("GET", url)
    assert canary.connections == 0
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True
    assert safe_request("GET", url).status == 200
    assert canary.connections == 1


def test_connects_to_the_checked_address_without_a_second_lookup(
    allow_private: None, monkeypatch: pytest.MonkeyPatch, canary: Canary, socket_spy: list[Any]
) -> None:
    lookups = fake_dns(monkeypatch, {"hooks.customer.example": ["127.0.0.1"]})
    response = safe_request("GET", f"http://hooks.customer.example:{canary.port}/ping")
    assert response.status == 200
    assert lookups == ["hooks.customer.example"]
    assert socket_spy == [("127.0.0.1", canary.port)]
    assert canary.requests[0]["headers"]["host"] == f"hooks.customer.example:{canary.port}"


def test_redirects_are_returned_not_followed_even_when_private_is_allowed(
    allow_private: None, canary: Canary
) -> None:
    target = Canary()
    try:
        canary.status = 301
        canary.location = f"http://127.0.0.1:{target.port}/"
        response = safe_request("GET", f"http://127.0.0.1:{canary.port}/")
        assert response.status == 301
        assert target.connections == 0
    finally:
        target.close()


def test_response_size_cap(allow_private: None, canary: Canary) -> None:
    canary.body = b"x" * 100_000
    response = safe_request("GET", f"http://127.0.0.1:{canary.port}/", max_response_bytes=2048)
    assert response.body == b"x" * 2048
    assert response.truncated is True
    with pytest.raises(ResponseTooLarge):
        safe_download(f"http://127.0.0.1:{canary.port}/", max_bytes=99_999)
    assert safe_download(f"http://127.0.0.1:{canary.port}/", max_bytes=100_000) == b"x" * 100_000


def test_connection_refused_is_a_temporary_error(allow_private: None) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(OutboundHTTPError) as excinfo:
        safe_request("GET", f"http://127.0.0.1:{port}/")
    assert excinfo.value.permanent is False


def test_unresolvable_name_is_a_temporary_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def getaddrinfo(*args: Any, **kwargs: Any) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(outbound.socket, "getaddrinfo", getaddrinfo)
    with pytest.raises(OutboundHTTPError):
        safe_request("GET", "http://no-such-host.customer.example/")


def _silent_server(behaviour: str) -> tuple[socket.socket, threading.Event]:
    """A TCP server that accepts and then says nothing, or drips one byte at a time."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    stop = threading.Event()

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.recv(65536)
            if behaviour == "drip":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                while not stop.is_set():
                    try:
                        conn.sendall(b"x")
                    except OSError:
                        return
                    time.sleep(0.05)
            else:
                stop.wait(5)

    threading.Thread(target=serve, daemon=True).start()
    return listener, stop


@pytest.mark.parametrize("behaviour", ["silent", "drip"])
def test_read_timeout_and_total_deadline(allow_private: None, behaviour: str) -> None:
    listener, stop = _silent_server(behaviour)
    try:
        port = listener.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(OutboundHTTPError):
            safe_request(
                "GET",
                f"http://127.0.0.1:{port}/",
                timeout=Timeout(connect=1.0, read=0.5, total=1.0),
                max_response_bytes=10_000,
            )
        # A server that drips a byte every 50 ms never trips the read timeout; the total does.
        assert time.monotonic() - started < 2.0
    finally:
        stop.set()
        listener.close()


def _certificate(hostname: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def test_tls_uses_the_host_name_for_sni_and_verification_while_dialling_the_pinned_address(
    allow_private: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    hostname = "hooks.customer.example"
    cert_pem, key_pem = _certificate(hostname)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    server = Canary()
    seen_sni: list[str | None] = []
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server_context.sni_callback = lambda sock, name, ctx: seen_sni.append(name)
    server.server.socket = server_context.wrap_socket(server.server.socket, server_side=True)
    try:
        client_context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
        monkeypatch.setattr(http_wire, "ssl_context", lambda: client_context)
        fake_dns(monkeypatch, {hostname: ["127.0.0.1"], "other.customer.example": ["127.0.0.1"]})

        response = safe_request("GET", f"https://{hostname}:{server.port}/secure")
        assert response.status == 200
        assert seen_sni == [hostname]
        assert server.requests[0]["headers"]["host"] == f"{hostname}:{server.port}"

        # Same pinned address, but the certificate does not cover this name: refused.
        with pytest.raises(OutboundHTTPError):
            safe_request("GET", f"https://other.customer.example:{server.port}/secure")
        assert len(server.requests) == 1
    finally:
        server.close()


def test_check_url_without_resolution_still_refuses_literals_and_localhost(
    refuse_private: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = fake_dns(monkeypatch, {"hooks.customer.example": ["127.0.0.1"]})
    checked = check_url("https://hooks.customer.example/a?b=c", resolve_host=False)
    assert (checked.scheme, checked.host, checked.port, checked.target) == (
        "https",
        "hooks.customer.example",
        443,
        b"/a?b=c",
    )
    assert checked.addresses == ()
    assert lookups == []
    for url in ("http://127.0.0.1/", "http://localhost/", "http://[::1]/", "ftp://x.example/"):
        with pytest.raises(UnsafeURL):
            check_url(url, resolve_host=False)


def test_a_host_name_longer_than_dns_allows_is_refused_for_good(socket_spy: list[Any]) -> None:
    host = ".".join(["a" * 63] * 4)  # 255 characters, each label valid
    with pytest.raises(UnsafeURL):
        safe_request("GET", f"http://{host}/")
    with pytest.raises(UnsafeURL):
        check_url(f"https://{host}/", resolve_host=False)
    longest = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])  # 253
    assert check_url(f"https://{longest}/", resolve_host=False).host == longest
    assert socket_spy == []


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy"])
def test_proxy_environment_variables_are_ignored(
    variable: str,
    allow_private: None,
    monkeypatch: pytest.MonkeyPatch,
    canary: Canary,
    socket_spy: list[Any],
) -> None:
    """A proxy from the environment would connect to an address the guard never checked (and
    see every webhook body): requests go straight to the pinned address whatever it says."""
    proxy = Canary()
    try:
        monkeypatch.setenv(variable, f"http://127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        fake_dns(monkeypatch, {"hooks.customer.example": ["127.0.0.1"]})
        response = safe_request("POST", f"http://hooks.customer.example:{canary.port}/h")
        assert response.status == 200
        assert socket_spy == [("127.0.0.1", canary.port)]
        assert canary.requests[0]["path"] == "/h"
        assert proxy.connections == 0
    finally:
        proxy.close()


@pytest.mark.usefixtures("refuse_private")
def test_idn_host_names(monkeypatch: pytest.MonkeyPatch, socket_spy: list[Any]) -> None:
    """Unicode look-alikes of loopback never get through; a real IDN is checked as punycode."""
    for url in (
        "http://ｌｏｃａｌｈｏｓｔ/",  # fullwidth
        "http://１２７.０.０.１/",
        "http://127。0。0。1/",  # ideographic full stops
        "http://localhost。/",
        "http://ß.localhost/",
    ):
        with pytest.raises(UnsafeURL):
            check_url(url)
    lookups = fake_dns(
        monkeypatch,
        {"xn--bcher-kva.example": ["93.184.216.34"], "xn--lcalhost-v3a.example": ["::1"]},
    )
    checked = check_url("https://bücher.example/hook")
    assert (checked.host, checked.addresses) == ("xn--bcher-kva.example", ("93.184.216.34",))
    with pytest.raises(UnsafeURL):
        check_url("https://lócalhost.example/")
    assert lookups == ["xn--bcher-kva.example", "xn--lcalhost-v3a.example"]
    assert socket_spy == []
