"""Browsers (CORS, the pixel API, the settings browser libraries load), per-source rate limits
and trusted proxies."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.kit.embedded import free_port
from app.main import create_app
from tests.helpers import basic, serving
from tests.ingest.fixtures import SourceFactory, TopicReader

GIF_MAGIC = b"GIF89a"


def _data(payload: dict[str, object], *, urlsafe: bool = True) -> str:
    raw = orjson.dumps(payload)
    encoded = base64.urlsafe_b64encode(raw) if urlsafe else base64.b64encode(raw)
    return encoded.decode().rstrip("=")


# Segment's pixel API, and RudderStack's (its calls as plain query parameters).
@pytest.mark.parametrize("pixel", ["/v1/pixel", "/pixel/v1"])
async def test_pixel_api_records_base64_and_plain_query_calls(
    client: httpx.AsyncClient, make_source: SourceFactory, topic: TopicReader, pixel: str
) -> None:
    source, key = await make_source(channel="email")
    payload = {
        "writeKey": key,
        "userId": "ada",
        "event": "Email Opened",
        "properties": {"subject": "Hi ü"},
    }
    response = await client.get(f"{pixel}/track", params={"data": _data(payload)})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/gif"
    assert response.content.startswith(GIF_MAGIC)
    assert "no-cache" in response.headers["cache-control"]
    assert response.headers["x-percorso-verdict"] == "accepted"
    plain = await client.get(
        f"{pixel}/page",
        params={"writeKey": key, "anonymousId": "b-1", "name": "Landing", "properties.path": "/x"},
        headers={"origin": "https://shop.example"},
    )
    assert plain.headers["x-percorso-verdict"] == "accepted"
    assert plain.headers["access-control-allow-origin"] == "https://shop.example"
    by_type = {tp.type: tp for tp in await topic.touchpoints(source.id, 2)}
    assert by_type["track"].event == "Email Opened"
    assert by_type["track"].properties == {"subject": "Hi ü"}
    assert by_type["track"].channel == "email"
    assert by_type["page"].properties == {"path": "/x"}


@pytest.mark.parametrize(
    ("params", "verdict"),
    [
        ({"data": "%%%not-base64"}, "invalid-request"),
        ({"data": base64.b64encode(b"[1]").decode()}, "invalid-request"),
        ({}, "invalid-request"),
        # An image tag sends no HTTP Basic credentials: the verdict says where the key goes.
        (
            {"data": _data({"userId": "ada", "event": "E"})},
            "unauthorized: put the source's write key in the call, as `writeKey`",
        ),
        (
            {"userId": "ada", "event": "E"},
            "unauthorized: put the source's write key in the call, as `writeKey`",
        ),
        ({"data": _data({"writeKey": "pw_nope", "userId": "ada", "event": "E"})}, "unauthorized"),
    ],
)
async def test_pixel_api_always_answers_a_gif_and_says_why_it_refused(
    client: httpx.AsyncClient, params: dict[str, str], verdict: str
) -> None:
    response = await client.get("/v1/pixel/track", params=params)
    assert response.status_code == 200
    assert response.content.startswith(GIF_MAGIC)
    assert response.headers["x-percorso-verdict"].startswith(verdict)


async def _track_from(client: httpx.AsyncClient, key: str, origin: str) -> httpx.Response:
    """A browser's track call with write key ``key``, from ``origin``."""
    event = {"userId": "ada", "event": "E"}
    return await client.post("/v1/track", json=event, headers={**basic(key), "origin": origin})


async def test_cors_preflight_any_origin_and_per_source_allowed_origins(
    client: httpx.AsyncClient, make_source: SourceFactory
) -> None:
    _, open_key = await make_source()
    _, shop_key = await make_source(settings={"allowed_origins": ["https://shop.example"]})
    preflight = await client.options(
        "/v1/t",
        headers={
            "origin": "https://anywhere.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "https://anywhere.example"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"]

    event = {"userId": "ada", "event": "E"}
    anywhere = await _track_from(client, open_key, "https://anywhere.example")
    assert anywhere.status_code == 200
    assert anywhere.headers["access-control-allow-origin"] == "https://anywhere.example"
    allowed = await _track_from(client, shop_key, "https://SHOP.example:443")
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://SHOP.example:443"
    refused = await _track_from(client, shop_key, "https://evil.example")
    assert refused.status_code == 403
    assert "access-control-allow-origin" not in refused.headers
    server_side = await client.post("/v1/track", json=event, headers=basic(shop_key))
    assert server_side.status_code == 200  # no Origin: not a browser, nothing to check


async def test_an_ipv6_origin_keeps_a_sources_settings_in_force(
    client: httpx.AsyncClient, make_source: SourceFactory
) -> None:
    # Stored without its brackets, an IPv6 origin was no origin when the settings were read
    # back, and settings that do not read fall back to the defaults: any origin, the
    # default rate.
    _, key = await make_source(
        settings={
            "allowed_origins": ["http://[2001:DB8::1]:8080", "https://shop.example"],
            "rate_limit_per_s": 0.01,
        }
    )
    refused = await _track_from(client, key, "https://evil.example")
    assert refused.status_code == 403
    allowed = await _track_from(client, key, "http://[2001:db8::1]:8080")
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://[2001:db8::1]:8080"
    limited = await _track_from(client, key, "https://shop.example")
    assert limited.status_code == 429


async def test_a_non_ascii_allowed_origin_admits_browsers_sending_punycode(
    client: httpx.AsyncClient, make_source: SourceFactory
) -> None:
    _, key = await make_source(settings={"allowed_origins": ["https://bücher.example"]})
    allowed = await _track_from(client, key, "https://xn--bcher-kva.example")
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://xn--bcher-kva.example"
    refused = await _track_from(client, key, "https://bucher.example")
    assert refused.status_code == 403


async def test_rate_limit_per_source_answers_429_with_retry_after(
    client: httpx.AsyncClient, make_source: SourceFactory
) -> None:
    _, slow_key = await make_source(settings={"rate_limit_per_s": 0.01})
    _, other_key = await make_source()
    event = {"userId": "ada", "event": "E"}
    first = await client.post("/v1/track", json=event, headers=basic(slow_key))
    assert first.status_code == 200
    second = await client.post("/v1/track", json=event, headers=basic(slow_key))
    assert second.status_code == 429
    assert int(second.headers["retry-after"]) >= 1
    assert second.headers["content-type"] == "application/problem+json"
    batch = await client.post(
        "/v1/batch", json={"batch": [{**event, "type": "track"}]}, headers=basic(slow_key)
    )
    assert batch.status_code == 429
    assert (await client.post("/v1/track", json=event, headers=basic(other_key))).status_code == 200


async def test_a_429_states_the_sources_rate_not_a_workers_share(
    channel_settings: Settings, db: AsyncEngine, make_source: SourceFactory
) -> None:
    """Each of 4 workers admits a quarter of a source's 4 events/s (bursts of 2 s: 2
    events); the 429 states the 4 the source was given."""
    _, key = await make_source(settings={"rate_limit_per_s": 4})
    event = {"userId": "ada", "event": "E"}
    workers = channel_settings.model_copy(update={"http_workers": 4})
    async with serving(create_app(workers)) as client:
        for _ in range(2):
            assert (await client.post("/v1/track", json=event, headers=basic(key))).is_success
        limited = await client.post("/v1/track", json=event, headers=basic(key))
    assert limited.status_code == 429
    assert limited.json()["detail"] == "this source may send 4 events per second; retry in 1 s"
    assert limited.headers["retry-after"] == "1"


@pytest.fixture
async def proxied_client(
    channel_settings: Settings, db: AsyncEngine
) -> AsyncIterator[httpx.AsyncClient]:
    """The app behind a trusted proxy at 127.0.0.1 (the ASGI test client's address)."""
    app = create_app(
        channel_settings.model_copy(update={"trusted_proxies": "127.0.0.1, 10.0.0.0/8"})
    )
    async with serving(app) as client:
        yield client


async def test_behind_a_trusted_proxy_the_client_ip_comes_from_x_forwarded_for(
    proxied_client: httpx.AsyncClient, make_source: SourceFactory, topic: TopicReader
) -> None:
    source, key = await make_source()
    # The left-most entry was written by the client itself: not believed.
    forwarded = "6.6.6.6, 198.51.100.9, 10.1.2.3"
    response = await proxied_client.post(
        "/v1/track",
        json={"userId": "a", "event": "E"},
        headers={**basic(key), "x-forwarded-for": forwarded},
    )
    assert response.status_code == 200
    (tp,) = await topic.touchpoints(source.id, 1)
    assert tp.context["ip"] == "198.51.100.9"


async def test_sources_refuse_invalid_settings(make_source: SourceFactory) -> None:
    from app.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="allowed_origins"):
        await make_source(settings={"allowed_origins": ["https://shop.example/path"]})
    with pytest.raises(InvalidRequest, match="rate_limit_per_s"):
        await make_source(settings={"rate_limit_per_s": -1})


def _settings_path(write_key: str) -> str:
    return f"/v1/projects/{write_key}/settings"


async def test_analytics_js_settings_send_its_calls_here_and_nothing_to_segment(
    client: httpx.AsyncClient, make_source: SourceFactory, topic: TopicReader
) -> None:
    source, key = await make_source()
    response = await client.get(_settings_path(key))
    assert response.status_code == 200
    assert response.headers["cache-control"] == "private, max-age=300"
    document = response.json()
    assert list(document["integrations"]) == ["Segment.io"]  # no destination to load
    segment_io = document["integrations"]["Segment.io"]
    assert segment_io["apiKey"] == key
    assert (segment_io["protocol"], segment_io["apiHost"]) == ("http", "percorso.test/v1")
    assert document["remotePlugins"] == []
    assert document["metrics"]["sampleRate"] == 0  # else posted to api.segment.io/v1/m
    # As analytics.js sends a track call with these settings: to {protocol}://{apiHost}/t,
    # as text/plain with the write key in the body.
    url = f"{segment_io['protocol']}://{segment_io['apiHost']}/t"
    call = {"writeKey": segment_io["apiKey"], "anonymousId": "a-1", "event": "Product Viewed"}
    text_plain = {"content-type": "text/plain"}
    sent = await client.post(url, content=orjson.dumps(call), headers=text_plain)
    assert sent.status_code == 200
    (tp,) = await topic.touchpoints(source.id, 1)
    assert tp.event == "Product Viewed"


async def test_settings_for_an_unknown_write_key_are_404_without_a_login_challenge(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    response = await client.get(_settings_path("pw_nobody"))
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert "www-authenticate" not in response.headers  # a browser would ask for a password
    too_long = await client.get(_settings_path("pw_" + "x" * 300))
    assert too_long.status_code == 422


async def test_with_the_database_down_settings_are_a_503_whose_log_holds_no_write_key(
    channel_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # The key is the settings document's path: the 503's warning named the path.
    down = f"postgresql://postgres@127.0.0.1:{free_port()}/percorso"
    unavailable = Settings.model_validate({**channel_settings.model_dump(), "database_url": down})
    key = "pw_TheSourcesSecretWriteKey"
    with caplog.at_level(logging.WARNING):
        async with serving(create_app(unavailable)) as client:
            response = await client.get(_settings_path(key))
    assert response.status_code == 503
    assert "database could not be reached" in caplog.text
    assert "/v1/projects/{write_key}/settings" in caplog.text
    assert key not in caplog.text


async def test_settings_name_the_public_url_when_it_is_set(
    channel_settings: Settings, make_source: SourceFactory
) -> None:
    _, key = await make_source()
    public = channel_settings.model_copy(update={"public_url": "https://Percorso.example:8443/in/"})
    async with serving(create_app(public)) as client:
        response = await client.get(_settings_path(key), headers={"host": "internal:8000"})
    assert response.status_code == 200
    segment_io = response.json()["integrations"]["Segment.io"]
    assert (segment_io["protocol"], segment_io["apiHost"]) == (
        "https",
        "Percorso.example:8443/in/v1",
    )
    # The same for every request: shared caches may keep it.
    assert response.headers["cache-control"] == "public, max-age=300"


async def test_every_answer_of_a_cors_path_varies_by_origin(
    channel_settings: Settings, make_source: SourceFactory
) -> None:
    """A shared cache keeps the public settings for minutes: the copy fetched without an
    Origin, which has no CORS grant, must not be given to a browser that needs one."""
    _, key = await make_source(settings={"allowed_origins": ["https://shop.example"]})
    public = channel_settings.model_copy(update={"public_url": "https://percorso.example"})
    shop, evil = {"origin": "https://shop.example"}, {"origin": "https://evil.example"}
    async with serving(create_app(public)) as client:
        for path, params in (
            (_settings_path(key), {}),
            ("/sourceConfig/", {"writeKey": key}),
        ):
            server_side = await client.get(path, params=params)
            assert server_side.status_code == 200
            assert server_side.headers["content-type"] == "application/json"
            assert server_side.headers["cache-control"] == "public, max-age=300"
            assert server_side.headers["vary"] == "Origin"
            assert "access-control-allow-origin" not in server_side.headers
            browser = await client.get(path, params=params, headers=shop)
            assert browser.headers["vary"] == "Origin"
            assert browser.headers["access-control-allow-origin"] == "https://shop.example"
            assert browser.content == server_side.content
            refused = await client.get(path, params=params, headers=evil)
            assert refused.status_code == 403
            assert refused.headers["vary"] == "Origin"
            assert "access-control-allow-origin" not in refused.headers
        call = await client.post(
            "/v1/track", json={"userId": "u", "event": "E"}, headers=basic(key)
        )
        assert call.status_code == 200
        assert call.headers["vary"] == "Origin"
        unknown = await client.get(_settings_path("pw_nobody"))
        assert unknown.status_code == 404
        assert unknown.headers["vary"] == "Origin"


@pytest.mark.parametrize(
    "url",
    [
        "percorso.example",
        "ftp://percorso.example",
        "https://",
        "https://p.example/?a=1",
        "https://user:secret@p.example",
    ],
)
def test_the_public_url_is_an_http_base_url(url: str) -> None:
    with pytest.raises(ValidationError, match="public_url"):
        Settings(public_url=url)


async def test_settings_name_the_forwarded_address_behind_a_trusted_proxy_only(
    proxied_client: httpx.AsyncClient, client: httpx.AsyncClient, make_source: SourceFactory
) -> None:
    _, key = await make_source()
    forwarded = {"x-forwarded-proto": "https", "x-forwarded-host": "track.shop.example, proxy.lan"}
    behind = (await proxied_client.get(_settings_path(key), headers=forwarded)).json()
    segment_io = behind["integrations"]["Segment.io"]
    assert (segment_io["protocol"], segment_io["apiHost"]) == ("https", "track.shop.example/v1")
    direct = (await client.get(_settings_path(key), headers=forwarded)).json()
    segment_io = direct["integrations"]["Segment.io"]
    assert (segment_io["protocol"], segment_io["apiHost"]) == ("http", "percorso.test/v1")
    bad_host = await client.get(_settings_path(key), headers={"host": "evil.example/x?"})
    assert bad_host.status_code == 400
    assert "PERCORSO_PUBLIC_URL" in bad_host.json()["detail"]


async def test_settings_follow_the_sources_allowed_origins(
    client: httpx.AsyncClient, make_source: SourceFactory
) -> None:
    _, key = await make_source(settings={"allowed_origins": ["https://shop.example"]})
    allowed = await client.get(_settings_path(key), headers={"origin": "https://shop.example"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
    refused = await client.get(_settings_path(key), headers={"origin": "https://evil.example"})
    assert refused.status_code == 403
    assert "access-control-allow-origin" not in refused.headers


async def test_rudderstack_source_config_names_the_source_and_nothing_else(
    client: httpx.AsyncClient, make_source: SourceFactory
) -> None:
    source, key = await make_source(settings={"allowed_origins": ["https://shop.example"]})
    # As RudderStack's SDK asks: the key in the query and as HTTP Basic, from the page.
    page = {"origin": "https://shop.example"}
    sdk = {"p": "npm", "v": "3.11.0", "build": "modern", "writeKey": key}
    preflight = await client.options(
        "/sourceConfig/",
        headers={**page, "access-control-request-method": "GET"},
    )
    assert preflight.status_code == 204
    response = await client.get("/sourceConfig/", params=sdk, headers={**page, **basic(key)})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://shop.example"
    assert response.json()["source"] == {
        "id": str(source.id),
        "writeKey": key,
        "enabled": True,
        "config": {},  # no error or metrics reporting to RudderStack
        "destinations": [],  # no device-mode destination to load
    }
    assert response.headers["cache-control"] == "public, max-age=300"
    by_header = await client.get("/sourceConfig/", headers=basic(key))
    assert by_header.json() == response.json()
    # As RudderStack's Android and iOS SDKs ask: no slash, the key as HTTP Basic only.
    mobile = await client.get(
        "/sourceConfig", params={"p": "android", "v": "1.20"}, headers=basic(key)
    )
    assert (mobile.status_code, mobile.json()) == (200, response.json())
    # The URL does not name the key: a shared cache must not answer other keys with it.
    assert by_header.headers["cache-control"] == "private, max-age=300"
    refused = await client.get(
        "/sourceConfig/", params=sdk, headers={"origin": "https://x.example"}
    )
    assert refused.status_code == 403
    for unknown in ({"writeKey": "pw_nobody"}, {}):
        answer = await client.get("/sourceConfig/", params=unknown)
        assert answer.status_code == 404
        assert "www-authenticate" not in answer.headers
