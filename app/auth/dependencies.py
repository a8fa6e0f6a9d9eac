"""FastAPI dependencies for credentials: ``ReadAccess``, ``AdminAccess`` and the write key of
a request."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPBearer
from starlette.requests import HTTPConnection

from app.auth.service import Authenticator, TokenInfo


def authenticator(request: HTTPConnection) -> Authenticator:
    auth: Authenticator = request.state.authenticator
    return auth


class _Token(HTTPBearer):
    """The request's API token, checked for ``scope``: one dependency, which OpenAPI
    documents as the ``HTTPBearer`` scheme. (As a token check depending on an
    ``HTTPBearer``, two levels of FastAPI's dependency solving cost about 110,000 more
    instructions a timeline page, 3 %.)"""

    def __init__(self, scope: str) -> None:
        # One scheme for both scopes: the operation's description says which it needs.
        super().__init__(
            scheme_name="HTTPBearer",
            description="An API token: a read token reads, an admin token also administers.",
            auto_error=False,
        )
        self.scope = scope

    async def __call__(self, request: HTTPConnection) -> TokenInfo:  # type: ignore[override]
        credentials = await super().__call__(request)
        secret = credentials.credentials if credentials else None
        return await authenticator(request).token(secret, self.scope)


read_token = _Token("read")
ReadAccess = Annotated[TokenInfo, Depends(read_token)]
# Administration: destructive acts, and bulk copies of a person's data (export).
admin_token = _Token("admin")
AdminAccess = Annotated[TokenInfo, Depends(admin_token)]


def presented_write_key(request: Request) -> str | None:
    """The write key from HTTP Basic (key as user name) or the ``X-Write-Key`` header."""
    header = request.headers.get("authorization")
    if header and header[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except ValueError:  # not base64 (binascii.Error), not ASCII, or not UTF-8
            return None
        user, _, _password = decoded.partition(":")
        return user or None
    return request.headers.get("x-write-key") or None


# The write key in the OpenAPI document, as `presented_write_key` reads it (no FastAPI
# dependency checks it: the tracking calls skip FastAPI's routing, app.kit.direct). Every
# operation that takes it also takes it in the request itself (the body's `writeKey`, or
# the URL's), hence the last, empty alternative.
WRITE_KEY_SCHEMES: dict[str, dict[str, str]] = {
    "WriteKey": {
        "type": "http",
        "scheme": "basic",
        "description": "A source's write key as the user name, with no password, as Segment's"
        " and RudderStack's libraries send it. Each operation that takes a write key also"
        " takes it in the request: a `writeKey` in the body, or in the URL where it says so.",
    },
    "WriteKeyHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Write-Key",
        "description": "A source's write key.",
    },
}
_IN_THE_REQUEST: dict[str, list[str]] = {}
WRITE_KEY_SECURITY = [*({name: []} for name in WRITE_KEY_SCHEMES), _IN_THE_REQUEST]


def document_write_keys(document: dict[str, Any]) -> dict[str, Any]:
    """Declare the write key's schemes (for `app.openapi.amend`)."""
    schemes = document.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes.update(WRITE_KEY_SCHEMES)
    return document
