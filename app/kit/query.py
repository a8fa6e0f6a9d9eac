"""Query parameters as one pydantic model, read from the query string in one pass.

FastAPI reads each declared query parameter on its own: per request and parameter, it
inspects the annotation again (is it a list?), looks for the parameter's aliases and runs its
own validator. For the timeline's seven parameters that was about a fifth of the API's CPU
per page (in process, without HTTP: 1,100 vs 870 µs a request). A :class:`QueryModel`'s
fields are the parameters instead: :meth:`QueryModel.of` reads them and validates them in one
call, and :func:`parameters` documents them, from the same model, for the route's
``openapi_extra``::

    class Page(QueryModel):
        limit: int = Field(50, ge=1, le=500)
        channel: list[Channel] | None = None

    @router.get("/things", openapi_extra=parameters(Page))
    async def things(page: Annotated[Page, Depends(Page.of)]) -> ...: ...

As with FastAPI: a list field takes every occurrence of its parameter, any other field the
last one; unknown parameters are ignored; invalid values raise
``fastapi.exceptions.RequestValidationError`` located at ``("query", name)`` (a 422
problem, `app.errors`).
"""

from __future__ import annotations

import types
import typing
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Self

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from app.openapi import inline


class QueryModel(BaseModel):
    """Subclass it with one field per query parameter."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    # Names of the fields that take every occurrence of their parameter.
    _lists: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._lists = frozenset(
            name for name, field in cls.model_fields.items() if _is_list(field.annotation)
        )

    @classmethod
    async def of(cls, request: Request) -> Self:
        """The request's query parameters (a FastAPI dependency; a coroutine, as FastAPI
        would run a plain function in a worker thread)."""
        query = request.query_params
        raw: dict[str, Any] = {}
        for name in cls.model_fields:
            if name in cls._lists:
                values = query.getlist(name)
                if values:
                    raw[name] = values
            elif (value := query.get(name)) is not None:
                raw[name] = value
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            raise RequestValidationError(
                [{**error, "loc": ("query", *error["loc"])} for error in errors]
            ) from None


def utc_instant(value: datetime) -> datetime:
    """The instant in UTC; a time without an offset is one in UTC. asyncpg converts a time
    to UTC as it sends it, and at the ends of Python's range (year 1 or 9999 with an offset)
    that overflows: such a time is refused here, not by a failed query."""
    try:
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:
        raise ValueError("a time must fall within years 1 to 9999 in UTC") from None


# A time parameter (`since`, `until`): refused with a 422 where PostgreSQL could not be sent it.
Instant = Annotated[datetime, AfterValidator(utc_instant)]


def storable(what: str) -> AfterValidator:
    """The check of a text parameter compared with stored text: PostgreSQL's text cannot
    hold a NUL character (the query would fail), so one is a 422 naming ``what``."""

    def check(value: str) -> str:
        if "\x00" in value:
            raise ValueError(f"no {what} holds a NUL character")
        return value

    return AfterValidator(check)


def parameters(model: type[QueryModel]) -> dict[str, Any]:
    """The OpenAPI ``parameters`` of ``model``'s fields, as a route's ``openapi_extra``
    (added after those FastAPI documents itself, e.g. path parameters)."""
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    documented = []
    for name, field in model.model_fields.items():
        entry: dict[str, Any] = {
            "in": "query",
            "name": name,
            "required": field.is_required(),
            "schema": inline(schema["properties"][name], defs),
        }
        if field.description:
            entry["description"] = entry["schema"].pop("description", field.description)
        documented.append(entry)
    return {"parameters": documented}


def _is_list(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_list(arg) for arg in typing.get_args(annotation))
    return origin is list
