"""The source settings analytics.js loads before it sends anything.

``@segment/analytics-next`` fetches ``{cdnURL}/v1/projects/{writeKey}/settings`` (``cdnURL`` is
Segment's CDN unless the site sets it) and sends its calls where that document's
``Segment.io`` integration says. Served here, a site moves to Percorso by setting ``cdnURL``
to Percorso's address, as with other Segment-compatible collectors. The document:

* points the ``Segment.io`` integration at this API: ``apiHost`` and ``protocol`` from
  ``PERCORSO_PUBLIC_URL`` when it is set, else from the address the browser used (behind a
  trusted proxy, its ``X-Forwarded-Proto`` and ``X-Forwarded-Host``);
* names no other destination and no remote plugin, so the page loads nothing from Segment;
* turns the library's usage metrics off (``metrics.sampleRate`` 0): they would be posted to
  ``api.segment.io/v1/m``.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request

from app.errors import InvalidRequest
from app.ingest.client import TrustedProxies

# Browsers fetch the document on every page load; it changes only with the deployment.
MAX_AGE_S = 300
Protocol = Literal["http", "https"]
_PROTOCOLS: dict[str, Protocol] = {"http": "http", "https": "https"}
# A host as a browser sends it: a name or IPv4 address, or an IPv6 one in brackets, and a
# port.
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")


class SegmentIo(BaseModel):
    """Where analytics.js sends its calls: ``{protocol}://{apiHost}/t`` and the other short
    paths."""

    apiKey: str = Field(description="The write key, which analytics.js puts in every call.")
    apiHost: str = Field(description="Host, port and path of the tracking API.")
    protocol: Protocol
    unbundledIntegrations: list[str] = []
    addBundledMetadata: bool = True
    maybeBundledConfigIds: dict[str, list[str]] = {}
    versionSettings: dict[str, Any] = {"componentTypes": []}


class Metrics(BaseModel):
    sampleRate: float = Field(0, description="0: the library sends no usage metrics anywhere.")


class BrowserSettings(BaseModel):
    """The source settings document of Segment's CDN, as analytics.js reads it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "integrations": {
                        "Segment.io": {
                            "apiKey": "pw_…",
                            "apiHost": "percorso.example.com/v1",
                            "protocol": "https",
                            "unbundledIntegrations": [],
                            "addBundledMetadata": True,
                            "maybeBundledConfigIds": {},
                            "versionSettings": {"componentTypes": []},
                        }
                    },
                    "plan": {"track": {"__default": {"enabled": True, "integrations": {}}}},
                    "metrics": {"sampleRate": 0},
                    "remotePlugins": [],
                }
            ]
        }
    )

    integrations: dict[Literal["Segment.io"], SegmentIo]
    plan: dict[str, Any]
    edgeFunction: dict[str, Any] = {}
    analyticsNextEnabled: bool = True
    middlewareSettings: dict[str, Any] = {}
    enabledMiddleware: dict[str, bool] = {}
    metrics: Metrics = Metrics()
    legacyVideoPluginsEnabled: bool = False
    remotePlugins: list[Any] = []


def document(write_key: str, protocol: Protocol, api_host: str) -> dict[str, Any]:
    """The settings of the source of ``write_key`` for a tracking API at
    ``{protocol}://{api_host}``."""
    segment_io = SegmentIo(apiKey=write_key, apiHost=api_host, protocol=protocol)
    every_event = {"__default": {"enabled": True, "integrations": {}}}
    settings = BrowserSettings(
        integrations={"Segment.io": segment_io},
        plan={"track": every_event, "identify": every_event, "group": every_event},
    )
    return settings.model_dump()


def tracking_api(
    request: Request, public_url: str | None, proxies: TrustedProxies
) -> tuple[Protocol, str]:
    """``(protocol, apiHost)`` of the tracking API as browsers reach it. Raises
    :class:`InvalidRequest` for a ``Host`` header that names no host."""
    if public_url:  # an http(s) URL with a host (Settings checks)
        parts = urlsplit(public_url)
        return _PROTOCOLS[parts.scheme.lower()], f"{parts.netloc}{parts.path.rstrip('/')}/v1"
    protocol = _PROTOCOLS.get(request.url.scheme, "http")
    host = request.headers.get("host", "")
    peer = request.client.host if request.client else None
    if peer is not None and proxies.trusts(peer):
        protocol = _PROTOCOLS.get(_first(request.headers.get("x-forwarded-proto")), protocol)
        host = _first(request.headers.get("x-forwarded-host")) or host
    if not _HOST.fullmatch(host):
        raise InvalidRequest("the Host header names no host; set PERCORSO_PUBLIC_URL")
    return protocol, f"{host}/v1"


def _first(header: str | None) -> str:
    """The first value of a comma-separated forwarding header (the proxy nearest the
    client), or ``""``."""
    return header.split(",", 1)[0].strip().lower() if header else ""
