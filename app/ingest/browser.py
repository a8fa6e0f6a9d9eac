"""The source settings browser libraries load before they send anything.

* ``@segment/analytics-next`` fetches ``{cdnURL}/v1/projects/{writeKey}/settings``
  (``cdnURL`` is Segment's CDN unless the site sets it) and sends its calls where that
  document's ``Segment.io`` integration says. Served here, a site moves to Percorso by
  setting ``cdnURL`` to Percorso's address, as with other Segment-compatible collectors.
  The document points the ``Segment.io`` integration at this API (``apiHost`` and
  ``protocol`` from ``PERCORSO_PUBLIC_URL`` when it is set, else from the address the
  browser used; behind a trusted proxy, its ``X-Forwarded-Proto`` and ``X-Forwarded-Host``),
  names no other destination and no remote plugin, and turns the library's usage metrics off
  (``metrics.sampleRate`` 0): they would be posted to ``api.segment.io/v1/m``.
* RudderStack's JavaScript SDK fetches ``{configUrl}/sourceConfig/?writeKey=…`` (its control
  plane unless the site sets ``configUrl``; the key also as HTTP Basic), its mobile SDKs
  ``{controlPlaneUrl}/sourceConfig?p=…`` (the key as HTTP Basic), and they send to the data
  plane URL they were given. The config names the source, no device-mode destination,
  and neither error nor metrics reporting to RudderStack.

Both answer only for an enabled source's write key (404 otherwise: a 401's Basic challenge
would make a browser ask for a password), under the source's allowed origins, and may be
cached for a few minutes.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from app.auth.dependencies import WRITE_KEY_SECURITY, authenticator, presented_write_key
from app.auth.service import SourceInfo
from app.config import Settings
from app.errors import InvalidRequest, NotFound, Unauthorized
from app.ingest.client import TrustedProxies
from app.ingest.cors import refuse_origin
from app.kit.responses import json_response

router = APIRouter(tags=["tracking"])

SEGMENT_SETTINGS = "/v1/projects/{write_key}/settings"
RUDDERSTACK_CONFIG = "/sourceConfig/"
# Paths of this module's routes, for the tracking API's CORS policy.
BROWSER_SETTINGS_PREFIXES = (SEGMENT_SETTINGS.split("{")[0], RUDDERSTACK_CONFIG.rstrip("/"))

# Browsers fetch the document on every page load; it changes only with the deployment.
MAX_AGE_S = 300
Protocol = Literal["http", "https"]
_PROTOCOLS: dict[str, Protocol] = {"http": "http", "https": "https"}
# Percorso's write keys are 38 characters.
_MAX_WRITE_KEY = 256
_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {
        "description": "The browser origin is not allowed for this source, or the source's"
        " stored allowed origins are invalid (every browser is refused until they are fixed)."
    },
    404: {"description": "No source has this write key."},
    503: {"description": "The database is unavailable."},
}
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
        return _PROTOCOLS[parts.scheme], f"{parts.netloc}{parts.path.rstrip('/')}/v1"
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


class RudderStackSource(BaseModel):
    id: str = Field(description="The source's id.")
    writeKey: str
    enabled: bool = True
    config: dict[str, Any] = Field(
        {}, description="Empty: no error or metrics reporting to RudderStack."
    )
    destinations: list[Any] = Field([], description="None: every call goes to the data plane.")


class RudderStackConfig(BaseModel):
    """The source configuration of RudderStack's control plane, as its SDKs read it."""

    isHosted: bool = False
    source: RudderStackSource


@router.get(
    SEGMENT_SETTINGS,
    summary="The source settings analytics.js loads (as from Segment's CDN).",
    response_model=BrowserSettings,
    responses={
        400: {"description": "A `Host` header that names no host (set `PUBLIC_URL`)."},
        **_ERRORS,
    },
)
async def segment_settings(
    request: Request,
    write_key: Annotated[str, Path(max_length=_MAX_WRITE_KEY, description="The write key.")],
) -> Response:
    """Point analytics.js (`@segment/analytics-next`) at Percorso by its `cdnURL` alone: it
    loads its source's settings from `{cdnURL}/v1/projects/{writeKey}/settings`, and these
    send its calls to this API, load nothing from Segment and turn its usage metrics off.
    Cacheable for a few minutes (publicly when `PUBLIC_URL` is set)."""
    await _browser_source(request, write_key)
    settings: Settings = request.state.settings
    protocol, api_host = tracking_api(request, settings.public_url, request.state.trusted_proxies)
    # Without a configured address, the document names the one this request used.
    return _cacheable(document(write_key, protocol, api_host), shared=bool(settings.public_url))


@router.get(
    RUDDERSTACK_CONFIG,
    summary="The source configuration RudderStack's SDKs load.",
    response_model=RudderStackConfig,
    responses=_ERRORS,
    openapi_extra={"security": WRITE_KEY_SECURITY},
)
# RudderStack's Android and iOS SDKs ask without the slash.
@router.get(RUDDERSTACK_CONFIG.rstrip("/"), include_in_schema=False)
async def rudderstack_config(
    request: Request,
    writeKey: Annotated[
        str | None, Query(max_length=_MAX_WRITE_KEY, description="The write key.")
    ] = None,
) -> Response:
    """Point RudderStack's SDKs at Percorso for their source configuration too: the
    JavaScript SDK's `configUrl`, the mobile SDKs' control plane URL, set to Percorso's
    address (and the data plane URL, as before). The write key comes as `writeKey` or as the
    HTTP Basic user name, as the SDKs send them (`/sourceConfig` without the slash too)."""
    source, key = await _browser_source(request, writeKey or presented_write_key(request))
    config = RudderStackConfig(source=RudderStackSource(id=str(source.id), writeKey=key))
    # A key sent as a header does not change the URL: no shared cache may keep the answer.
    return _cacheable(config.model_dump(), shared=writeKey is not None)


async def _browser_source(request: Request, write_key: str | None) -> tuple[SourceInfo, str]:
    """The enabled source of ``write_key``, and the key, if the request's origin may use it."""
    if not write_key:
        raise NotFound("send the source's write key")
    try:
        source = await authenticator(request).source(write_key)
    except Unauthorized:
        raise NotFound("no source has this write key") from None
    refuse_origin(request, source.policy)
    return source, write_key


def _cacheable(content: dict[str, Any], *, shared: bool) -> Response:
    response = json_response(content)
    response.headers["Cache-Control"] = f"{'public' if shared else 'private'}, max-age={MAX_AGE_S}"
    return response
