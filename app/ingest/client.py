"""What the server knows about the sender of a request: its IP address and user agent.

The client IP is the TCP peer, unless the peer is a trusted proxy (``trusted_proxies``
setting): then ``X-Forwarded-For`` is walked from the right, skipping trusted proxies, and
the first untrusted address is the client. Entries a client wrote itself (left of the
first untrusted hop) are never believed, so a spoofed header cannot choose the IP.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection

MAX_USER_AGENT = 512

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> TrustedProxies:
        """``"10.0.0.0/8, 127.0.0.1"`` → networks. Raises ``ValueError`` on a typo, so a
        bad setting stops the service at start-up."""
        items = [item.strip() for item in spec.split(",") if item.strip()]
        return cls(tuple(ipaddress.ip_network(item, strict=False) for item in items))

    def trusts(self, address: str) -> bool:
        if not self.networks:  # the default: no address to parse
            return False
        ip = _ip(address)
        return ip is not None and any(ip in net for net in self.networks)


def client_ip(connection: HTTPConnection, proxies: TrustedProxies) -> str | None:
    peer = connection.client.host if connection.client else None
    if peer is None or not proxies.trusts(peer):
        return peer
    hops = _forwarded_for(connection.headers.getlist("x-forwarded-for"))
    for hop in reversed(hops):
        if _ip(hop) is None:
            return peer  # a malformed hop: believe nothing beyond the proxy
        if not proxies.trusts(hop):
            return hop
    return hops[0] if hops else peer


def request_context(connection: HTTPConnection, proxies: TrustedProxies) -> dict[str, Any]:
    """``context`` fields the server fills in when the client did not send them."""
    context: dict[str, Any] = {}
    ip = client_ip(connection, proxies)
    if ip:
        context["ip"] = ip
    agent = connection.headers.get("user-agent")
    if agent:
        context["userAgent"] = agent[:MAX_USER_AGENT]
    return context


def _forwarded_for(values: Iterable[str]) -> list[str]:
    return [hop.strip() for value in values for hop in value.split(",") if hop.strip()]


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
