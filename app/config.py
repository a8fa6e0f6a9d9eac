"""Settings: one class, read from the environment with the ``PERCORSO_`` prefix."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.identity.identifiers import IdentityConfig
from app.kit.urls import absolute_http_url

Environment = Literal["development", "test", "production"]


def _base_url(value: str) -> str:
    if (parts := absolute_http_url(value, "a base URL")).query or parts.fragment:
        raise ValueError("a base URL has no query or fragment")
    return value


class SettingMissing(RuntimeError):
    """A setting the command needs is not set: ``percorso`` says so in one line (exit 2)."""


class Settings(BaseSettings):
    # A refused setting's error never shows the input: pydantic's would quote the settings
    # read (truncated, but a secret key's first or last characters included).
    model_config = SettingsConfigDict(
        env_prefix="PERCORSO_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    environment: Environment = "development"
    # Where embedded servers keep their data (`percorso dev`).
    data_dir: Path = Path(".percorso")

    # PostgreSQL. Unset in development: `percorso dev` starts an embedded server.
    database_url: str | None = None
    db_pool_size: int = Field(default=10, ge=1, le=200)

    # Kafka. Unset in development: `percorso dev` starts the embedded Tansu broker.
    kafka_bootstrap_servers: str | None = None
    kafka_topic: str = "touchpoints"
    kafka_dead_letter_topic: str = "touchpoints.dead-letter"
    kafka_partitions: int = Field(default=6, ge=1)
    # Replicas of each topic `percorso migrate` creates; production must say (below).
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_consumer_group: str = "pipeline"
    # Tansu (and some managed brokers) reject the idempotent producer.
    kafka_enable_idempotence: bool = False
    # How long a produced batch waits for more messages before it may be sent. The API's
    # publisher batches without it: a partition's batch fills while the one before it is on
    # its way (one produce request in flight per broker), so waiting more only adds latency.
    kafka_linger_ms: int = Field(default=0, ge=0)
    # Compression of produced batches (a consumer reads any). JSON events shrink several
    # times, so the API, the broker and the network each handle less; "none" or another
    # codec for brokers older than Kafka 2.1 (zstd). aiokafka's lz4 is its slow high level.
    kafka_compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "zstd"
    # zstd's level for produced batches, as the Java client's compression.zstd.level (same
    # range; its default is 3): lower is faster, higher smaller. Events shrink as much at 1
    # as at 3, for about a quarter less of the API's compression time (README).
    kafka_zstd_level: int = Field(default=1, ge=-131_072, le=22)
    kafka_publish_timeout_s: float = Field(default=5.0, gt=0)
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1000)
    kafka_heartbeat_interval_ms: int = Field(default=3_000, ge=100)

    # The spool (app/spool): while the broker does not acknowledge, the API commits the
    # messages of each request it accepts to PostgreSQL, and a relay publishes them once the
    # broker is back. Off, such requests get 503 with Retry-After, as the broker's refusal.
    spool_enabled: bool = True
    # Most megabytes of messages (keys and values, before PostgreSQL compresses them) the
    # spool holds, all replicas together; requests beyond get the 503. It keeps a long
    # outage from filling the database's disk (README).
    spool_max_mb: int = Field(default=1024, ge=1, le=1_048_576)
    # Seconds between the relay's looks at the spool (rows another replica left, one that
    # died), and between its attempts while the broker is still down.
    spool_check_interval_s: float = Field(default=5.0, ge=0.05, le=300.0)

    # Pipeline batching.
    pipeline_max_batch: int = Field(default=10_000, ge=1, le=50_000)
    # Events stored together (a run; batch envelopes hold up to 2,500 each): larger runs
    # share more per-customer work, at the cost of memory (README).
    pipeline_run_events: int = Field(default=50_000, ge=1, le=100_000)
    # A batch is split into this many parts that share no customer, each stored in its own
    # transaction, side by side (one database connection each).
    pipeline_batch_parts: int = Field(default=2, ge=1, le=8)
    # Worker processes that build batch envelopes' touchpoints beside the consumer (the
    # consumer's largest cost), for a consumer with cores to spare; 0 (the default) builds
    # them in the consumer process (README).
    pipeline_decode_workers: int = Field(default=0, ge=0, le=16)
    pipeline_poll_timeout_ms: int = Field(default=200, ge=1)
    # The longest a fetch waits on the broker for new records. Kafka answers as soon as there
    # are any; Tansu answers late (produce to fetched, measured: 214 ms at aiokafka's default
    # of 500 ms, 14 ms at 100, 2 ms at 50), which went straight into accept-to-visible.
    pipeline_fetch_max_wait_ms: int = Field(default=50, ge=1, le=10_000)
    pipeline_metrics_port: int | None = None

    # HTTP.
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=1, le=65535)
    # Processes `percorso api` runs (uvicorn workers sharing the port). One event loop uses
    # one core; on a dedicated host, one per core. Per-process state (rate-limit buckets,
    # write-key cache, Kafka producer) is per worker: each worker enforces 1/N of a rate.
    http_workers: int = Field(default=1, ge=1, le=64)
    # Most bytes of a request's line and headers (431, or 414 for the request line, beyond).
    # A pixel call carries a whole event (up to 32 KB) base64'd in its URL (README).
    http_max_header_bytes: int = Field(default=64 * 1024, ge=4 * 1024, le=1024 * 1024)
    # Seconds a request's head may take to arrive, from its first byte (a new connection's
    # first request: from the connection), and a request's body between two reads; 408
    # beyond. nginx's and Node's 60 s: room for any honest client (README).
    http_head_timeout_s: float = Field(default=60.0, ge=0.1, le=300.0)
    http_body_timeout_s: float = Field(default=60.0, ge=0.1, le=300.0)
    # Seconds a request may take to arrive whole, head and body, from its first byte (408
    # beyond): a body dripped a byte a minute kept the body timeout from ever firing. Node's
    # 300 s: the largest body the API takes (a 4,224 KB batch) at 115 kbit/s (README).
    http_request_timeout_s: float = Field(default=300.0, ge=0.1, le=3600.0)
    # Seconds an answer may stay stuck behind a client that does not read it (the write
    # buffer full, not draining) before the connection is dropped. nginx's send_timeout.
    http_send_timeout_s: float = Field(default=60.0, ge=0.1, le=3600.0)
    # Seconds a connection the server closes while a request is still arriving (a 408, a
    # refused head, an answer before the body's end with Connection: close) goes on reading,
    # and dropping, what the client still sends, once the answer is out: closed at once, the
    # kernel would reset it, and the client see a reset in place of the answer. nginx's and
    # Apache's lingering close (README).
    http_linger_timeout_s: float = Field(default=2.0, ge=0.1, le=60.0)
    # The longest one analytics query may run (PostgreSQL's statement_timeout, set for the
    # request's transaction): a dashboard asking for too much gets a 503, and the database
    # is not pinned by it.
    analytics_statement_timeout_ms: int = Field(default=10_000, ge=100, le=600_000)
    # The longest a customer's export may stream (GET /v1/customers/{id}/export), however
    # slowly its client reads: it holds a database connection and a snapshot (which keeps
    # VACUUM from cleaning up behind it) all along. Cut beyond it (no `end` line).
    export_timeout_s: float = Field(default=900.0, ge=1.0, le=86_400.0)
    # Seconds a verified write key or read token is trusted before it is checked again.
    auth_cache_ttl_s: float = Field(default=30.0, ge=0)

    # Tracking API. The rate limit is per source and per API replica (in-process token
    # bucket): events per second, with bursts of up to `ingest_rate_burst_s` seconds' worth.
    # A source's `rate_limit_per_s` setting overrides the rate.
    ingest_rate_limit_per_s: float = Field(default=1_000.0, gt=0)
    ingest_rate_burst_s: float = Field(default=2.0, gt=0)
    # A /v1/batch whose every call is plainly valid goes to the broker whole, as one batch
    # envelope, and the pipeline builds its touchpoints (app/ingest/envelope.py). Turn off
    # while consumers older than envelopes still run: they would dead-letter them.
    ingest_batch_envelopes: bool = True
    # Comma-separated addresses/CIDRs of reverse proxies whose X-Forwarded-For is believed
    # (e.g. "10.0.0.0/8,127.0.0.1"). Empty: the peer address is the client.
    trusted_proxies: str = ""
    # Server secret: email tracking tokens are signed with keys derived from it per source.
    # Required in production; development and tests keep a generated one in data_dir.
    secret_key: SecretStr | None = None
    # Secret keys replaced by PERCORSO_SECRET_KEY (comma-separated): links signed with one
    # still verify, so a rotation does not break the emails already sent; new links are
    # signed with the current key only. Drop an old key once its emails no longer matter.
    secret_key_previous: SecretStr | None = None
    # Public base URL of the API (http or https): for the links `percorso email link|pixel`
    # print, and where the settings analytics.js loads send browsers.
    public_url: Annotated[str, AfterValidator(_base_url)] | None = None
    # A click this soon after the send time a token carries is a link scanner's.
    email_scanner_window_s: float = Field(default=2.0, ge=0)

    # Identity.
    default_phone_region: str = "IT"
    blocked_identifier_values: str = ""
    merge_limits: str | None = None
    merge_priority: str | None = None

    # Journey model: a preset name or a path to a TOML/YAML file.
    journey_model: str = "default"

    # The built-in web dashboard at /dashboard/ (app/dashboard): static pages that read the
    # API with a token their user pastes in. Off, the API serves no page at all.
    dashboard_enabled: bool = True

    # Demo credentials for `percorso dev`; generated when unset.
    dev_write_key: SecretStr | None = None
    dev_read_token: SecretStr | None = None

    @model_validator(mode="after")
    def _refuse_self_feeding_dead_letters(self) -> Settings:
        # The consumer publishes dead letters to that topic: were it the one it reads, a
        # message it cannot store would come back to it, and be dead-lettered again, for ever.
        if self.kafka_dead_letter_topic == self.kafka_topic:
            raise ValueError(
                "PERCORSO_KAFKA_DEAD_LETTER_TOPIC must differ from PERCORSO_KAFKA_TOPIC"
                f" ({self.kafka_topic!r}): the pipeline would read its own dead letters"
                " back and dead-letter them again, for ever"
            )
        return self

    @model_validator(mode="after")
    def _refuse_heartbeats_slower_than_the_session(self) -> Settings:
        # The group coordinator drops a member it has not heard from for a session timeout:
        # beats that far apart would rebalance the group over and over.
        if self.kafka_heartbeat_interval_ms >= self.kafka_session_timeout_ms:
            raise ValueError(
                f"PERCORSO_KAFKA_HEARTBEAT_INTERVAL_MS ({self.kafka_heartbeat_interval_ms})"
                " must be below PERCORSO_KAFKA_SESSION_TIMEOUT_MS"
                f" ({self.kafka_session_timeout_ms}), usually a third of it or less"
            )
        return self

    @model_validator(mode="after")
    def _refuse_a_request_timeout_shorter_than_its_head(self) -> Settings:
        # A request's head is part of it: a request timeout below the head timeout would
        # answer a head still on time 408, under the other's name (Node refuses it alike).
        if self.http_request_timeout_s < self.http_head_timeout_s:
            raise ValueError(
                f"PERCORSO_HTTP_REQUEST_TIMEOUT_S ({self.http_request_timeout_s:g}) must be at"
                f" least PERCORSO_HTTP_HEAD_TIMEOUT_S ({self.http_head_timeout_s:g}): a"
                " request's head is part of the request"
            )
        return self

    @model_validator(mode="after")
    def _refuse_a_previous_key_equal_to_the_key(self) -> Settings:
        # Names the variables, never a key's value (errors are printed and logged).
        current = self.secret_key.get_secret_value() if self.secret_key else None
        if current is not None and current in self.previous_secret_keys:
            raise ValueError(
                "PERCORSO_SECRET_KEY_PREVIOUS holds PERCORSO_SECRET_KEY itself: a rotation"
                " sets a new PERCORSO_SECRET_KEY and moves the old one there"
            )
        return self

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment == "production":
            missing = [
                name
                for name, value in (
                    ("PERCORSO_DATABASE_URL", self.database_url),
                    ("PERCORSO_KAFKA_BOOTSTRAP_SERVERS", self.kafka_bootstrap_servers),
                )
                if not value
            ]
            if missing:
                raise ValueError(
                    f"production needs {', '.join(missing)}; embedded servers are for development"
                )
            # Kafka's acks=all waits for a topic's in-sync replicas only: on one, losing a
            # broker loses events the API acknowledged. The right count is the cluster's.
            if "kafka_replication_factor" not in self.model_fields_set:
                raise ValueError(
                    "production needs PERCORSO_KAFKA_REPLICATION_FACTOR: the copies of each"
                    " topic `percorso migrate` creates (3 on a cluster of three brokers or"
                    " more; 1 loses acknowledged events with a broker)"
                )
            if self.dev_write_key or self.dev_read_token:
                raise ValueError("PERCORSO_DEV_* credentials are refused in production")
            if not _strong_secret(self.secret_key):
                raise ValueError(
                    "production needs PERCORSO_SECRET_KEY: at least 32 random characters"
                    " (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
                )
            # An old key still verifies links: one that could be guessed forges them.
            if not all(_strong_secret(SecretStr(key)) for key in self.previous_secret_keys):
                raise ValueError(
                    "production refuses a weak key in PERCORSO_SECRET_KEY_PREVIOUS: each"
                    " (comma-separated) is at least 32 random characters"
                )
        return self

    @property
    def previous_secret_keys(self) -> tuple[str, ...]:
        """The keys of ``PERCORSO_SECRET_KEY_PREVIOUS``, newest first as written."""
        if self.secret_key_previous is None:
            return ()
        keys = self.secret_key_previous.get_secret_value().split(",")
        return tuple(key.strip() for key in keys if key.strip())

    @cached_property
    def sqlalchemy_url(self) -> str:
        """The database URL in the form SQLAlchemy's asyncpg dialect expects."""
        if not self.database_url:
            raise SettingMissing("PERCORSO_DATABASE_URL is not set")
        return to_asyncpg_url(self.database_url)

    @property
    def blocked_values(self) -> frozenset[str]:
        return frozenset(
            v.strip().casefold() for v in self.blocked_identifier_values.split(",") if v.strip()
        )

    def identity_config(self) -> IdentityConfig:
        """The identity settings: the API and the pipeline (which builds batch envelopes'
        touchpoints) must normalise and block identifiers alike."""
        return IdentityConfig(
            default_phone_region=self.default_phone_region,
            extra_blocked_values=self.blocked_values,
        )


_UNSAFE_SECRETS = frozenset({"changeme", "change-me", "secret", "development", "percorso"})


def _strong_secret(secret: SecretStr | None) -> bool:
    if secret is None:
        return False
    value = secret.get_secret_value()
    return len(value) >= 32 and len(set(value)) >= 8 and value.lower() not in _UNSAFE_SECRETS


def to_asyncpg_url(url: str) -> str:
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {url.split('://')[0]}://…")
