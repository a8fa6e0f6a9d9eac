"""The server secret and the per-source keys derived from it.

No signing secret is stored in the database: a source's email-token key is
``HMAC-SHA256(server_secret, "percorso/email-token/v1" || 0x00 || source_id)`` (HMAC as
a PRF, which is what HKDF-Expand does with one block). Rotating ``PERCORSO_SECRET_KEY``
invalidates every token minted before, unless the old key is kept in
``PERCORSO_SECRET_KEY_PREVIOUS`` (verified, never used to sign); deleting a source makes its
tokens useless.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import uuid
from pathlib import Path

from app.config import Settings

_LABEL = b"percorso/email-token/v1\x00"
SECRET_FILE = "secret_key"  # noqa: S105 (a file name, not a secret)


def server_secret(settings: Settings) -> bytes:
    """``PERCORSO_SECRET_KEY``; outside production, when unset, a random secret generated
    once and kept in ``data_dir/secret_key`` (mode 0600), so tokens survive restarts of
    ``percorso dev``. Production without a secret is refused by :class:`Settings`."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    if settings.environment == "production":
        raise RuntimeError("PERCORSO_SECRET_KEY is required in production")
    return _stored_secret(settings.data_dir / SECRET_FILE)


def previous_secrets(settings: Settings) -> tuple[bytes, ...]:
    """``PERCORSO_SECRET_KEY_PREVIOUS``: secrets whose tokens still verify."""
    return tuple(key.encode() for key in settings.previous_secret_keys)


def _stored_secret(path: Path) -> bytes:
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as out:
        out.write(value)
    return value


def source_key(secret: bytes, source_id: uuid.UUID) -> bytes:
    """The email-token key of one source (32 bytes, deterministic)."""
    return hmac.new(secret, _LABEL + source_id.bytes, hashlib.sha256).digest()
