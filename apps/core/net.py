from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def _clean_address(value: str | None) -> str | None:
    """A bare, canonical IP address, or None for anything that is not one.

    Proxies write the hop as ``203.0.113.9``, ``203.0.113.9:51234`` or ``[2001:db8::1]:443``;
    dual-stack sockets report IPv4 clients as ``::ffff:203.0.113.9``. Anything else (``unknown``,
    a host name, a forged value) is not an address: it would not match an allow-list, and it
    must not reach the ``last_used_ip`` column, which only stores addresses.
    """
    value = (value or "").strip()
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    try:
        address = ipaddress.ip_address(value.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def client_ip(request: HttpRequest) -> str | None:
    """The caller's address, trusting only as many X-Forwarded-For hops as we have proxies.

    With ``TRUSTED_PROXY_COUNT = n`` the n-th entry from the right is the address our
    outermost proxy saw; entries left of it are whatever the client sent and are ignored. A
    request that came through fewer hops than that (no or a short header) is judged by its
    socket peer. An unreadable hop gives None: the request then passes no IP allow-list.
    """
    hops = int(getattr(settings, "TRUSTED_PROXY_COUNT", 0))
    if hops > 0:
        forwarded = [p.strip() for p in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        forwarded = [p for p in forwarded if p]
        if len(forwarded) >= hops:
            return _clean_address(forwarded[-hops])
    return _clean_address(request.META.get("REMOTE_ADDR"))
