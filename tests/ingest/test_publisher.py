"""The publisher's shared batches: a request that gives up (its publish timeout) leaves the
delivery of the others sharing its batch alone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.config import Settings
from app.ingest import publisher as publisher_module
from app.ingest.publisher import BrokerUnavailable, Publisher
from app.kit.kafka import create_producer


class _Builder:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    def append(self, *, key: bytes, value: bytes, timestamp: None) -> object:
        self.messages.append(value)
        return object()

    def close(self) -> None:
        pass


class _Cluster:
    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}


class _Client:
    cluster = _Cluster()


class _Producer:
    """As aiokafka's: ``send_batch`` answers, once the batch is queued, a shielded future
    of its ack, one per batch, shared by everyone who awaits the batch."""

    client = _Client()

    def __init__(self) -> None:
        self.ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.batches: list[_Builder] = []

    def create_batch(self) -> _Builder:
        self.batches.append(_Builder())
        return self.batches[-1]

    async def send_batch(self, builder: _Builder, topic: str, *, partition: int) -> Any:
        return asyncio.shield(self.ack)


async def test_a_request_that_times_out_does_not_fail_the_others_in_its_batch() -> None:
    publisher = Publisher(Settings(kafka_publish_timeout_s=0.2))
    producer = publisher._producer = _Producer()  # type: ignore[assignment]

    async def later() -> None:
        await asyncio.sleep(0.1)
        await publisher.publish([(b"k", b"second")])

    first = asyncio.ensure_future(publisher.publish([(b"k", b"first")]))
    second = asyncio.ensure_future(later())
    await asyncio.sleep(0.25)  # the first has given up; the second waits until 0.3
    producer.ack.set_result(None)
    with pytest.raises(BrokerUnavailable):
        await first
    await second  # acknowledged within its own time: no error
    assert [b.messages for b in producer.batches] == [[b"first", b"second"]]


async def test_a_request_cancelled_while_the_producer_starts_leaves_no_producer_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A port that accepts connections and never answers: a hung broker. The request waiting
    # for the producer to start is cancelled (its client went, a probe's deadline passed).
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    made: list[Any] = []

    def recording(settings: Settings) -> Any:
        made.append(create_producer(settings))
        return made[-1]

    monkeypatch.setattr(publisher_module, "create_producer", recording)
    publisher = Publisher(
        Settings(kafka_bootstrap_servers=f"127.0.0.1:{port}", kafka_publish_timeout_s=30)
    )
    request = asyncio.ensure_future(publisher.publish([(b"k", b"v")]))
    await asyncio.sleep(0.3)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    server.close()
    assert len(made) == 1
    assert made[0]._closed, "stopped, not left for the garbage collector to warn of"
    assert publisher._producer is None
