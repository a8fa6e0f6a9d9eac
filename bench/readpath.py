"""The read API in-process: ``python -m bench.readpath [--events N] [--requests N]``.

One customer with ``--events`` events (filled server-side) on a fresh scratch database, then
``--requests`` sequential timeline (first page) and profile requests through the ASGI app —
no sockets, no other load — with p50/p99 per request; with ``--instructions``, the
instructions the process executes per request instead (`bench.callgrind`: repeatable where
timings are not). The quickest loop for profiling the read side
(``py-spy record -- python -m bench.readpath``); the ``reads`` phase of ``python -m bench``
measures the same requests over HTTP under concurrency.

Needs ``PERCORSO_DATABASE_URL`` (or ``PERCORSO_TEST_DATABASE_URL``): a server on which it may
create and drop a database.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import httpx
import orjson
from asgi_lifespan import LifespanManager

from app.auth.service import create_source, create_token
from app.config import Settings
from app.db import create_engine, create_session_factory
from app.kit import embedded
from app.main import create_app
from bench import callgrind
from bench.scratch import scratch_database


async def main(events: int, requests: int) -> None:
    broker = embedded.EmbeddedBroker().start()  # the app's lifespan starts a producer
    try:
        async with scratch_database("percorso_readpath") as url:
            await embedded.wait_for_broker(broker.bootstrap)
            settings = Settings(database_url=url, kafka_bootstrap_servers=broker.bootstrap)
            customer, secret = await _fill(settings, events)
            await _measure(settings, customer, secret, requests)
    finally:
        broker.stop()


# As the benchmark workload's page views carry them (about 120 and 300 bytes of JSON).
_PROPERTIES = {"path": "/new-in", "url": "https://shop.example.com/new-in"}
_CONTEXT = {
    "library": {"name": "analytics.js", "version": "next-1.70.0"},
    "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36"
    " (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "ip": "10.171.0.46",
    "page": {"path": "/new-in", "referrer": "https://instagram.com/", "title": "Negozio — new-in"},
}


async def _fill(settings: Settings, events: int) -> tuple[uuid.UUID, str]:
    engine = create_engine(settings)
    customer = uuid.uuid4()
    async with create_session_factory(engine)() as session, session.begin():
        source, _ = await create_source(session, name="bench", channel="web")
        _, secret = await create_token(session, scope="read")
    async with engine.begin() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        await driver.execute(
            "INSERT INTO customers (id, first_seen_at, last_seen_at, event_count, traits)"
            " VALUES ($1, now() - interval '1 year', now(), $2, '{\"plan\": \"pro\"}')",
            customer,
            events,
        )
        await driver.execute(
            """
            INSERT INTO identities (kind, value, customer_id)
            VALUES ('email', 'ada@example.com', $1), ('anonymous_id', 'a-1', $1)
            """,
            customer,
        )
        await driver.execute(
            """
            INSERT INTO events (event_id, source_id, message_id, customer_id, type, event,
                                channel, occurred_at, received_at, stage, properties, traits,
                                context)
            SELECT gen_random_uuid(), $1, 'm-' || n, $2, 'track', 'Product Viewed', 'web',
                   now() - n * interval '1 minute', now(), 'interest',
                   $4::jsonb || jsonb_build_object('product_id', 'P-' || n), '{}'::jsonb,
                   $5::jsonb
            FROM generate_series(1, $3) AS n
            """,
            source.id,
            customer,
            events,
            orjson.dumps(_PROPERTIES).decode(),
            orjson.dumps(_CONTEXT).decode(),
        )
        await driver.execute("ANALYZE events")
    await engine.dispose()
    return customer, secret


async def _measure(settings: Settings, customer: uuid.UUID, secret: str, requests: int) -> None:
    app = create_app(settings)
    headers = {"Authorization": f"Bearer {secret}"}
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://bench", headers=headers
        ) as http,
    ):
        for what, path in (
            ("timeline", f"/v1/customers/{customer}/timeline"),
            ("profile", f"/v1/customers/{customer}"),
        ):
            for _ in range(20):  # warm-up: connections, statement caches
                (await http.get(path)).raise_for_status()
            seconds = []
            with callgrind.counted(what):
                for _ in range(requests):
                    started = time.perf_counter()
                    response = await http.get(path)
                    seconds.append(time.perf_counter() - started)
                    response.raise_for_status()
            if callgrind.active():
                continue
            seconds.sort()
            p50, p99 = seconds[len(seconds) // 2], seconds[int(len(seconds) * 0.99)]
            print(f"{what:<9} p50 {p50 * 1000:6.2f} ms   p99 {p99 * 1000:6.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=1_000)
    callgrind.add_option(parser)
    args = parser.parse_args()
    if not callgrind.wanted(args):
        asyncio.run(main(args.events, args.requests))
    else:
        for what, total in callgrind.run("bench.readpath").items():
            print(f"{what:<9} {total / args.requests:>12,.0f} instructions a request")
