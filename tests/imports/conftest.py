"""Shared channel fixtures (see tests/ingest/fixtures.py)."""

from tests.ingest.fixtures import channel_settings, client, http_base_url, make_source, topic

__all__ = ["channel_settings", "client", "http_base_url", "make_source", "topic"]
