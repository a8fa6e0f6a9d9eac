"""The tracking API: Segment-compatible calls, answered only once the events are safe.

Every path of Segment's HTTP Tracking API is here, with the short aliases analytics.js
uses (``/v1/t`` for ``/v1/track``…, ``/v1/b`` for ``/v1/batch``) and the pixel API, and
RudderStack's own paths (``sendBeacon`` batches, the pixel API by its path). Order
of checks for a request: body (size, encoding, JSON) → write key → origin → rate limit →
each event. An answer of 200 means the accepted events are on the broker, or committed to
the spool while the broker does not acknowledge (``app.spool``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, get_args

from fastapi import APIRouter, Depends, Path, Request, Response

from app.auth.dependencies import WRITE_KEY_SECURITY, authenticator, presented_write_key
from app.auth.service import SourceInfo
from app.config import Settings
from app.errors import InvalidRequest, PayloadTooLarge, Unauthorized, as_problem
from app.identity.identifiers import IdentityConfig
from app.ingest import envelope, pixel, service
from app.ingest.body import parse_json, read_body, read_json
from app.ingest.browser import BROWSER_SETTINGS_PREFIXES
from app.ingest.client import TrustedProxies, request_context
from app.ingest.cors import refuse_origin
from app.ingest.examples import BATCH_EXAMPLES, CALL_EXAMPLES
from app.ingest.publisher import Publisher
from app.ingest.ratelimit import RateLimiter
from app.ingest.schemas import (
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    NEEDS,
    BatchRequest,
    CallType,
    IngestResponse,
    Rejection,
    SegmentMessage,
)
from app.kit.direct import Endpoint, exact
from app.kit.metrics import EVENTS_ACCEPTED, EVENTS_REJECTED
from app.kit.responses import json_response

router = APIRouter(prefix="/v1", tags=["tracking"])
# RudderStack's paths outside /v1: sendBeacon batches and the pixel API.
rudderstack_router = APIRouter(tags=["tracking"])
# RudderStack's JavaScript SDK posts batches with `navigator.sendBeacon` (its `useBeacon`
# option), which can set no header: the write key comes in the query, on this POST path
# alone (anywhere else, a key in a URL would only end up in logs; an image's GET, the pixel
# API, has nowhere else to carry it).
BEACON_BATCH = "/beacon/v1/batch"
# RudderStack's pixel API: Segment's (/v1/pixel/<type>) by another path.
RUDDERSTACK_PIXEL = "/pixel/v1/"

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Invalid JSON, no valid event, or a size limit exceeded."},
    401: {"description": "Missing or unknown write key."},
    403: {
        "description": "The browser origin is not allowed for this source, or the source's"
        " stored allowed origins are invalid (every browser is refused until they are fixed)."
    },
    415: {"description": "A body that is neither JSON nor text/plain, or not gzip."},
    429: {"description": "The source's rate limit; retry after `Retry-After` seconds."},
    503: {
        "description": "The broker did not acknowledge and the events could not be spooled"
        " (spool off or full, or the database failing too), or the database could not be"
        " reached; retry after `Retry-After` seconds."
    },
}

SHORT_PATHS = {
    "track": "t",
    "page": "p",
    "screen": "s",
    "identify": "i",
    "group": "g",
    "alias": "a",
}


def publisher_of(request: Request) -> Publisher:
    publisher: Publisher = request.state.publisher
    return publisher


def identity_of(request: Request) -> IdentityConfig:
    config: IdentityConfig = request.state.identity_config
    return config


def sender_context(request: Request) -> dict[str, Any]:
    """The client IP (behind trusted proxies) and user agent of the request."""
    proxies: TrustedProxies = request.state.trusted_proxies
    return request_context(request, proxies)


def admit(request: Request, source: SourceInfo, cost: int, *, check_origin: bool = True) -> None:
    """Refuse a browser origin the source does not allow (403), or a request beyond the
    source's rate (429 with Retry-After), by the source's policy read when it was loaded."""
    policy = source.policy
    if check_origin:
        refuse_origin(request, policy)
    limiter: RateLimiter = request.state.rate_limiter
    limiter.check(source.id, cost, policy.rate_limit_per_s)


# Async wrappers: FastAPI runs a plain `def` dependency in its thread pool, a hand-off that
# costs more than the lookup itself on every request.
async def _publisher_dep(request: Request) -> Publisher:
    return publisher_of(request)


async def _identity_dep(request: Request) -> IdentityConfig:
    return identity_of(request)


PublisherDep = Annotated[Publisher, Depends(_publisher_dep)]
IdentityDep = Annotated[IdentityConfig, Depends(_identity_dep)]


async def _source(request: Request, raw: Any) -> SourceInfo:
    key = presented_write_key(request)
    if key is None and isinstance(raw, dict) and isinstance(raw.get("writeKey"), str):
        key = raw["writeKey"]
    if key is None and request.scope["path"] == BEACON_BATCH:
        key = request.query_params.get("writeKey")
    return await authenticator(request).source(key)


async def accept(
    publisher: Publisher, messages: list[tuple[bytes, bytes]], rejected: list[Rejection]
) -> Response:
    """Publish the accepted events (``(key, touchpoint bytes)`` pairs) and answer with the
    :class:`IngestResponse`; 400 listing the reasons when none was."""
    if not messages:
        EVENTS_REJECTED.inc(len(rejected))
        raise InvalidRequest(
            "no event in the request was valid; nothing was stored",
            errors=[r.model_dump() for r in rejected],
        )
    await publisher.publish(messages)
    EVENTS_ACCEPTED.inc(len(messages))
    EVENTS_REJECTED.inc(len(rejected))
    return accepted(len(messages), rejected)


def accepted(count: int, rejected: list[Rejection] | None = None) -> Response:
    """The :class:`IngestResponse` body, written as FastAPI would write the model but
    without validating it again (the routes keep it as their response model)."""
    return json_response(
        {"success": True, "accepted": count, "rejected": [r.model_dump() for r in rejected or ()]}
    )


async def _ingest_one(
    request: Request, raw: Any, call_type: str, *, check_origin: bool = True
) -> Response:
    source = await _source(request, raw)
    admit(request, source, 1, check_origin=check_origin)
    messages, rejected = service.build_messages(
        [raw],
        call_type=call_type,
        source=source,
        received_at=datetime.now(UTC),
        identity=identity_of(request),
        request_context=sender_context(request),
    )
    return await accept(publisher_of(request), messages, rejected)


def _single(call_type: str, summary: str) -> Any:
    # No dependencies and no response model at work, as on /v1/batch.
    async def endpoint(request: Request) -> Response:
        raw = await read_json(request, MAX_EVENT_BYTES)
        return await _ingest_one(request, raw, call_type)

    endpoint.__name__ = call_type
    endpoint.__doc__ = (
        summary + f"\n\nAt most {MAX_EVENT_BYTES // 1024} KB; JSON or text/plain, optionally gzip."
    )
    return endpoint


_CALLS = {
    "track": "Record an action a customer took (`event` names it).",
    "page": "Record a web page view.",
    "screen": "Record a mobile app screen view.",
    "identify": "Tie a customer to their traits (email, phone, name…).",
    "group": "Associate a customer with a group (company, household).",
    "alias": "Declare that `previousId` and `userId` are the same person.",
}


# In the OpenAPI document, what a call must hold: present, and not blank.
_ID: dict[str, Any] = {"anyOf": [{"type": "string", "pattern": r"\S"}, {"type": "integer"}]}
_PRESENT: dict[str, dict[str, Any]] = {
    "userId": _ID,
    "anonymousId": _ID,
    "groupId": _ID,
    "previousId": _ID,
    "event": {"type": "string", "pattern": r"\S"},
}


def _needing(fields: tuple[str, ...]) -> dict[str, Any]:
    return {"required": list(fields), "properties": {f: _PRESENT[f] for f in fields}}


def _call_schema(call_type: str | None) -> dict[str, Any]:
    """A call's schema for the document: :class:`SegmentMessage`'s, with what a call of
    ``call_type`` needs (None: a batch item, which needs a ``type`` and what that type
    needs). Documentation only: the calls are checked by ``missing_field``."""
    schema = SegmentMessage.model_json_schema()
    rules: list[dict[str, Any]] = [{"anyOf": [_needing(("userId",)), _needing(("anonymousId",))]}]
    if call_type is None:
        schema["required"] = ["type"]
        schema["properties"]["type"] = {"enum": list(get_args(CallType))}
        rules += [
            {"if": {"properties": {"type": {"const": kind}}}, "then": _needing(fields)}
            for kind, fields in NEEDS.items()
        ]
    else:
        schema["properties"]["type"] = {"description": "Ignored: the path is the call's type."}
        if call_type in NEEDS:
            rules.append(_needing(NEEDS[call_type]))
    schema["allOf"] = rules
    return schema


def _batch_schema() -> dict[str, Any]:
    schema = BatchRequest.model_json_schema()
    schema["properties"]["batch"]["items"] = _call_schema(None)
    return schema


def _operation(schema: dict[str, Any], examples: dict[str, Any]) -> dict[str, Any]:
    """A tracking call's body and credentials, for the OpenAPI document."""
    content = {"schema": schema, "examples": examples}
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": content, "text/plain": content},
        },
        "security": WRITE_KEY_SECURITY,
    }


async def batch(request: Request) -> Response:
    """Send up to 2,500 calls (32 KB each) at once, 4,224 KB in all once unzipped: the
    4 MiB of events RudderStack's Python SDK batches, and the event that reached it. Valid
    events are accepted even when others are rejected; the answer lists each rejection with
    its reasons, and `success` is true when any event was accepted."""
    # No dependencies and no response model at work on the hottest path: each costs tens
    # of microseconds a request, as much as a call's checks.
    publisher, identity = publisher_of(request), identity_of(request)
    body = await read_body(request, MAX_BATCH_BYTES)
    settings: Settings = request.state.settings
    whole = envelope.decode_batch(body) if settings.ingest_batch_envelopes else None
    raw = whole.head() if whole is not None else parse_json(body)
    source = await _source(request, raw)
    if not isinstance(raw, dict) or not isinstance(raw.get("batch"), list):
        raise InvalidRequest("a batch is a JSON object with a `batch` array")
    items: list[Any] = raw["batch"]
    if len(items) > MAX_BATCH_EVENTS:
        raise PayloadTooLarge(f"a batch holds at most {MAX_BATCH_EVENTS} events, not {len(items)}")
    try:
        head = BatchRequest.model_validate({**raw, "batch": []})
    except ValueError as exc:
        raise InvalidRequest(f"invalid batch envelope: {exc}") from None
    # Every event gets the batch's context: one that cannot be stored refuses them all. It
    # is measured where it lands, one level down in each event.
    if head.context and (problem := service.unstorable({"context": head.context})) is not None:
        raise InvalidRequest(
            f"the batch's context cannot be stored: {problem.message}",
            errors=[{"field": problem.field or "context", "message": problem.message}],
        )
    admit(request, source, max(len(items), 1))
    arrival: service.Arrival = {
        "source": source,
        "received_at": datetime.now(UTC),
        "identity": identity,
        "request_context": sender_context(request),
        "batch_context": head.context,
        "sent_at": head.sentAt,
    }
    if whole is not None:
        admitted = envelope.admitted(body, whole.batch, arrival)
        if admitted is not None:
            await publisher.publish_placed(
                lambda partitions: envelope.seal(*admitted, partitions, arrival)
            )
            EVENTS_ACCEPTED.inc(len(items))
            return accepted(len(items))
        items = parse_json(body)["batch"]  # the per-event path reads plain JSON values
    messages, rejected = service.build_messages(items, call_type=None, **arrival)
    return await accept(publisher, messages, rejected)


# The tracking calls' POST routes by full path, for `app.kit.direct.DirectRoutes`: their
# endpoints take the bare request and return a response, so FastAPI's routing adds nothing.
DIRECT_ROUTES: dict[str, Endpoint] = {}
direct_route = exact("POST", DIRECT_ROUTES)
# The batch paths' one document entry (FastAPI copies it into each operation it documents).
_BATCH_OPERATION = _operation(_batch_schema(), BATCH_EXAMPLES)

for _path, _label in (
    ("batch", "Send many calls at once."),
    ("b", "Short path of /v1/batch."),
    ("import", "/v1/batch by the name Segment's classic mobile libraries post to."),
):
    DIRECT_ROUTES[f"{router.prefix}/{_path}"] = batch
    router.add_api_route(
        f"/{_path}",
        batch,
        methods=["POST"],
        response_model=IngestResponse,
        summary=_label,
        responses=ERRORS,
        openapi_extra=_BATCH_OPERATION,
    )


DIRECT_ROUTES[BEACON_BATCH] = batch
rudderstack_router.add_api_route(
    BEACON_BATCH,
    batch,
    methods=["POST"],
    response_model=IngestResponse,
    summary="/v1/batch as RudderStack's SDK sends it with sendBeacon.",
    responses=ERRORS,
    openapi_extra={
        **_BATCH_OPERATION,
        "parameters": [
            {
                "name": "writeKey",
                "in": "query",
                "required": False,
                "description": "The write key, where the request carries none otherwise.",
                "schema": {"type": "string"},
            }
        ],
    },
)


# After /v1/batch: routes are matched in order, and the batch path is the busiest.
for _call, _summary in _CALLS.items():
    _endpoint = _single(_call, _summary)
    for _path, _label in ((_call, _summary), (SHORT_PATHS[_call], f"Short path of /v1/{_call}.")):
        DIRECT_ROUTES[f"{router.prefix}/{_path}"] = _endpoint
        router.add_api_route(
            f"/{_path}",
            _endpoint,
            methods=["POST"],
            response_model=IngestResponse,
            summary=_label,
            responses=ERRORS,
            openapi_extra=_operation(_call_schema(_call), CALL_EXAMPLES[_call]),
        )


# The pixel API's document entry, for each of its paths.
_PIXEL_OPERATION: dict[str, Any] = {
    "response_class": Response,
    "responses": {
        200: {
            "description": "Always a 1x1 transparent GIF, even when the call was refused; "
            "`X-Percorso-Verdict` says `accepted` or why not.",
            "content": {"image/gif": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
    "openapi_extra": {
        "parameters": [
            {
                "name": "data",
                "in": "query",
                "required": False,
                "description": "The call as base64-encoded JSON, including `writeKey`. "
                "Without it, the call's fields are read from the query parameters "
                "(dotted names for nested fields: `properties.subject=…`), `writeKey` "
                "among them, as RudderStack's pixel API sends them.",
                "schema": {"type": "string"},
                "examples": {
                    "email-opened": {
                        "summary": '{"writeKey": "pw_…", "userId": "ada", "event": "Email Opened"}',
                        "value": "eyJ3cml0ZUtleSI6ICJwd18uLi4iLCAidXNlcklkIjogImFkYSIsICJldmVudCI6"
                        "ICJFbWFpbCBPcGVuZWQifQ",
                    }
                },
            }
        ]
    },
}


async def pixel_call(
    request: Request,
    call_type: Annotated[
        CallType, Path(description="track, page, screen, identify, group or alias")
    ],
) -> Response:
    """As Segment's pixel API: answers 200 with a GIF whatever happened, because an image
    tag can show nothing else; the verdict is in the `X-Percorso-Verdict` header."""
    verdict = "accepted"
    try:
        raw = pixel.decode(request.query_params.multi_items())
        if not isinstance(raw.get("writeKey"), str) and presented_write_key(request) is None:
            # An image tag sends no HTTP Basic credentials: the key travels in the call.
            raise Unauthorized(
                "put the source's write key in the call, as `writeKey` (in `data`, or as a"
                " query parameter)"
            )
        # An image request carries no Origin worth checking; the write key is the gate.
        await _ingest_one(request, raw, call_type, check_origin=False)
    except Exception as exc:
        problem = as_problem(exc)
        if problem is None:
            raise
        verdict = f"{problem.type}: {problem.detail}"[:300]
    headers = {**pixel.NO_CACHE, "X-Percorso-Verdict": _header_safe(verdict)}
    return Response(pixel.GIF, media_type="image/gif", headers=headers)


router.add_api_route(
    "/pixel/{call_type}",
    pixel_call,
    methods=["GET"],
    summary="Record a call from an image URL (the pixel API).",
    **_PIXEL_OPERATION,
)
rudderstack_router.add_api_route(
    RUDDERSTACK_PIXEL + "{call_type}",
    pixel_call,
    methods=["GET"],
    summary="The pixel API by RudderStack's path.",
    **_PIXEL_OPERATION,
)


def _header_safe(text: str) -> str:
    return text.encode("ascii", "replace").decode().replace("\r", " ").replace("\n", " ")


TRACKING_PREFIXES = tuple(
    f"/v1/{p}" for p in (*_CALLS, *SHORT_PATHS.values(), "batch", "b", "import", "pixel/")
)


def is_tracking_path(path: str) -> bool:
    """Paths under the browser CORS policy of :mod:`app.ingest.cors`."""
    return path in _EXACT_PATHS or path.startswith(_PREFIXES)


_EXACT_PATHS = frozenset(p for p in (*TRACKING_PREFIXES, BEACON_BATCH) if not p.endswith("/"))
_PREFIXES = ("/v1/pixel/", RUDDERSTACK_PIXEL, *BROWSER_SETTINGS_PREFIXES)
