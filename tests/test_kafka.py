"""Topic administration: what `percorso migrate` does with the broker's answer."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.admin import NewTopic

from app.config import Settings
from app.kit import kafka


class _OneBrokerCluster:
    """An admin client of a Kafka cluster of one broker, answering as Kafka does: a topic
    of more replicas than brokers is refused, and the dead-letter topic is created by
    another process between the client's listing and its request."""

    def __init__(self, **_: Any) -> None:
        pass

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def list_topics(self) -> list[str]:
        return []

    async def create_topics(self, topics: list[NewTopic]) -> Any:
        def answer(topic: NewTopic) -> tuple[str, int, str | None]:
            if topic.replication_factor > 1:
                return (topic.name, 38, "Replication factor: 3 larger than available brokers: 1.")
            if topic.name.endswith("dead-letter"):
                return (topic.name, 36, "Topic 'touchpoints.dead-letter' already exists.")
            return (topic.name, 0, None)

        return SimpleNamespace(topic_errors=[answer(t) for t in topics])


async def test_a_topic_the_broker_refuses_to_create_fails_with_its_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kafka, "AIOKafkaAdminClient", _OneBrokerCluster)
    cluster = Settings(kafka_bootstrap_servers="kafka.internal:9092")
    with pytest.raises(
        RuntimeError,
        match=re.escape(
            "refused to create topics: touchpoints: InvalidReplicationFactorError"
            " Replication factor: 3 larger than available brokers: 1.; touchpoints.dead-letter:"
        ),
    ):
        await kafka.ensure_topics(cluster.model_copy(update={"kafka_replication_factor": 3}))
    await kafka.ensure_topics(cluster)  # one created, the other there already: no error
