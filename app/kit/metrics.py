"""Prometheus metrics. Each process (API, consumer) exposes its own registry's values."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_ACCEPTED = Counter(
    "percorso_ingest_events_accepted_total",
    "Events accepted: acknowledged by the broker, or committed to the spool.",
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
SPOOL_MESSAGES = Counter(
    "percorso_spool_messages_total",
    "Messages committed to the spool while the broker did not acknowledge (step=spooled),"
    " and published from it by this process's relay (step=relayed).",
    ["step"],
)
SPOOL_REFUSED = Counter(
    "percorso_spool_refused_total",
    "Requests the spool could not take, answered 503, by reason (full, database).",
    ["reason"],
)
SPOOL_DEPTH = Gauge(
    "percorso_spool_depth_messages", "Messages in the spool (every replica's), last measured."
)
SPOOL_BYTES = Gauge("percorso_spool_bytes", "Bytes of keys and values in the spool, last measured.")
SPOOLING = Gauge(
    "percorso_spool_mode",
    "1 while this process sends new messages to the spool, not to the broker.",
)
