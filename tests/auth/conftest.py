"""Shared fixtures of the command tests (see tests/auth/commands.py), and the channel
fixtures (tests/ingest/fixtures.py) for an API that publishes where no pipeline reads."""

from tests.auth.commands import percorso
from tests.ingest.fixtures import channel_settings

__all__ = ["channel_settings", "percorso"]
