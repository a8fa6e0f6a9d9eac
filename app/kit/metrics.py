"""Prometheus metrics. Each process (API, consumer) exposes its own registry's values."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EVENTS_ACCEPTED = Counter(
    "percorso_ingest_events_accepted_total", "Events acknowledged by the broker."
)
EVENTS_REJECTED = Counter("percorso_ingest_events_rejected_total", "Events refused at ingest.")
PIPELINE_EVENTS = Counter(
    "percorso_pipeline_events_total", "Events the pipeline handled, by outcome.", ["outcome"]
)
PIPELINE_BATCH_SECONDS = Histogram(
    "percorso_pipeline_batch_seconds",
    "Time from the start of a batch until every event of it is stored.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PIPELINE_RETRIES = Counter(
    "percorso_pipeline_retries_total",
    "Batch transactions retried, by reason (deadlock, serialization, stale_read).",
    ["reason"],
)
