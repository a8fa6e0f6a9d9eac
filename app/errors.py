"""Domain errors and their rendering as ``application/problem+json`` (RFC 9457).

Services raise :class:`ProblemError` subclasses; one set of handlers renders them. Nothing
below the endpoints knows about HTTP beyond the status a domain error carries. A database
that cannot be reached is a 503 wherever it shows (:func:`database_unavailable`), and any
other error a 500, each as problem+json.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from app import openapi

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://percorso.dev/problems/"


class Problem(BaseModel):
    """The body of every error answer (4xx and 5xx), as `application/problem+json` (RFC 9457)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(
        description="What went wrong, as a stable URI: `https://percorso.dev/problems/<slug>`.",
        examples=[TYPE_BASE + "invalid-request"],
    )
    title: str = Field(description="A short summary of the type.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="This occurrence, for humans.")
    code: str = Field(
        description="The type's slug, for the tracking libraries that read `code` and "
        "`message` from an error answer (RudderStack's Python library, and Segment's up to "
        "2.3, retry a refusal without them as if the network had failed).",
        examples=["invalid-request"],
    )
    message: str = Field(description="`detail` again, for those libraries.")
    instance: str | None = Field(None, description="The request's path.")
    errors: list[dict[str, Any]] | None = Field(
        None,
        description="What failed: a parameter's `field` and `message`, or for a request of "
        "several events or contacts, each refused one's `index` and its `errors`.",
    )


class ProblemError(Exception):
    """An error a client can act on. ``type`` is a stable slug, ``detail`` is for humans."""

    status: int = 400
    type: str = "bad-request"
    title: str = "Bad request"

    def __init__(
        self,
        detail: str,
        *,
        errors: Sequence[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors) if errors else None
        self.headers = headers or {}
        self.extra = extra


class InvalidRequest(ProblemError):
    status, type, title = 400, "invalid-request", "The request is not valid"


class InvalidParameters(ProblemError):
    """Parameters that are well-formed but not valid here (a stage the journey model does not
    have): answered as FastAPI's own validation errors are, 422 with the failing fields."""

    status, type, title = 422, "validation-failed", "The request parameters are not valid"


class PayloadTooLarge(ProblemError):
    status, type, title = 400, "payload-too-large", "The request is too large"


class Unauthorized(ProblemError):
    status, type, title = 401, "unauthorized", "Missing or invalid credentials"


class Forbidden(ProblemError):
    status, type, title = 403, "forbidden", "The credential does not allow this"


class NotFound(ProblemError):
    status, type, title = 404, "not-found", "Not found"


class UnsupportedMediaType(ProblemError):
    status, type, title = 415, "unsupported-media-type", "Unsupported media type"


class ServiceUnavailable(ProblemError):
    status, type, title = 503, "service-unavailable", "Temporarily unavailable"


class QueryTimeout(ProblemError):
    """A read ran longer than its statement timeout and was cancelled by the database."""

    status, type, title = 503, "query-timeout", "The query took too long"


# SQLSTATEs of a connection the database refused or lost, which asyncpg's errors carry and
# SQLAlchemy's wrappers of them too: a connection exception (class 08, asyncpg's
# PostgresConnectionError), too many clients, no such database, and a server shutting down,
# crashed or starting up (CannotConnectNowError).
_UNREACHABLE_SQLSTATES = ("08", "53300", "3D000", "57P01", "57P02", "57P03")


def database_unavailable(exc: BaseException) -> ServiceUnavailable | None:
    """The 503 to answer for ``exc`` if it says the database could not be reached, refused
    the connection or lost it, whether SQLAlchemy wrapped it or not; None for any other
    error, which stays what it is (a client's mistake, or a bug)."""
    if not _unreachable(exc):
        return None
    return ServiceUnavailable(
        "The database could not be reached; retry.", headers={"Retry-After": "1"}
    )


def as_problem(exc: Exception) -> ProblemError | None:
    """The problem the handlers answer for ``exc`` short of a 500: ``exc`` itself, or the
    503 of a database that could not be reached; None for anything else."""
    return exc if isinstance(exc, ProblemError) else database_unavailable(exc)


def _unreachable(exc: BaseException | None) -> bool:
    if isinstance(exc, DBAPIError):
        # The pool does not ping connections before use (app.db): a connection lost since
        # (e.g. a database restart) fails one request, and the pool replaces every
        # connection older than the failure.
        return exc.connection_invalidated or _unreachable(exc.orig)
    if isinstance(exc, OSError):
        # Connecting raises these, which SQLAlchemy does not wrap: refused, reset, timed
        # out, no such host, and asyncio's plain OSError for an unreachable network or for
        # several addresses that all failed. A file's or a process's OSError is a bug.
        network = (ConnectionError, TimeoutError, socket.gaierror)
        return type(exc) is OSError or isinstance(exc, network)
    state = getattr(exc, "sqlstate", None)
    return isinstance(state, str) and state.startswith(_UNREACHABLE_SQLSTATES)


def problem_response(
    status: int,
    type_: str,
    title: str,
    detail: str,
    *,
    instance: str | None = None,
    errors: Sequence[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    body = problem_document(
        status, type_, title, detail, instance=instance, errors=errors, extra=extra
    )
    return Response(body, status, headers=headers, media_type=PROBLEM_JSON)


def problem_document(
    status: int,
    type_: str,
    title: str,
    detail: str,
    *,
    instance: str | None = None,
    errors: Sequence[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> bytes:
    """The problem+json body of an error answer."""
    body: dict[str, Any] = {
        "type": TYPE_BASE + type_,
        "title": title,
        "status": status,
        "detail": detail,
        # Extension members (RFC 9457) that tracking libraries read: see Problem.code.
        "code": type_,
        "message": detail,
    }
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = list(errors)
    if extra:
        body.update(extra)
    return orjson.dumps(body)


def validation_errors(raw: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic/FastAPI errors as ``[{"field": "a.b", "message": ...}]`` without echoing input."""
    out = []
    for err in raw:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        out.append({"field": ".".join(loc) or None, "message": err.get("msg", "invalid")})
    return out


def install_error_handlers(app: FastAPI) -> None:
    """Render every error as problem+json, and document it so: each error answer of the
    OpenAPI document has the :class:`Problem` schema, as ``application/problem+json``."""

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProblemError)
        return problem_response(
            exc.status,
            exc.type,
            exc.title,
            exc.detail,
            instance=request.url.path,
            errors=exc.errors,
            headers=exc.headers,
            extra=exc.extra,
        )

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return problem_response(
            422,
            "validation-failed",
            "The request parameters are not valid",
            "One or more parameters failed validation; see errors.",
            instance=request.url.path,
            errors=validation_errors(exc.errors()),
        )

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return problem_response(
            exc.status_code,
            slug,
            str(exc.detail),
            str(exc.detail),
            instance=request.url.path,
            headers=dict(exc.headers or {}),
        )

    async def on_database(request: Request, exc: Exception) -> Response:
        problem = database_unavailable(exc)
        if problem is None:
            raise exc
        cause = exc.orig if isinstance(exc, DBAPIError) else exc
        # The route's path, not the request's, which may hold a secret: the write key is
        # the settings document's path (/v1/projects/{write_key}/settings). Requests served
        # ahead of the router (app.kit.direct) have no route, and paths without one.
        where = getattr(request.scope.get("route"), "path", request.url.path)
        log.warning("%s answered 503: the database could not be reached: %r", where, cause)
        return await on_problem(request, problem)

    async def on_disconnect(request: Request, exc: Exception) -> Response:
        # The client went, or was cut off for a body that stopped arriving (answered 408 by
        # app.kit.http_protocol), before the endpoint had read its body: a client's doing,
        # not an error to log with its traceback. No one is left to read an answer.
        return Response(status_code=400)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        # Run by Starlette's ServerErrorMiddleware, which raises the error again once this
        # answered: the server logs it with its traceback, once (and a test client raises it).
        return problem_response(
            500,
            "internal-error",
            "Internal server error",
            "The request could not be answered; the error was logged.",
            instance=request.url.path,
        )

    app.add_exception_handler(ProblemError, on_problem)
    # The errors a database that cannot be reached raises, through SQLAlchemy or not.
    for raised in (DBAPIError, OSError, asyncpg.PostgresError):
        app.add_exception_handler(raised, on_database)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(ClientDisconnect, on_disconnect)
    app.add_exception_handler(Exception, on_unexpected)
    openapi.amend(app, _document_problems)


# FastAPI documents its 422 as a JSON body of these schemas; the answer is a Problem.
_FASTAPI_ERRORS = ("HTTPValidationError", "ValidationError")
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def _document_problems(document: dict[str, Any]) -> dict[str, Any]:
    for operations in document["paths"].values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                if status[0] in "45":
                    response["content"] = {PROBLEM_JSON: {"schema": _PROBLEM_REF}}
                    if status == "422" and response["description"] == "Validation Error":
                        response["description"] = "A parameter is not valid (see `errors`)."
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in _FASTAPI_ERRORS:
        schemas.pop(name, None)
    schemas["Problem"] = Problem.model_json_schema()
    return document
