"""FastAPI dependencies for credentials: ``ReadAccess`` and the write key of a request."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer
from starlette.requests import HTTPConnection

from app.auth.service import Authenticator, TokenInfo


def authenticator(request: HTTPConnection) -> Authenticator:
    auth: Authenticator = request.state.authenticator
    return auth


class _ReadToken(HTTPBearer):
    """The request's read token, checked: one dependency, which OpenAPI documents as the
    ``HTTPBearer`` scheme. (As a token check depending on an ``HTTPBearer``, two levels of
    FastAPI's dependency solving cost about 110,000 more instructions a timeline page, 3 %.)"""

    async def __call__(self, request: HTTPConnection) -> TokenInfo:  # type: ignore[override]
        credentials = await super().__call__(request)
        secret = credentials.credentials if credentials else None
        return await authenticator(request).token(secret, "read")


read_token = _ReadToken(
    scheme_name="HTTPBearer", description="A read (or admin) API token.", auto_error=False
)
ReadAccess = Annotated[TokenInfo, Depends(read_token)]


def presented_write_key(request: Request) -> str | None:
    """The write key from HTTP Basic (key as user name) or the ``X-Write-Key`` header."""
    header = request.headers.get("authorization")
    if header and header[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, _, _password = decoded.partition(":")
        return user or None
    return request.headers.get("x-write-key") or None
