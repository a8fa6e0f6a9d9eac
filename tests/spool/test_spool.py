"""The spool: without the broker's ack the API commits each request's messages to
PostgreSQL and answers 200; the relay publishes them once the broker is back, and the
pipeline stores every event once. Real PostgreSQL, the real embedded broker; a broker
"down" is a port nothing listens on, or one that accepts and never answers."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db import create_pool
from app.ingest.publisher import BrokerUnavailable, Publisher, partition_for
from app.kit.embedded import free_port
from app.kit.kafka import ensure_topics
from app.kit.metrics import PIPELINE_EVENTS, SPOOL_MESSAGES
from app.main import create_app
from app.pipeline.runner import Pipeline
from app.spool import repository
from app.spool.relay import CHUNK, Relay, placed
from app.spool.service import Spool
from tests.helpers import basic, scalar, serving, wait_until


def _brokerless(settings: Settings, **update: Any) -> Settings:
    return settings.model_copy(
        update={
            "kafka_bootstrap_servers": f"127.0.0.1:{free_port()}",
            "kafka_publish_timeout_s": 1.0,
            "spool_check_interval_s": 0.1,
            **update,
        }
    )


def _batch(prefix: str, users: int) -> dict[str, Any]:
    """A batch the API sends as envelopes (every call plainly valid, with a messageId)."""
    return {
        "batch": [
            {
                "type": "track",
                "messageId": f"{prefix}-{n}",
                "userId": f"u-{prefix}-{n}",
                "event": "E",
            }
            for n in range(users)
        ]
    }


async def _rows(db: AsyncEngine) -> list[Any]:
    async with db.connect() as conn:
        result = await conn.exec_driver_sql("SELECT partition, key, value FROM spool ORDER BY id")
        return list(result)


def _message_ids(value: bytes) -> list[str]:
    message = orjson.loads(value)
    if "envelope" in message:
        return [item["messageId"] for item in message["items"]]
    return [message["message_id"]]


async def test_without_a_broker_requests_are_spooled_whole_and_answered_200(
    settings: Settings, db: AsyncEngine, write_key: str
) -> None:
    spooled = SPOOL_MESSAGES.labels("spooled")._value.get()
    async with serving(create_app(_brokerless(settings))) as client:
        batch = await client.post("/v1/batch", json=_batch("b", 8), headers=basic(write_key))
        track = await client.post(
            "/v1/track",
            json={"messageId": "t-1", "userId": "ada", "event": "Product Viewed"},
            headers=basic(write_key),
        )
        contacts = await client.post(
            "/v1/contacts",
            json={"contacts": [{"crm_id": "C-1"}, {"crm_id": "C-2", "email": "c2@example.com"}]},
            headers=basic(write_key),
        )
        ready = await client.get("/readyz")
    for answer in (batch, track, contacts):
        assert answer.status_code == 200, answer.text
    assert batch.json()["accepted"] == 8
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": True, "broker": False, "spool": True}

    rows = await _rows(db)
    envelopes = [r for r in rows if r.value.startswith(b'{"envelope":')]
    # One envelope per partition the batch's people fall in (of the 3 `migrate` makes: the
    # broker never answered), each where its key goes, the calls in order.
    assert len(envelopes) == len({partition_for(f"u-b-{n}".encode(), 3) for n in range(8)}) > 1
    assert all(r.partition == partition_for(r.key, 3) for r in rows)
    in_envelopes = [m for r in envelopes for m in _message_ids(r.value)]
    assert sorted(in_envelopes) == [f"b-{n}" for n in range(8)]
    rest = rows[len(envelopes) :]
    assert _message_ids(rest[0].value) == ["t-1"]
    assert len(rest) == 3  # the track call, then one message per contact
    assert SPOOL_MESSAGES.labels("spooled")._value.get() - spooled == len(rows)
    assert await scalar(db, "SELECT count(*) FROM events") == 0


async def test_a_full_spool_answers_503_and_writes_nothing(
    settings: Settings, db: AsyncEngine, write_key: str
) -> None:
    # 40 calls of 28 KB: more than the spool's 1 MB in one request.
    big = _batch("big", 40)
    for call in big["batch"]:
        call["properties"] = {"pad": "x" * 28_000}
    async with serving(create_app(_brokerless(settings, spool_max_mb=1))) as client:
        small = await client.post("/v1/batch", json=_batch("s", 2), headers=basic(write_key))
        refused = await client.post("/v1/batch", json=big, headers=basic(write_key))
    assert small.status_code == 200, small.text
    assert refused.status_code == 503
    assert int(refused.headers["retry-after"]) > 0
    assert refused.json()["type"].endswith("broker-unavailable")
    assert sorted(m for r in await _rows(db) for m in _message_ids(r.value)) == ["s-0", "s-1"]


@pytest.fixture
async def nowhere_pool(settings: Settings) -> AsyncIterator[Any]:
    down = Settings.model_validate(
        {
            **settings.model_dump(),
            "database_url": f"postgresql://postgres@127.0.0.1:{free_port()}/x",
        }
    )
    pool = await create_pool(down, min_size=0)
    yield pool
    await pool.close()


async def test_without_broker_and_database_a_publish_fails_as_before(
    settings: Settings, nowhere_pool: Any
) -> None:
    brokerless = _brokerless(settings)
    publisher = Publisher(brokerless, Spool(nowhere_pool, brokerless))
    try:
        with pytest.raises(BrokerUnavailable) as raised:
            await publisher.publish([(b"k", b"v")])
        assert raised.value.headers == {"Retry-After": "5"}
        # Spooling: the next request does not wait on the broker, and fails as well.
        assert publisher.spooling
        with pytest.raises(BrokerUnavailable):
            await publisher.publish([(b"k", b"w")])
    finally:
        await publisher.close()


def test_a_message_keeps_its_partition_while_it_exists_else_follows_its_key() -> None:
    rows = [(1, b"a", b"1"), (5, b"b", b"2")]
    assert placed(rows, 6) == rows
    assert placed(rows, 3) == [(1, b"a", b"1"), (partition_for(b"b", 3), b"b", b"2")]


class _Gate:
    """A TCP port in front of the broker: closed to traffic (it accepts connections and
    never answers, as a hung broker) until opened, then a plain forwarder."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self.open = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not self.open:
                while await reader.read(65536):
                    pass
                return
            up_reader, up_writer = await asyncio.open_connection(*self._target)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            writer.close()

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def test_spooling_skips_the_broker_until_the_relay_drains_the_spool_in_order(
    settings: Settings, db: AsyncEngine
) -> None:
    async with _behind_a_hung_gate(settings) as hung:
        real, gate, publisher, relay = hung.real, hung.gate, hung.publisher, hung.relay
        started = time.monotonic()
        await publisher.publish([(b"k", b"first")])  # waits out the timeout, then spools
        waited = time.monotonic() - started
        assert waited >= 1.0
        assert publisher.spooling
        started = time.monotonic()
        await publisher.publish([(b"k", b"second")])  # straight to the spool
        assert time.monotonic() - started < 0.5
        with pytest.raises(BrokerUnavailable):  # the broker still hangs: rows stay
            await relay.run_once()
        assert [r.value for r in await _rows(db)] == [b"first", b"second"]
        assert publisher.spooling

        gate.open = True
        assert await relay.run_once() == 2
        assert not publisher.spooling
        assert await _rows(db) == []
        await publisher.publish([(b"k", b"third")])  # to the broker again
        assert await _rows(db) == []
        assert await _partition(real, partition_for(b"k", 3), 3) == [b"first", b"second", b"third"]


@pytest.mark.pipeline
async def test_the_relay_drains_a_dead_replicas_spool_and_every_event_is_stored_once(
    settings: Settings, db: AsyncEngine, write_key: str, pipeline: Pipeline
) -> None:
    """A request both on the broker and in the spool (its ack was lost) is stored once; so
    is one only in the spool. The replica that spooled them is gone: another relays them."""
    twice, once = _batch("twice", 6), _batch("once", 4)
    single = {"messageId": "single-1", "userId": "grace", "event": "Signed Up"}
    duplicates = PIPELINE_EVENTS.labels("duplicate")._value.get()
    quick = settings.model_copy(update={"spool_check_interval_s": 0.2})
    async with serving(create_app(quick)) as live:
        assert (await live.post("/v1/batch", json=twice, headers=basic(write_key))).is_success
        async with serving(create_app(_brokerless(settings))) as dead:
            for path, body in (("/v1/batch", twice), ("/v1/batch", once), ("/v1/track", single)):
                answer = await dead.post(path, json=body, headers=basic(write_key))
                assert answer.status_code == 200, answer.text
        assert await _rows(db)

        async def drained() -> bool:
            return not await _rows(db)

        await wait_until(drained, timeout=30)

        async def all_stored() -> bool:
            stored = await scalar(db, "SELECT count(*) FROM events")
            seen_twice = PIPELINE_EVENTS.labels("duplicate")._value.get() - duplicates >= 6
            return stored == 11 and seen_twice

        await wait_until(all_stored, timeout=60)
    ids = await scalar(db, "SELECT array_agg(message_id ORDER BY message_id) FROM events")
    assert ids == sorted(
        [f"twice-{n}" for n in range(6)] + [f"once-{n}" for n in range(4)] + ["single-1"]
    )


async def _partition(settings: Settings, partition: int, count: int) -> list[bytes]:
    """The first ``count`` values of the topic's ``partition``, in the broker's order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        where = TopicPartition(settings.kafka_topic, partition)
        consumer.assign([where])
        await consumer.seek_to_beginning(where)
        values: list[bytes] = []

        async def enough() -> bool:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                values.extend(r.value for r in records if r.value is not None)
            return len(values) >= count

        await wait_until(enough, timeout=30)
        return values[:count]
    finally:
        await consumer.stop()


class _Hung:
    """A spooling publisher and its relay, on their own topic (``real``), reaching the broker
    through a closed :class:`_Gate` (open it for the broker back), with a publish timeout of
    1 s."""

    def __init__(self, real: Settings, gate: _Gate, hung: Settings, pool: Any) -> None:
        self.real, self.gate = real, gate
        self.spool = Spool(pool, hung)
        self.publisher = Publisher(hung, self.spool)
        self.relay = Relay(self.publisher, self.spool, pool, hung)


@contextlib.asynccontextmanager
async def _behind_a_hung_gate(settings: Settings) -> AsyncIterator[_Hung]:
    real = await _own_topic(settings)
    gate = _Gate(settings.kafka_bootstrap_servers or "")
    hung = real.model_copy(
        update={"kafka_bootstrap_servers": await gate.start(), "kafka_publish_timeout_s": 1.0}
    )
    pool = await create_pool(settings)
    stack = _Hung(real, gate, hung, pool)
    try:
        yield stack
    finally:
        await stack.publisher.close()
        await pool.close()
        await gate.close()


async def _own_topic(settings: Settings) -> Settings:
    topic = f"spool-{uuid.uuid4().hex[:8]}"
    own = settings.model_copy(
        update={"kafka_topic": topic, "kafka_dead_letter_topic": f"{topic}-dlq"}
    )
    await ensure_topics(own)
    return own


async def test_a_request_spooled_while_the_relay_ends_spooling_stays_ahead_of_the_next(
    settings: Settings, db: AsyncEngine
) -> None:
    """The relay caught up and ends spooling mode while a request's spool write is still
    on its way: that request's messages are in the spool once it is answered, so the
    person's next request, sent after that answer, must not reach the broker before them."""
    async with _behind_a_hung_gate(settings) as hung:
        real, gate, publisher, relay = hung.real, hung.gate, hung.publisher, hung.relay
        await publisher.start()  # the broker hangs: the process starts spooling
        assert publisher.spooling
        gate.open = True
        async with db.connect() as holder:
            # Writers of the spool wait (an INSERT's lock conflicts with SHARE); readers,
            # and the relay's FOR UPDATE, do not.
            await holder.exec_driver_sql("BEGIN")
            await holder.exec_driver_sql("LOCK TABLE spool IN SHARE MODE")
            second = asyncio.create_task(publisher.publish([(b"k", b"second")]))
            await asyncio.sleep(0.3)
            assert not second.done()
            # The relay finds the spool empty, with the broker back.
            relaying = asyncio.create_task(relay.run_once())
            await asyncio.sleep(0.5)
            await holder.exec_driver_sql("COMMIT")
        await second  # answered: "second" is committed to the spool
        await relaying
        await publisher.publish([(b"k", b"third")])
        await relay.run_once()
        assert await _rows(db) == []
        assert await _partition(real, partition_for(b"k", 3), 2) == [b"second", b"third"]


async def test_relays_of_several_processes_publish_a_partitions_messages_in_order(
    settings: Settings, db: AsyncEngine
) -> None:
    """Two API processes' relays drain one spool: one holds the oldest chunk and its broker
    hangs (it rolls back); the other must not publish the newer messages ahead of it."""
    real = await _own_topic(settings)
    gate = _Gate(settings.kafka_bootstrap_servers or "")
    hung = real.model_copy(
        update={"kafka_bootstrap_servers": await gate.start(), "kafka_publish_timeout_s": 1.0}
    )
    pools = [await create_pool(settings), await create_pool(settings)]
    publishers = [Publisher(hung, Spool(pools[0], hung)), Publisher(real, Spool(pools[1], real))]
    stuck, working = (
        Relay(publisher, Spool(pool, s), pool, s)
        for publisher, pool, s in zip(publishers, pools, (hung, real), strict=True)
    )
    values = [str(n).encode() for n in range(CHUNK + 50)]
    try:
        async with pools[0].acquire() as conn:
            await repository.insert(conn, [(partition_for(b"k", 3), b"k", v) for v in values])
        failing = asyncio.create_task(stuck.run_once())

        async def held() -> bool:  # the stuck relay holds the oldest chunk
            async with pools[1].acquire() as conn, conn.transaction():
                free = await conn.fetchval(
                    "SELECT count(*) FROM (SELECT 1 FROM spool FOR UPDATE SKIP LOCKED) s"
                )
            return bool(free == 50)

        await wait_until(held, timeout=5, interval=0.02)
        await working.run_once()
        with pytest.raises(BrokerUnavailable):
            await failing
        await working.run_once()
        assert await _rows(db) == []
        assert await _partition(real, partition_for(b"k", 3), len(values)) == values
    finally:
        for publisher in publishers:
            await publisher.close()
        for pool in pools:
            await pool.close()
        await gate.close()


async def test_a_process_started_with_a_spool_sends_new_requests_behind_it(
    settings: Settings, db: AsyncEngine, write_key: str
) -> None:
    """A deploy during an outage: the old process spooled a person's event; the new one
    starts with the broker back. The person's next event must not overtake the spooled one."""
    real = await _own_topic(settings)
    first = {"messageId": "m-1", "userId": "ada", "event": "Product Viewed"}
    second = {"messageId": "m-2", "userId": "ada", "event": "Order Completed"}
    async with serving(create_app(_brokerless(settings))) as old:
        answer = await old.post("/v1/track", json=first, headers=basic(write_key))
        assert answer.status_code == 200, answer.text
    [row] = await _rows(db)
    assert real.spool_check_interval_s == 5  # the relay's first look is not at once
    async with serving(create_app(real)) as new:
        answer = await new.post("/v1/track", json=second, headers=basic(write_key))
        assert answer.status_code == 200, answer.text
        values = await _partition(real, row.partition, 2)
    assert [_message_ids(v) for v in values] == [["m-1"], ["m-2"]]


async def test_readiness_answers_at_once_while_spooling_against_a_hung_broker(
    settings: Settings, db: AsyncEngine, write_key: str
) -> None:
    """A broker that accepts connections and never answers: the API spools, and /readyz
    must say so within an orchestrator's probe timeout (Kubernetes': 1 s by default), not
    after the broker's (here 1 s, by default 5 s), or every replica is taken out of service
    while the spool could take the events."""
    gate = _Gate(settings.kafka_bootstrap_servers or "")
    hung = settings.model_copy(
        update={"kafka_bootstrap_servers": await gate.start(), "kafka_publish_timeout_s": 1.0}
    )
    try:
        async with serving(create_app(hung)) as client:
            track = {"messageId": "r-1", "userId": "ada", "event": "Product Viewed"}
            answer = await client.post("/v1/track", json=track, headers=basic(write_key))
            assert answer.status_code == 200, answer.text
            for _ in range(3):
                started = time.monotonic()
                ready = await client.get("/readyz")
                assert time.monotonic() - started < 0.5
                assert ready.status_code == 200
                assert ready.json()["checks"] == {"database": True, "broker": False, "spool": True}
    finally:
        await gate.close()
