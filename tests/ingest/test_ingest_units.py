"""Pure pieces of the tracking API: rate limiter, origins, pixel decoding, client IP, what a
call needs."""

from __future__ import annotations

import base64
from typing import get_args

import msgspec
import pytest
from starlette.requests import Request

from app.errors import InvalidRequest, PayloadTooLarge
from app.ingest import pixel, source_settings
from app.ingest.client import TrustedProxies, client_ip
from app.ingest.ratelimit import RateLimited, RateLimiter
from app.ingest.schemas import NEEDS, CallType, SegmentCall, missing_field
from app.ingest.source_settings import normalise_origin


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_bursts_refills_and_tells_when_to_retry() -> None:
    clock = Clock()
    limiter = RateLimiter(default_rate=10, burst_s=1, clock=clock)
    for _ in range(10):
        limiter.check("s", 1)
    with pytest.raises(RateLimited) as refused:
        limiter.check("s", 1)
    assert refused.value.status == 429
    assert refused.value.headers["Retry-After"] == "1"
    limiter.check("other", 1)  # buckets are per source
    clock.now = 0.5
    for _ in range(5):
        limiter.check("s", 1)
    with pytest.raises(RateLimited):
        limiter.check("s", 1)


def test_a_batch_larger_than_the_bucket_is_admitted_once_full_and_leaves_debt() -> None:
    clock = Clock()
    limiter = RateLimiter(default_rate=100, burst_s=2, clock=clock)
    limiter.check("s", 2_500)  # capacity 200: admitted, 2,300 in debt
    clock.now = 20
    with pytest.raises(RateLimited) as refused:
        limiter.check("s", 1)
    assert refused.value.headers["Retry-After"] == "4"  # (1 + 300) / 100 → ceil 4 s
    clock.now = 24.1
    limiter.check("s", 1)


def test_source_rate_overrides_the_default() -> None:
    limiter = RateLimiter(default_rate=1_000, burst_s=1, clock=Clock())
    limiter.check("s", 1, rate=1)
    with pytest.raises(RateLimited):
        limiter.check("s", 1, rate=1)


def test_each_worker_admits_its_share_and_a_429_states_the_whole_rate() -> None:
    """With 4 workers a worker admits a quarter of the rate; its 429 says the rate the
    source was given, and when its own bucket has the events again."""
    clock = Clock()
    limiter = RateLimiter(default_rate=1_000, burst_s=2, clock=clock, workers=4)
    limiter.check("s", 500)  # 250/s here: a bucket of 500
    with pytest.raises(RateLimited, match=r"may send 1000 events per second") as refused:
        limiter.check("s", 1)
    assert refused.value.headers["Retry-After"] == "1"
    limiter.check("slow", 4, rate=8)  # 2/s here: a bucket of 4
    with pytest.raises(RateLimited, match=r"may send 8 events per second") as refused:
        limiter.check("slow", 4, rate=8)
    assert refused.value.headers["Retry-After"] == "2"  # 4 events at 2/s
    clock.now = 2
    limiter.check("slow", 4, rate=8)


@pytest.mark.parametrize(
    ("origin", "normalised"),
    [
        ("https://Shop.Example", "https://shop.example"),
        ("https://shop.example:443/", "https://shop.example"),
        ("http://localhost:3000", "http://localhost:3000"),
        # Browsers send a non-ASCII domain in punycode, mapped by UTS #46.
        ("https://bücher.example", "https://xn--bcher-kva.example"),
        ("https://BÜCHER.example:8443/", "https://xn--bcher-kva.example:8443"),
        ("https://xn--bcher-kva.example", "https://xn--bcher-kva.example"),
        ("https://straße.de", "https://xn--strae-oqa.de"),
        ("http://[2001:DB8::1]:8080", "http://[2001:db8::1]:8080"),
        ("*", "*"),
    ],
)
def test_origins_are_normalised(origin: str, normalised: str) -> None:
    assert normalise_origin(origin) == normalised


@pytest.mark.parametrize(
    "origin", ["shop.example", "ftp://x.example", "https://x.example/a", "null"]
)
def test_non_origins_are_refused(origin: str) -> None:
    with pytest.raises(ValueError, match="origin"):
        normalise_origin(origin)


@pytest.mark.parametrize("origin", ["https://-bücher.example", "https://bü\u200dcher.example"])
def test_non_ascii_hosts_that_are_no_domain_names_are_refused(origin: str) -> None:
    with pytest.raises(ValueError, match="not a valid domain name"):
        normalise_origin(origin)


def test_a_non_ascii_allowed_origin_allows_the_punycode_browsers_send() -> None:
    # Stored as validate stores it, or stored before origins were kept in punycode: read
    # back, both allow the same.
    stored = source_settings.validate({"allowed_origins": ["https://Bücher.example"]})
    assert stored == {"allowed_origins": ["https://xn--bcher-kva.example"]}
    for settings in (stored, {"allowed_origins": ["https://bücher.example"]}):
        policy = source_settings.parse(settings)
        assert policy.allows_origin("https://xn--bcher-kva.example")
        assert policy.allows_origin("https://bücher.example")
        assert not policy.allows_origin("https://bucher.example")


def test_allowed_origins_default_to_any() -> None:
    for settings in (None, {}, {"allowed_origins": None}, {"allowed_origins": ["*"]}):
        assert source_settings.parse(settings).allows_origin("https://anything.example")
    only = source_settings.parse({"allowed_origins": ["https://a.example"]})
    assert only.allows_origin("https://a.example")
    assert only.allows_origin("https://A.example:443")
    assert not only.allows_origin("https://b.example")
    assert not only.allows_origin("null")


def test_pixel_decoding_accepts_both_base64_alphabets_and_dotted_params() -> None:
    raw = b'{"userId":"a>b?","event":"E"}'
    for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw).rstrip(b"=")):
        assert pixel.decode([("data", encoded.decode())]) == {"userId": "a>b?", "event": "E"}
    assert pixel.decode([("context.page.path", "/x"), ("userId", "u")]) == {
        "context": {"page": {"path": "/x"}},
        "userId": "u",
    }
    with pytest.raises(InvalidRequest):
        pixel.decode([("properties", "flat"), ("properties.x", "nested")])
    with pytest.raises(PayloadTooLarge):
        pixel.decode([("data", "A" * 50_000)])


def _request(peer: str, forwarded: str | None) -> Request:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return Request({"type": "http", "headers": headers, "client": (peer, 1234)})


def test_client_ip_believes_only_trusted_proxies() -> None:
    proxies = TrustedProxies.parse("10.0.0.0/8")
    assert client_ip(_request("203.0.113.5", "1.2.3.4"), proxies) == "203.0.113.5"
    assert client_ip(_request("10.0.0.1", "1.2.3.4, 10.0.0.2"), proxies) == "1.2.3.4"
    assert client_ip(_request("10.0.0.1", "garbage"), proxies) == "10.0.0.1"
    assert client_ip(_request("10.0.0.1", None), proxies) == "10.0.0.1"
    with pytest.raises(ValueError, match="does not appear to be"):
        TrustedProxies.parse("10.0.0.0/33")


@pytest.mark.parametrize("kind", get_args(CallType))
def test_what_the_document_says_a_call_needs_is_what_is_checked(kind: str) -> None:
    """NEEDS (the OpenAPI document's) against missing_field (the check)."""
    full = {"userId": "u", "anonymousId": "a", "event": "E", "groupId": "g", "previousId": "p"}

    def missing(**fields: object) -> str | None:
        call = msgspec.convert({"type": kind, **full, **fields}, SegmentCall)
        return missing_field(call, ids_optional=False)

    assert missing() is None
    needed = {f for f in full if missing(**{f: None}) is not None}
    assert needed == set(NEEDS.get(kind, ()))
    assert missing(userId=None, anonymousId=None) is not None  # every call: one of the two
