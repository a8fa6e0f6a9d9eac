"""Telling machines from people on email opens and clicks.

Mail privacy proxies fetch every image of a message when it arrives (Apple Mail Privacy
Protection) or on behalf of the reader (Gmail's and Yahoo's image proxies), and security
gateways follow every link before delivery (Microsoft Defender Safe Links, Barracuda,
Mimecast, Proofpoint…). Their opens and clicks are recorded, flagged
``machine_activity`` plus ``machine:<reason>``, so analytics can leave them out.

Signals, all heuristics (documented so they can be argued with):

* user agents naming a known proxy or scanner (substring, case-insensitive), and
  generic HTTP clients (curl, python-requests…) or an empty user agent;
* Apple MPP: the bare user agent ``Mozilla/5.0`` that its proxies send, or an address in
  Apple's 17.0.0.0/8 network, which its prefetching proxies use;
* a click within ``email_scanner_window_s`` (2 s by default) of the send time the token
  carries: no person reads and clicks that fast, a gateway does.

A Gmail image-proxy open may be a real reader (Gmail proxies on open, not on delivery);
it is flagged all the same, with its own reason, so a report can decide.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta

from app.touchpoint import MACHINE_FLAG

APPLE_NETWORKS = (ipaddress.ip_network("17.0.0.0/8"),)
APPLE_PROXY_USER_AGENT = "mozilla/5.0"

MAIL_PROXY_AGENTS = {
    "googleimageproxy": "gmail_image_proxy",
    "ggpht.com": "gmail_image_proxy",
    "yahoomailproxy": "yahoo_mail_proxy",
    "yahoo! slurp": "yahoo_mail_proxy",
}

LINK_SCANNER_AGENTS = {
    "barracuda": "barracuda",
    "mimecast": "mimecast",
    "proofpoint": "proofpoint",
    "ppops": "proofpoint",
    "safelinks": "microsoft_safe_links",
    "msoffice": "microsoft_safe_links",
    "microsoft office": "microsoft_safe_links",
    "bingpreview": "microsoft_safe_links",
    "symantec": "symantec",
    "trend micro": "trend_micro",
    "forcepoint": "forcepoint",
    "ironport": "cisco",
    "sophos": "sophos",
}

GENERIC_AGENTS = (
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "go-http-client",
    "java/",
    "okhttp",
    "headlesschrome",
    "bot",
    "crawler",
    "spider",
)


def open_reason(user_agent: str | None, ip: str | None) -> str | None:
    """Why an open looks like a machine's, or ``None`` for a person's."""
    agent = (user_agent or "").strip().lower()
    if _in_apple_network(ip) or agent == APPLE_PROXY_USER_AGENT:
        return "apple_mail_privacy"
    for needle, reason in MAIL_PROXY_AGENTS.items():
        if needle in agent:
            return reason
    return _agent_reason(agent)


def click_reason(
    user_agent: str | None,
    *,
    sent_at: datetime | None,
    now: datetime,
    window: timedelta,
) -> str | None:
    """Why a click looks like a link scanner's, or ``None`` for a person's."""
    agent = (user_agent or "").strip().lower()
    reason = _agent_reason(agent)
    if reason:
        return reason
    if sent_at is not None and now - sent_at < window:
        return "clicked_too_soon_after_send"
    return None


def flags(reason: str | None) -> list[str]:
    return [MACHINE_FLAG, f"machine:{reason}"] if reason else []


def _agent_reason(agent: str) -> str | None:
    if not agent:
        return "no_user_agent"
    for needle, reason in LINK_SCANNER_AGENTS.items():
        if needle in agent:
            return f"link_scanner:{reason}"
    if any(needle in agent for needle in GENERIC_AGENTS):
        return "http_client"
    return None


def _in_apple_network(ip: str | None) -> bool:
    if not ip:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in net for net in APPLE_NETWORKS)
