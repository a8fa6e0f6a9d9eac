"""The tracking API: Segment-compatible calls, answered only after the broker's ack."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from app.auth.dependencies import authenticator, presented_write_key
from app.auth.service import SourceInfo
from app.errors import InvalidRequest, PayloadTooLarge
from app.identity.identifiers import IdentityConfig
from app.ingest import service
from app.ingest.body import read_json
from app.ingest.publisher import Publisher
from app.ingest.schemas import (
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    BatchRequest,
    FieldError,
    IngestResponse,
    Rejection,
    SegmentMessage,
)
from app.ingest.service import EventRejected
from app.kit.metrics import EVENTS_ACCEPTED, EVENTS_REJECTED
from app.touchpoint import Touchpoint

router = APIRouter(prefix="/v1", tags=["tracking"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Invalid JSON, a missing field, or a size limit exceeded (problem+json)."},
    401: {"description": "Missing or unknown write key (problem+json)."},
    503: {"description": "The broker did not acknowledge; retry after `Retry-After` seconds."},
}


def _publisher(request: Request) -> Publisher:
    publisher: Publisher = request.state.publisher
    return publisher


def _identity(request: Request) -> IdentityConfig:
    config: IdentityConfig = request.state.identity_config
    return config


PublisherDep = Annotated[Publisher, Depends(_publisher)]
IdentityDep = Annotated[IdentityConfig, Depends(_identity)]


def _request_context(request: Request) -> dict[str, Any]:
    context: dict[str, Any] = {}
    if request.client:
        context["ip"] = request.client.host
    agent = request.headers.get("user-agent")
    if agent:
        context["userAgent"] = agent[:512]
    return context


async def _source(request: Request, raw: Any) -> SourceInfo:
    key = presented_write_key(request)
    if key is None and isinstance(raw, dict) and isinstance(raw.get("writeKey"), str):
        key = raw["writeKey"]
    return await authenticator(request).source(key)


async def _accept(
    publisher: Publisher, touchpoints: list[Touchpoint], rejected: list[Rejection]
) -> IngestResponse:
    if not touchpoints:
        EVENTS_REJECTED.inc(len(rejected))
        raise InvalidRequest(
            "no event in the request was valid; nothing was stored",
            errors=[r.model_dump() for r in rejected],
        )
    await publisher.publish([(service.partition_key(tp), tp.to_bytes()) for tp in touchpoints])
    EVENTS_ACCEPTED.inc(len(touchpoints))
    EVENTS_REJECTED.inc(len(rejected))
    return IngestResponse(accepted=len(touchpoints), rejected=rejected)


def _single(call_type: str, summary: str) -> Any:
    async def endpoint(
        request: Request, publisher: PublisherDep, identity: IdentityDep
    ) -> IngestResponse:
        raw = await read_json(request, MAX_EVENT_BYTES)
        source = await _source(request, raw)
        received_at = datetime.now(UTC)
        try:
            msg = service.validate_message(raw, call_type)
            tp = service.build_touchpoint(
                msg,
                source=source,
                received_at=received_at,
                identity=identity,
                request_context=_request_context(request),
            )
        except EventRejected as exc:
            return await _accept(publisher, [], [service.rejection(0, raw, exc.errors)])
        return await _accept(publisher, [tp], [])

    endpoint.__name__ = call_type
    endpoint.__doc__ = summary
    return endpoint


_CALLS = {
    "track": "Record an action a customer took (`event` names it).",
    "page": "Record a web page view.",
    "screen": "Record a mobile app screen view.",
    "identify": "Tie a customer to their traits (email, phone, name…).",
    "group": "Associate a customer with a group (company, household).",
    "alias": "Declare that `previousId` and `userId` are the same person.",
}

for _call, _summary in _CALLS.items():
    router.add_api_route(
        f"/{_call}",
        _single(_call, _summary),
        methods=["POST"],
        response_model=IngestResponse,
        summary=_summary,
        responses=_ERRORS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": SegmentMessage.model_json_schema()}},
            }
        },
    )


@router.post(
    "/batch",
    response_model=IngestResponse,
    responses=_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": BatchRequest.model_json_schema()}},
        }
    },
)
async def batch(request: Request, publisher: PublisherDep, identity: IdentityDep) -> IngestResponse:
    """Send up to 2,500 calls (500 KB) at once. Valid events are accepted even when others
    are rejected; the answer lists each rejection with its reasons."""
    raw = await read_json(request, MAX_BATCH_BYTES)
    source = await _source(request, raw)
    if not isinstance(raw, dict) or not isinstance(raw.get("batch"), list):
        raise InvalidRequest("a batch is a JSON object with a `batch` array")
    items: list[Any] = raw["batch"]
    if len(items) > MAX_BATCH_EVENTS:
        raise PayloadTooLarge(f"a batch holds at most {MAX_BATCH_EVENTS} events, not {len(items)}")
    try:
        envelope = BatchRequest.model_validate({**raw, "batch": []})
    except ValueError as exc:
        raise InvalidRequest(f"invalid batch envelope: {exc}") from None
    received_at = datetime.now(UTC)
    request_context = _request_context(request)
    touchpoints: list[Touchpoint] = []
    rejected: list[Rejection] = []
    for index, item in enumerate(items):
        try:
            if not service.event_size_ok(item):
                raise EventRejected(
                    [
                        FieldError(
                            field=None, message=f"an event is at most {MAX_EVENT_BYTES // 1024} KB"
                        )
                    ]
                )
            msg = service.validate_message(item, None)
            touchpoints.append(
                service.build_touchpoint(
                    msg,
                    source=source,
                    received_at=received_at,
                    identity=identity,
                    request_context=request_context,
                    batch_context=envelope.context,
                    sent_at=envelope.sentAt,
                )
            )
        except EventRejected as exc:
            rejected.append(service.rejection(index, item, exc.errors))
    return await _accept(publisher, touchpoints, rejected)
