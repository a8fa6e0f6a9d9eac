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
