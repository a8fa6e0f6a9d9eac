"""FastAPI dependencies for credentials: ``ReadAccess`` and the write key of a request."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth.service import Authenticator, TokenInfo

_bearer = HTTPBearer(auto_error=False, description="A read (or admin) API token.")


def authenticator(request: Request) -> Authenticator:
    auth: Authenticator = request.state.authenticator
    return auth


async def require_read(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TokenInfo:
    secret = credentials.credentials if credentials else None
    return await authenticator(request).token(secret, "read")


ReadAccess = Annotated[TokenInfo, Depends(require_read)]


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
