"""What the API's HTTP protocol costs a request, in process: ``python -m bench.http_protocol
[--requests N] [--rounds N]``.

uvicorn's httptools protocol and the API's own (``app.kit.http_protocol``, as ``percorso
api`` builds it) each serve ``--requests`` requests on one kept-alive connection, one after
the other, under a trivial ASGI app: a ``GET`` the app answers, and a ``POST`` whose 1 KB
body the app reads first. No socket (a stand-in transport takes the answers) and no other
load, so what differs is the protocol's own work. The two take turns, round after round,
and each's best round is printed (the machine's noise only ever adds), in µs a request.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any

import uvloop
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.config import Settings
from app.kit.http_protocol import uvicorn_options

_BODY = b"x" * 1024
_REQUESTS = {
    "GET": b"GET /healthz HTTP/1.1\r\nHost: percorso.test\r\nUser-Agent: bench\r\n\r\n",
    "POST 1 KB": b"POST /v1/track HTTP/1.1\r\nHost: percorso.test\r\nUser-Agent: bench\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(_BODY), _BODY),
}
_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")],
}
_OK = {"type": "http.response.body", "body": b"ok"}


class _App:
    """Reads the body, if any, answers 200 "ok", and tells the driver it did."""

    def __init__(self) -> None:
        self.answered: asyncio.Future[None] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["method"] == "POST":
            while (await receive()).get("more_body"):
                pass
        await send(_START)
        await send(_OK)
        assert self.answered is not None
        self.answered.set_result(None)


class _Transport(asyncio.Transport):
    """What the protocol asks of a socket's transport, and nothing more."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def protocols() -> dict[str, Callable[..., asyncio.Protocol]]:
    """The protocols compared: uvicorn's, and the API's as ``percorso api`` builds it."""
    api: Callable[..., asyncio.Protocol] = uvicorn_options(Settings())["http"]
    return {"uvicorn": HttpToolsProtocol, "percorso": api}


async def _round(factory: Callable[..., asyncio.Protocol], request: bytes, requests: int) -> float:
    """µs a request: ``requests`` of ``request``, answered one after the other."""
    loop = asyncio.get_running_loop()
    app = _App()
    config = Config(app, lifespan="off", proxy_headers=False, access_log=False)
    config.load()
    protocol = factory(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    transport = _Transport()
    protocol.connection_made(transport)
    gc.collect()
    started = time.perf_counter()
    for _ in range(requests):
        app.answered = loop.create_future()
        protocol.data_received(request)
        await app.answered
    elapsed = time.perf_counter() - started
    transport.close()
    protocol.connection_lost(None)
    return elapsed / requests * 1e6


async def main(requests: int, rounds: int) -> dict[str, dict[str, float]]:
    """Each request kind's best µs a request, by protocol."""
    best: dict[str, dict[str, float]] = {kind: {} for kind in _REQUESTS}
    factories = protocols()
    for turn in range(rounds):
        # First to last, then last to first: the machine's drift reaches each alike.
        order = list(factories.items())[:: 1 if turn % 2 == 0 else -1]
        for kind, request in _REQUESTS.items():
            for name, factory in order:
                us = await _round(factory, request, requests)
                best[kind][name] = min(us, best[kind].get(name, us))
    return best


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5_000, help="requests a round")
    parser.add_argument("--rounds", type=int, default=15)
    return parser.parse_args()


if __name__ == "__main__":
    args = _arguments()
    results = uvloop.run(main(args.requests, args.rounds))
    for kind, by_protocol in results.items():
        cells = ", ".join(f"{name} {us:.2f} µs" for name, us in by_protocol.items())
        print(f"{kind}: {cells} (best of {args.rounds} rounds of {args.requests:,} requests)")
