"""Settings refuse what would break the service, with a message naming the variable."""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

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


def _production(**overrides: Any) -> Settings:
    return Settings(
        environment="production",
        database_url="postgresql://db.internal/percorso",
        kafka_bootstrap_servers="kafka.internal:9092",
        secret_key=secrets.token_urlsafe(32),
        **overrides,
    )


def test_production_needs_the_replication_factor_of_its_topics_said(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Left at 1, each topic lives on one broker, and losing it loses acknowledged events."""
    with pytest.raises(ValidationError, match="production needs PERCORSO_KAFKA_REPLICATION"):
        _production()
    assert _production(kafka_replication_factor=1).kafka_replication_factor == 1  # said so
    monkeypatch.setenv("PERCORSO_KAFKA_REPLICATION_FACTOR", "3")
    assert _production().kafka_replication_factor == 3
    monkeypatch.delenv("PERCORSO_KAFKA_REPLICATION_FACTOR")
    assert Settings(environment="development").kafka_replication_factor == 1


def test_the_readme_configuration_table_lists_every_setting_and_no_other() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    table = readme.split("\n## Configuration\n")[1].split("\n## ")[0]
    # The first cell of each row names one variable, or several (`HTTP_HOST` / `HTTP_PORT`).
    listed = {
        name
        for row in table.splitlines()
        if row.startswith("| `")
        for name in re.findall(r"`([A-Z0-9_]+)`", row.split("|")[1])
    }
    assert listed == {name.upper() for name in Settings.model_fields}


@pytest.mark.parametrize(
    ("name", "most", "default"),
    [
        ("http_head_timeout_s", 300, 60),
        ("http_body_timeout_s", 300, 60),
        ("http_request_timeout_s", 3600, 300),
        ("http_send_timeout_s", 3600, 60),
        ("http_linger_timeout_s", 60, 2),
    ],
)
def test_http_timeouts_out_of_their_range_are_refused(
    name: str, most: int, default: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The head's no longer than the whole request's, as the request timeout tries.
    monkeypatch.setenv("PERCORSO_HTTP_HEAD_TIMEOUT_S", "0.1")
    monkeypatch.setenv("PERCORSO_HTTP_REQUEST_TIMEOUT_S", "300")
    variable = f"PERCORSO_{name.upper()}"
    for value in ("0", "0.05", "-1", f"{most}.5", "inf"):
        monkeypatch.setenv(variable, value)
        with pytest.raises(ValidationError, match=name):
            Settings()
    for value in ("0.1", str(most)):
        monkeypatch.setenv(variable, value)
        assert getattr(Settings(), name) == float(value)
    monkeypatch.delenv("PERCORSO_HTTP_HEAD_TIMEOUT_S")
    monkeypatch.delenv("PERCORSO_HTTP_REQUEST_TIMEOUT_S")
    monkeypatch.delenv(variable, raising=False)
    assert getattr(Settings(), name) == default


def test_a_request_timeout_shorter_than_the_head_timeout_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PERCORSO_HTTP_HEAD_TIMEOUT_S", "90")
    monkeypatch.setenv("PERCORSO_HTTP_REQUEST_TIMEOUT_S", "60")
    with pytest.raises(ValidationError, match="at least PERCORSO_HTTP_HEAD_TIMEOUT_S"):
        Settings()
    monkeypatch.setenv("PERCORSO_HTTP_REQUEST_TIMEOUT_S", "90")
    assert Settings().http_request_timeout_s == 90


def test_previous_secret_keys_are_read_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    old, older, new = (secrets.token_urlsafe(32) for _ in range(3))
    monkeypatch.setenv("PERCORSO_SECRET_KEY", new)
    monkeypatch.setenv("PERCORSO_SECRET_KEY_PREVIOUS", f" {old},{older} ,")
    settings = Settings()
    assert settings.previous_secret_keys == (old, older)
    assert old not in repr(settings)
    assert older not in str(settings.model_dump())
    monkeypatch.delenv("PERCORSO_SECRET_KEY_PREVIOUS")
    assert Settings().previous_secret_keys == ()
    # The current key among the previous ones: the rotation did not happen.
    monkeypatch.setenv("PERCORSO_SECRET_KEY_PREVIOUS", f"{old},{new}")
    with pytest.raises(ValidationError, match="holds PERCORSO_SECRET_KEY itself") as refused:
        Settings()
    assert "input_value" not in str(refused.value)  # which would quote the keys' ends


def test_production_refuses_a_weak_previous_secret_key() -> None:
    """An old key still verifies links: a guessable one would forge them."""
    strong = secrets.token_urlsafe(32)
    for weak in ("changeme", f"{strong},short", "a" * 40):
        with pytest.raises(ValidationError, match="weak key in PERCORSO_SECRET_KEY_PREVIOUS"):
            _production(kafka_replication_factor=3, secret_key_previous=weak)
    settings = _production(kafka_replication_factor=3, secret_key_previous=strong)
    assert settings.previous_secret_keys == (strong,)
