"""The built-in web dashboard at ``/dashboard/``: the files of ``static/`` (HTML, CSS and
JavaScript modules, no build step), which read the API from the browser.

The files hold no data and need no credential; the data does: the page sends the read
token its user pastes in as ``Authorization: Bearer`` to this same origin (the read API
grants no CORS, so it is only ever read from here), at the page's path less ``dashboard/``,
so that the page and the API behind a reverse proxy work under any path prefix. Every
answer carries a strict Content-Security-Policy: scripts, styles and connections from this
origin only, nothing inline, no framing, no form submitted by the browser itself. Traits and
event properties are whatever senders put in them: the scripts insert data as text, never
as markup (a test scans them), and the policy stops what would slip through.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Final

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from app.errors import NotFound

PREFIX: Final = "/dashboard"

# `form-action 'none'`: the forms are handled by the scripts; were they not (a script that
# failed to load), the browser must not submit them, a token in the URL.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none';"
    " frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers older than CSP 2
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # Revalidated on every load (a 304 while unchanged): an upgraded API serves its own
    # scripts at once, never a cached mix of two releases' modules.
    "Cache-Control": "no-cache",
}
MEDIA_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every file of ``static/`` by name, read once: a few kilobytes, package data."""
    assets = {}
    for entry in resources.files("app.dashboard").joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in MEDIA_TYPES:
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            assets[entry.name] = Asset(body, MEDIA_TYPES[suffix], etag)
    if "index.html" not in assets:
        raise RuntimeError("the dashboard's files are missing from the package (static/)")
    return assets


def create_router() -> APIRouter:
    """The dashboard's routes, left out of the OpenAPI document (they are pages, not API)."""
    assets = load_assets()
    router = APIRouter(prefix=PREFIX, include_in_schema=False)

    @router.get("")
    async def to_dashboard() -> Response:
        # The page's files are named relative to it, so it is only ever served at the slash.
        # Relative too, the redirect keeps any path a reverse proxy serves Percorso under.
        return RedirectResponse("dashboard/", status_code=308, headers=SECURITY_HEADERS)

    @router.get("/")
    async def page(request: Request) -> Response:
        return _serve(request, assets["index.html"])

    @router.get("/{name}")
    async def asset(request: Request, name: str) -> Response:
        found = assets.get(name)
        if found is None:
            raise NotFound(f"the dashboard has no file {name[:100]!r}")
        return _serve(request, found)

    return router


def _serve(request: Request, asset: Asset) -> Response:
    headers = {**SECURITY_HEADERS, "ETag": asset.etag}
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)
