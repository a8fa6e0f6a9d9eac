"""Opening batch envelopes in worker processes, beside the consumer.

Building an envelope's touchpoints (:func:`app.ingest.envelope.open_envelope`) is Python
work of tens of microseconds an event, the consumer process's largest single cost. For a
backlog (the handler decides, ``_WORKER_MIN_BYTES``), a worker process builds them
instead, while the consumer stores the previous ones, and hands them back as touchpoint
JSON, which the consumer decodes in a few microseconds an event: the consumer process
spends about a third less per event, which counts wherever it is the pipeline's limit.
The worker also encodes each touchpoint's own columns of its ``events`` row
(:func:`app.timeline.writes.own_fields`), which the consumer would otherwise encode when
it stores the event.

The touchpoints are the ones the consumer would have built itself: the same function
builds them, and the JSON round trip is the canonical wire format's. A worker that dies
fails the batch (it is not acknowledged, and is redelivered to a consumer that starts
again); :class:`app.ingest.envelope.InvalidEnvelope` comes back as raised.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
from concurrent.futures import ProcessPoolExecutor

import msgspec

from app.identity.identifiers import IdentityConfig
from app.ingest import envelope
from app.kit import gc
from app.timeline.writes import own_fields
from app.touchpoint import Touchpoint

# The touchpoints, the calls that could not be built (``(call as sent, reason)``), and the
# touchpoints' `own_fields` when encoded ahead (None: the consumer encodes them).
Opened = tuple[list[Touchpoint], list[envelope.Failed], list[bytes] | None]

_TOUCHPOINTS = msgspec.json.Decoder(list[Touchpoint])
_ENCODER = msgspec.json.Encoder()
_identity = IdentityConfig()  # in a worker: the consumer's, set by _start


class EnvelopeOpener:
    """A pool of ``workers`` processes opening envelopes; :meth:`close` it when done.
    Processes start on first use ("spawn": the consumer runs threads and an event loop,
    which a fork would copy mid-flight)."""

    def __init__(self, identity: IdentityConfig, workers: int = 1) -> None:
        self._pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            initargs=(identity,),
        )

    async def open_all(self, values: list[bytes]) -> list[Opened | envelope.InvalidEnvelope]:
        """:func:`app.ingest.envelope.open_envelope` of each of ``values``, in a worker
        (many at once: each hand-over costs the consumer's threads a few hundred µs),
        or the :class:`app.ingest.envelope.InvalidEnvelope` it raised."""
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(self._pool, _open_all, values)
        return [
            r if isinstance(r, envelope.InvalidEnvelope) else (_TOUCHPOINTS.decode(r[0]), *r[1:])
            for r in results
        ]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _start(identity: IdentityConfig) -> None:
    global _identity
    _identity = identity
    # Ctrl-C reaches the whole process group: the consumer stops, then closes the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.tune()  # an envelope's objects die with it: rare collections, as in the consumer


_Result = tuple[bytes, list[envelope.Failed], list[bytes] | None] | envelope.InvalidEnvelope


def _open_all(values: list[bytes]) -> list[_Result]:
    results: list[_Result] = []
    for value in values:
        try:
            touchpoints, failed = envelope.open_envelope(value, _identity)
        except envelope.InvalidEnvelope as exc:
            results.append(exc)
            continue
        try:
            rows: list[bytes] | None = [own_fields(tp) for tp in touchpoints]
        except (ValueError, TypeError):
            rows = None  # the consumer encodes them, and meets the error where it did
        results.append((_ENCODER.encode(touchpoints), failed, rows))
    return results
