"""Settings refuse what would break the service, with a message naming the variable."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.config import Settings


def test_a_dead_letter_topic_equal_to_the_topic_is_refused() -> None:
    with pytest.raises(ValidationError, match="PERCORSO_KAFKA_DEAD_LETTER_TOPIC must differ"):
        Settings(kafka_topic="touchpoints", kafka_dead_letter_topic="touchpoints")
    # Equal to the default topic when only the dead-letter topic is set.
    with pytest.raises(ValidationError, match="'touchpoints'"):
        Settings(kafka_dead_letter_topic="touchpoints")
    assert Settings(kafka_topic="events").kafka_dead_letter_topic == "touchpoints.dead-letter"


def test_heartbeats_as_far_apart_as_the_session_timeout_are_refused() -> None:
    for interval in (10_000, 12_000):
        with pytest.raises(ValidationError, match=r"HEARTBEAT_INTERVAL_MS .* must be below"):
            Settings(kafka_session_timeout_ms=10_000, kafka_heartbeat_interval_ms=interval)
    with pytest.raises(ValidationError, match=r"\(3000\).*\(2000\)"):
        Settings(kafka_session_timeout_ms=2_000)  # the default interval is 3,000 ms
    assert Settings(kafka_session_timeout_ms=6_000, kafka_heartbeat_interval_ms=2_000)
