"""The built-in dashboard: its files as served (types, security headers, no credential),
and what its scripts may do, read from the files themselves (no browser needed)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import typing
import uuid
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.dashboard.endpoints import CONTENT_SECURITY_POLICY
from app.main import create_app
from app.touchpoint import Channel, EventType
from tests.factories import touchpoint
from tests.helpers import api_process, scalar, serving

STATIC = Path(__file__).resolve().parents[2] / "app" / "dashboard" / "static"
SCRIPTS = sorted(STATIC.glob("*.js"))
TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}


def _secured(response: httpx.Response) -> None:
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert "unsafe" not in CONTENT_SECURITY_POLICY  # no inline script or style, no eval
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


async def test_the_page_and_its_files_are_served_without_a_credential(
    app_client: httpx.AsyncClient,
) -> None:
    page = await app_client.get("/dashboard/", headers={"origin": "https://elsewhere.example"})
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="app.js">' in page.text
    _secured(page)
    # The tracking API's CORS grant is not the dashboard's: no other site reads it.
    assert "access-control-allow-origin" not in page.headers
    served = set()
    for path in STATIC.iterdir():
        answer = await app_client.get(f"/dashboard/{path.name}")
        assert answer.status_code == 200, path.name
        assert answer.headers["content-type"].split(";")[0] == TYPES[path.suffix], path.name
        assert answer.content == path.read_bytes()
        _secured(answer)
        served.add(path.suffix)
    assert {".html", ".js", ".css"} <= served


async def test_an_unchanged_file_is_not_sent_again(app_client: httpx.AsyncClient) -> None:
    first = await app_client.get("/dashboard/app.js")
    again = await app_client.get(
        "/dashboard/app.js", headers={"if-none-match": first.headers["etag"]}
    )
    assert again.status_code == 304
    assert again.content == b""
    other = await app_client.get(
        "/dashboard/dom.js", headers={"if-none-match": first.headers["etag"]}
    )
    assert other.status_code == 200


async def test_the_dashboard_without_its_slash_redirects_to_it(
    app_client: httpx.AsyncClient,
) -> None:
    answer = await app_client.get("/dashboard")
    assert answer.status_code == 308
    # Relative: behind a proxy serving Percorso at /percorso/, to /percorso/dashboard/.
    assert answer.headers["location"] == "dashboard/"


@pytest.mark.parametrize("path", ["/dashboard/nothing.js", "/dashboard/..%2Fendpoints.py"])
async def test_a_file_the_dashboard_does_not_have_is_not_found(
    app_client: httpx.AsyncClient, path: str
) -> None:
    answer = await app_client.get(path)
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"


async def test_a_disabled_dashboard_is_not_served(settings: Settings, db: AsyncEngine) -> None:
    off = settings.model_copy(update={"dashboard_enabled": False})
    async with serving(create_app(off)) as client:
        for path in ("/dashboard/", "/dashboard", "/dashboard/app.js"):
            answer = await client.get(path)
            assert answer.status_code == 404, path
            assert "content-security-policy" not in answer.headers


# What could put markup or code from data into the page: the scripts use none of it (data
# goes in as text), and the Content-Security-Policy refuses the rest.
FORBIDDEN = re.compile(
    r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\s*\(|new\s+Function\b"
    r"|setAttribute\(\s*[\"'](?:on|style|src|srcdoc)|javascript:"
)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_no_script_writes_markup_or_evaluates_code(script: Path) -> None:
    assert FORBIDDEN.findall(script.read_text()) == []


def test_the_forbidden_patterns_are_found() -> None:
    samples = [
        "el.innerHTML = x",
        "p.insertAdjacentHTML('beforeend', x)",
        "eval (x)",
        "new Function('a')",
        'a.setAttribute("onclick", x)',
        "document.write(x)",
    ]
    assert all(FORBIDDEN.search(sample) for sample in samples)


def test_every_api_call_is_an_operation_of_the_api() -> None:
    document = create_app().openapi()["paths"]
    api = (STATIC / "api.js").read_text()
    # get("/v1/…") or post("/v1/…"), not x.get(
    calls = re.findall(r"(?<![.\w])(get|post)\(\s*\"([^\"]*)\"", api)
    assert len(calls) == 11
    assert ("post", "/v1/customers/lookup") in calls  # the identifier out of the URL
    missing = [call for call in calls if call[0] not in document.get(call[1], {})]
    assert missing == []
    # Nothing else requests anything: the check above sees every call.
    for script in SCRIPTS:
        if script.name != "api.js":
            text = script.read_text()
            assert "fetch(" not in text, script.name
            assert "/v1/" not in text, script.name


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.files: list[str] = []
        self.inline: list[str] = []
        self._tag = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag = tag
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith("#"):
                self.files.append(value)
            if name == "style" or name.startswith("on"):
                self.inline.append(f"{tag} {name}")
        if tag == "style":
            self.inline.append("style element")

    def handle_data(self, data: str) -> None:
        if self._tag == "script" and data.strip():
            self.inline.append("script content")


def test_the_page_names_only_its_own_files_and_holds_no_inline_code() -> None:
    page = _References()
    page.feed((STATIC / "index.html").read_text())
    assert {"app.js", "dashboard.css"} <= set(page.files)
    # Each named relative to the page, so that it loads under any path prefix too.
    assert [name for name in page.files if not re.fullmatch(r"[\w-]+\.\w+", name)] == []
    assert [name for name in page.files if not (STATIC / name).is_file()] == []
    assert page.inline == []  # the Content-Security-Policy would refuse it
    imported = {
        (script.name, name)
        for script in SCRIPTS
        for name in re.findall(r"^(?:import|\}) .*from \"([^\"]+)\";$", script.read_text(), re.M)
    }
    assert len(imported) == 11  # a multi-line import's last line too
    for script, name in imported:
        assert name.startswith("./"), f"{script} imports {name}"
        assert (STATIC / name).is_file(), f"{script} imports {name}"


def test_the_timeline_filters_offer_the_apis_channels_and_types() -> None:
    dom = (STATIC / "dom.js").read_text()

    def listed(name: str) -> list[str]:
        found = re.search(rf"export const {name} = \[(.*?)\];", dom, re.S)
        assert found, name
        return re.findall(r"\"(\w+)\"", found.group(1))

    assert listed("CHANNELS") == [channel.value for channel in Channel]
    assert listed("TYPES") == list(typing.get_args(EventType))


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_each_script_parses_as_a_module(script: Path, tmp_path: Path) -> None:
    module = tmp_path / (script.stem + ".mjs")  # node reads .mjs as an ES module
    module.write_bytes(script.read_bytes())
    checked = subprocess.run(
        [shutil.which("node") or "node", "--check", str(module)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.parametrize("page", ["/dashboard/", "/tools/percorso/dashboard/"])
async def test_the_views_show_a_customer_and_the_analytics_with_data_as_text(
    page: str,
    settings: Settings,
    db: AsyncEngine,
    read_token: str,
    handle: Any,
    source_id: uuid.UUID,
    tmp_path: Path,
) -> None:
    """The scripts run (in node, on tests/dashboard/browser.mjs's stand-in DOM) against the
    real API, at the origin's root or behind a reverse proxy that serves it under a path:
    sign-in, a refused token, a customer (and an id merged into it), each analysis; what
    senders wrote shows as the characters they wrote."""
    now = datetime.now(UTC)
    await handle([touchpoint(source_id, anonymous_id="anon-1", at=now - timedelta(days=3))])
    ada = {"user_id": "ada", "extra_ids": [("email", "ada@example.com")]}
    await handle(
        [
            touchpoint(
                source_id,
                **ada,
                type="identify",
                event=None,
                at=now - timedelta(days=2),
                traits={"nickname": MARKUP},
            )
        ]
    )
    merged = str(await scalar(db, "SELECT customer_id FROM identities WHERE value = 'ada'"))
    cart = {"name": "<b>Boots</b>", "price": 10, "quantity": 2, "currency": "EUR"}
    await handle(
        [
            touchpoint(source_id, user_id="ada", anonymous_id="anon-1", at=now - timedelta(days=1)),
            touchpoint(
                source_id,
                user_id="ada",
                event="Product Added",
                at=now - timedelta(hours=3),
                properties=cart,
            ),
        ]
    )
    survivor = str(await scalar(db, "SELECT customer_id FROM identities WHERE value = 'ada'"))
    assert survivor != merged
    copy = tmp_path / "static"
    shutil.copytree(STATIC, copy)
    (copy / "package.json").write_text('{"type": "module"}')  # node: .js files are modules
    node = shutil.which("node") or "node"
    async with api_process(settings, tmp_path / "api.log") as port:
        args = [str(copy), f"http://127.0.0.1:{port}", page, read_token, survivor, merged]
        ran = await asyncio.to_thread(
            subprocess.run,
            [node, str(Path(__file__).parent / "browser.mjs"), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert ran.returncode == 0, ran.stderr
    shown = json.loads(ran.stdout)
    assert "Sign in" in shown["signin"]
    assert "(401)" in shown["refused"]
    # A token fetch could not send is refused in the form, not taken for the API unreachable.
    assert "Not a Percorso token" in shown["unsendable"]
    assert "Character 1 of the token, \u201c (U+201C), cannot be" in shown["unsendable"]
    assert "could not be reached" not in shown["unsendable"]
    assert shown["unsendable_requests"] == 0
    assert shown["unsendable_stored"] is False
    assert "Find a customer" in shown["lookup"]
    assert shown["stored"] == read_token
    assert shown["nav_hidden"] is False
    assert shown["found"] == f"#/customers/{survivor}"  # looked up by email
    view = shown["customer"]
    for expected in (survivor, MARKUP, "ada@example.com", "anon-1", "Product Added"):
        assert expected in view
    assert "3 in all" in view  # identities
    assert "start → consideration" in view  # the journey
    assert "merged" not in view
    assert "Older events" not in view  # one page: its button hidden
    assert f"The id {merged} was merged into this customer" in shown["merged"]
    assert survivor in shown["merged"]
    assert "(422)" in shown["invalid_id"]
    assert "customer_id: " in shown["invalid_id"]
    assert "path." not in shown["invalid_id"]
    assert "1 customer, model default" in shown["stages"]
    assert "Last seen until (excluded)" in shown["stages"]  # as the API: before that day
    assert "awareness" in shown["funnel"]
    assert "All channels" in shown["touchpoints"]
    assert "0 conversions (entering purchase)" in shown["attribution"]
    assert "<b>Boots</b>" in shown["abandoned-carts"]
    assert "20 EUR" in shown["abandoned-carts"]
    assert "1 customer, model default" in shown["stages_after_slow"]
    assert "Check two steps or more." in shown["funnel_no_step"]
    assert shown["funnel_no_step_requests"] == 0
    assert "Name the conversion event." in shown["attribution_no_event"]
    assert shown["attribution_no_event_requests"] == 0
    assert "anon-1" in shown["identities"]
    assert "Sign in" in shown["signed_out"]
    assert "(401)" in shown["signed_out"]
    # Every request went to the API under the page's prefix, none to the origin's root.
    prefix = page.removesuffix("dashboard/")
    assert len(shown["requested"]) >= 15
    assert [path for path in shown["requested"] if not path.startswith(prefix + "v1/")] == []


MARKUP = "<img src=x onerror=alert(1)>"
