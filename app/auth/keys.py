"""Credential material: generation and hashing.

Keys and tokens are 192-bit random strings, so a fast unsalted SHA-256 is enough to store
them (no dictionary to attack) and keeps the per-request check cheap. Only the hash and a
short display prefix are ever stored; the secret is shown once, at creation, and never logged.
"""

from __future__ import annotations

import hashlib
import secrets

# Prefixes that tell a leaked secret's kind at a glance (not secrets themselves).
WRITE_KEY_PREFIX = "pw_"
READ_TOKEN_PREFIX = "pr_"  # noqa: S105
ADMIN_TOKEN_PREFIX = "pa_"  # noqa: S105


def generate(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(24)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    """Enough of a secret to tell keys apart in a listing, not enough to use it."""
    return secret[:7]
