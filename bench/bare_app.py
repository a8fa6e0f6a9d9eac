"""The ceiling for ingest: the same server stack as the API (uvicorn, uvloop, httptools,
FastAPI routing), answering ``/v1/batch`` and ``/v1/track`` after only parsing the JSON body.
No validation, no auth, no broker. ``python -m bench.bare_app --port N`` serves it."""

from __future__ import annotations

import argparse

import orjson
from fastapi import FastAPI, Request, Response


def create_app() -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.post("/v1/batch")
    async def batch(request: Request) -> Response:
        body = orjson.loads(await request.body())
        accepted = len(body.get("batch", ())) if isinstance(body, dict) else 0
        return Response(
            orjson.dumps({"success": True, "accepted": accepted}), media_type="application/json"
        )

    @app.post("/v1/track")
    async def track(request: Request) -> Response:
        orjson.loads(await request.body())
        return Response(
            orjson.dumps({"success": True, "accepted": 1}), media_type="application/json"
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    uvicorn.run(
        "bench.bare_app:create_app",
        factory=True,
        workers=args.workers,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        proxy_headers=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
