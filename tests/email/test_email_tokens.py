"""Email tracking tokens: what they carry, and that nothing forged gets through."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest

from app.email.keys import source_key
from app.email.tokens import EmailToken, InvalidToken, TokenSigner

SOURCE = uuid.UUID("0190f1a2-0000-7000-8000-000000000001")
NOW = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


def _token(**changes: object) -> EmailToken:
    fields: dict[str, object] = {
        "source_id": SOURCE,
        "kind": "email",
        "value": "ada@example.com",
        "campaign": "spring-sale",
        "url": "https://shop.example/p/1?utm_source=email&x=a%20b",
        "issued_at": NOW,
        "sent_at": NOW,
    }
    fields.update(changes)
    return EmailToken(**fields)  # type: ignore[arg-type]


def test_a_token_round_trips_and_is_url_safe_and_compact() -> None:
    signer = TokenSigner(b"s" * 32)
    text = signer.mint(_token())
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert len(text) < 250
    assert signer.verify(text) == _token()
    pixel = signer.verify(signer.mint(_token(url=None, campaign=None, sent_at=None)))
    assert (pixel.url, pixel.campaign, pixel.sent_at) == (None, None, None)


def test_changing_any_byte_breaks_the_signature() -> None:
    signer = TokenSigner(b"s" * 32)
    raw = bytearray(base64.urlsafe_b64decode(signer.mint(_token()) + "=="))
    for position in range(len(raw)):
        tampered = bytearray(raw)
        tampered[position] ^= 0x01
        text = base64.urlsafe_b64encode(bytes(tampered)).decode().rstrip("=")
        with pytest.raises(InvalidToken):
            signer.verify(text)


def test_tokens_of_another_secret_or_source_key_are_refused() -> None:
    text = TokenSigner(b"a" * 32).mint(_token())
    with pytest.raises(InvalidToken, match="signature"):
        TokenSigner(b"b" * 32).verify(text)
    assert source_key(b"a" * 32, SOURCE) != source_key(b"a" * 32, uuid.uuid4())


@pytest.mark.parametrize("text", [None, "", "!!!", "AQ", "x" * 5000])
def test_missing_or_garbage_tokens_are_invalid(text: str | None) -> None:
    with pytest.raises(InvalidToken):
        TokenSigner(b"s" * 32).verify(text)


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "//evil.example",
        "/relative",
        "ftp://x.example",
        "https://u:p@x.example",
        "https://x.example/a b",
    ],
)
def test_only_absolute_http_urls_can_be_signed(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        TokenSigner(b"s" * 32).mint(_token(url=url))


def test_a_previous_secret_still_verifies_and_only_the_current_one_signs() -> None:
    """A rotated secret: links already sent keep working, new ones use the new secret."""
    old, older, new = b"o" * 32, b"p" * 32, b"n" * 32
    signer = TokenSigner(new, (old, older))
    for secret in (old, older, new):
        assert signer.verify(TokenSigner(secret).mint(_token())) == _token()
    minted = signer.mint(_token())
    assert TokenSigner(new).verify(minted) == _token()
    with pytest.raises(InvalidToken, match="signature"):
        TokenSigner(old).verify(minted)
    with pytest.raises(InvalidToken, match="signature"):
        signer.verify(TokenSigner(b"x" * 32).mint(_token()))
