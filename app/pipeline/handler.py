"""One batch of records → one Postgres transaction per independent part.

decode (a batch envelope into its touchpoints, built as the API builds them, ahead in a
worker process when there is an opener, `app.pipeline.opener`, which also encodes their
timeline rows' own columns; a single touchpoint's are encoded as it is decoded) → dedupe
(source, message_id) and drop the events of suppressed identifiers → resolve identity
(locking the customers) → assign stages → insert new customers (with their final profile)
and write the identity graph → write timeline → journey → update the known profiles →
record dead letters. A batch is stored in runs of about ``max_events`` events (the first
two a quarter and a half of that, unless a run of the batch before is still being
stored), one after the other, each while the next is decoded, and the last while the
caller's next batch is (:meth:`BatchHandler.begin`); a large run is first split into
parts that share no customer (`app.identity.service.independent_parts`), stored side by
side. The caller commits Kafka offsets only once the batch's outcome is in (every part
has committed by then).

Guarantees:
* all-or-nothing per part; a retryable failure (deadlock, serialization, stale read) is
  retried with backoff. Should one part fail for good, the batch is not acknowledged: its
  redelivery skips what the other parts stored;
* progress however busy the other consumers are: every transaction holds a shared advisory
  lock, and from the third attempt a transaction takes it exclusively and so runs alone
  (with several consumers, a large batch nearly always meets another one's merge, and
  without this could lose every retry, which stopped the consumer);
* a message that can never be stored (undecodable, or rejected by the database) is isolated
  and dead-lettered with its reason, and the rest of the batch is stored;
* an event carrying a suppressed identifier (app.suppressions) is dropped: neither stored
  nor dead-lettered, only counted (``outcome="suppressed"``). Exactly as the list stands
  when its transaction takes the writers' lock: an erasure or a change of the list holds
  that lock exclusively, so it comes wholly before or wholly after each transaction;
* an event already stored (same source and message id) is skipped, so redelivery after a
  crash stores nothing twice; so is a dead letter already stored (same origin,
  `app.pipeline.deadletter`), and the outcome names it again only until the caller has
  published it (:meth:`BatchHandler.mark_published`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import asyncpg

from app.customers.writes import ProfileDelta, apply_deltas, insert_customers
from app.identity import service as identity
from app.identity.identifiers import IdentityConfig
from app.identity.policy import MergePolicy
from app.ingest import envelope
from app.journey import service as journey
from app.journey.model import JourneyModel
from app.kit.locks import WRITERS_LOCK
from app.kit.metrics import PIPELINE_EVENTS, PIPELINE_RETRIES
from app.pipeline.deadletter import DeadLetter, insert_dead_letters, mark_published
from app.pipeline.opener import EnvelopeOpener, Opened
from app.suppressions import repository as suppressions
from app.suppressions.service import keys_of as suppression_keys
from app.timeline.writes import STORED_KEYS, insert_events, own_fields, stored_or_suppressed
from app.touchpoint import InvalidTouchpoint, Touchpoint

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
# From this attempt a transaction runs alone (see the module docstring).
ALONE_FROM_ATTEMPT = 3
# Every statement of the transaction looks rows up by key, for far fewer keys than the table
# has rows: the plan to want is an index probe per key. Without statistics (a table filling
# since the last ANALYZE), Postgres assumes 200 distinct values per column, so it expects
# each merged customer to own a large share of `events` and scans the whole table instead
# (bench.handler: every merge UPDATE, 22 of 22 plans; with this, none, and the batch
# statements' summed time 6.06-6.42 s per 100,000 events against 6.51-7.16). Set for the
# transaction only (`SET LOCAL`); a statement with no index to use still scans.
_NO_SEQSCAN = "set_config('enable_seqscan', 'off', true)"
_BESIDE_OTHERS = f"SELECT pg_advisory_xact_lock_shared($1), {_NO_SEQSCAN}"
_ALONE = f"SELECT pg_advisory_xact_lock($1), {_NO_SEQSCAN}"
# Smaller batches go in one transaction: splitting costs a round trip.
SPLIT_MIN = 1_000
# Touchpoints decoded between two chances for the run being stored to go on (a few ms).
_YIELD_EVERY = 100
# Bytes of envelopes an opener works on ahead of the handler (about a run's worth), and
# handed to a worker at once.
_AHEAD_BYTES = 8 * 1024 * 1024
_CHUNK_BYTES = 1024 * 1024
# A batch with fewer bytes of envelopes than this (about 10,000 events) opens them in
# process, opener or not: a worker pays off for a backlog, but each hand-over waits on two
# threads and a process to be scheduled, which on a busy machine put tens of ms on every
# small batch (make bench, accept to visible at 2,000 events/s: p50 59-85 -> 137-157 ms,
# p95 168-182 -> 388-446 with every batch opened in the worker).
_WORKER_MIN_BYTES = _AHEAD_BYTES
_RETRY_REASON: dict[type[Exception], str] = {
    asyncpg.DeadlockDetectedError: "deadlock",
    asyncpg.SerializationError: "serialization",
    identity.StaleRead: "stale_read",
}
_RETRYABLE = tuple(_RETRY_REASON)
# Errors caused by a message's content: retrying the same message cannot succeed. Besides
# values the database refuses and violated constraints, its limits (SQLSTATE class 54): a
# message id or identifier too long for its index, say. (A batch too large for a limit is
# bisected until it fits.)
_REFUSED = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
)


@dataclass(frozen=True, slots=True)
class Record:
    """A consumed message, independent of the Kafka client."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes  # empty for a record without one


@dataclass(slots=True)
class Outcome:
    stored: int = 0
    duplicates: int = 0
    # Dropped, not stored nor dead-lettered: they carry a suppressed identifier.
    suppressed: int = 0
    # For the dead-letter topic: the letters stored, and any stored before that it has not
    # had yet (a redelivery's other letters were published already).
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def add(self, other: Outcome) -> None:
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.suppressed += other.suppressed
        self.dead_letters += other.dead_letters


class RunAbandoned(Exception):
    """A run not stored because a run queued before it failed."""


class BatchHandler:
    """Stores batches of consumed records. Safe to call again with records it has already
    stored (they count as duplicates); one instance per consumer process."""

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        model: JourneyModel,
        policy: MergePolicy,
        parts: int = 2,
        identity: IdentityConfig | None = None,
        max_events: int = 50_000,
        opener: EnvelopeOpener | None = None,
    ) -> None:
        self._pool = pool
        self._model = model
        self._policy = policy
        self._parts = parts  # transactions per batch, side by side (one connection each)
        # Builds the touchpoints of batch envelopes, as the API would have.
        self._identity = identity or IdentityConfig()
        # Events stored at once: an envelope holds up to 2,500, so a batch of records is
        # stored in runs of about this many events, one after the other (memory stays flat).
        self._max_events = max_events
        # Opens envelopes in worker processes; without one, the handler builds them itself.
        self._opener = opener
        # The run queued last (of this batch, or of one begun before while its runs were
        # pending): the next one is stored after it.
        self._queued: asyncio.Task[Outcome] | None = None
        # Whether the suppression list held anything at the last transaction's look: then
        # the next one asks about its identifiers in its dedupe statement (a hint only:
        # each transaction sees the list as it is, `_wanted`).
        self._suppressing = False

    async def mark_published(self, letters: Sequence[DeadLetter]) -> None:
        """Note that ``letters`` (of an outcome) are on the dead-letter topic: a redelivery
        of their batch leaves them out of its outcome."""
        if letters:
            async with self._pool.acquire() as proxy:
                await mark_published(cast("asyncpg.Connection[Any]", proxy), letters)

    async def handle(self, records: Sequence[Record]) -> Outcome:
        """Store a batch: returns once every run of it has committed."""
        return await (await self.begin(records))

    async def begin(self, records: Sequence[Record]) -> asyncio.Future[Outcome]:
        """Decode a batch and store it in runs; returns once every record is decoded, with
        the batch's outcome to come (every run committed). Runs are stored one at a time,
        in the order they were queued, this batch's after those of any batch begun before:
        so a consumer decodes its next batch while the last run of this one is stored, and
        neither the database nor this process waits for the other at the batch's edges.
        Should a run fail, the runs queued after it (this batch's and the next one's) are
        not stored: each batch's outcome raises, and neither is acknowledged."""
        if self._queued is not None and self._queued.done():
            # Begun once the batches before are settled (stored, or failed and seen to):
            # nothing to wait for, and an earlier failure abandons nothing of this one.
            self._queued = None
        outcome = Outcome()
        touchpoints: list[Touchpoint] = []
        origin: dict[Any, Record] = {}
        encoded: dict[Any, bytes] = {}  # event id -> own_fields, where encoded as decoded
        dead: list[DeadLetter] = []
        # A run is stored while the next one is decoded: its statements run in the
        # database while this process builds touchpoints.
        storing: asyncio.Task[Outcome] | None = None
        decoded = 0
        # The first runs are smaller (a quarter, a half, then whole): the database starts on
        # them while the rest is decoded. Unless it is busy with a run of the batch before:
        # then whole runs at once, as each run locks, plans and updates its customers once.
        run = self._max_events if self._queued is not None else max(1, self._max_events // 4)
        try:
            async with aclosing(self._decoded(records)) as each:
                async for record, built, letters, rows in each:
                    if len(touchpoints) >= run:
                        if storing is not None:
                            outcome.add(await storing)
                        storing = self._queue(origin, touchpoints, dead, encoded)
                        touchpoints, origin, encoded, dead = [], {}, {}, []
                        run = min(2 * run, self._max_events)
                    touchpoints += built
                    if rows is None:
                        for tp in built:
                            origin[tp.event_id] = record
                    else:  # one pass over the events for both (not zip: most have one)
                        for i, tp in enumerate(built):
                            origin[tp.event_id] = record
                            encoded[tp.event_id] = rows[i]
                    dead += letters
                    decoded += len(built) + 1
                    if decoded >= _YIELD_EVERY:
                        decoded = 0
                        await asyncio.sleep(0)  # the run being stored takes its next step
        except BaseException:
            if storing is not None and not storing.done():
                storing.cancel()  # decoding failed: that run rolls back, the batch is retried
            raise
        last = self._queue(origin, touchpoints, dead, encoded)
        return asyncio.ensure_future(self._outcome(outcome, [t for t in (storing, last) if t]))

    def _queue(
        self,
        origin: dict[Any, Record],
        touchpoints: list[Touchpoint],
        dead: list[DeadLetter],
        encoded: Mapping[Any, bytes],
    ) -> asyncio.Task[Outcome]:
        """Store a run once every run queued before it has been stored."""
        before = self._queued
        self._queued = asyncio.ensure_future(
            self._store_after(before, origin, touchpoints, dead, encoded)
        )
        return self._queued

    async def _store_after(
        self,
        before: asyncio.Future[Outcome] | None,
        origin: dict[Any, Record],
        touchpoints: list[Touchpoint],
        dead: list[DeadLetter],
        encoded: Mapping[Any, bytes],
    ) -> Outcome:
        if before is not None:
            # Waited for, not awaited: this run being cancelled must not cancel that one.
            await asyncio.wait({before})
            if before.cancelled():
                raise RunAbandoned("a run queued before this one was cancelled")
            if (failure := before.exception()) is not None:
                raise RunAbandoned("a run queued before this one failed") from failure
        return await self._store(origin, touchpoints, dead, encoded)

    @staticmethod
    async def _outcome(outcome: Outcome, stores: list[asyncio.Task[Outcome]]) -> Outcome:
        """The batch's outcome once its last runs are stored (``outcome`` holds the others)."""
        try:
            done = await asyncio.gather(*stores, return_exceptions=True)
        except asyncio.CancelledError:
            for task in stores:
                task.cancel()
            raise
        for result in done:
            if isinstance(result, BaseException):
                raise result
            outcome.add(result)
        return outcome

    async def _decoded(
        self, records: Sequence[Record]
    ) -> AsyncGenerator[tuple[Record, list[Touchpoint], list[DeadLetter], list[bytes] | None]]:
        """Each record with its touchpoints, what cannot be built, and the touchpoints'
        `own_fields` where encoded as decoded (a worker's, or a single touchpoint's), in
        order. With an opener, envelopes are opened ahead in its workers (about
        `_AHEAD_BYTES` of them), `_CHUNK_BYTES` of consecutive ones at a time, unless the
        batch is small."""
        opener = self._opener
        chunks = _chunks(records) if opener is not None else []
        if opener is None or sum(size for _, size in chunks) < _WORKER_MIN_BYTES:
            for record in records:
                yield (record, *self._decode(record))
            return
        ahead: deque[tuple[list[Record], int, asyncio.Task[list[Any]] | None]] = deque()
        index = queued = 0
        try:
            while index < len(chunks) or ahead:
                while index < len(chunks) and (not ahead or queued < _AHEAD_BYTES):
                    chunk, size = chunks[index]
                    index += 1
                    opening = None
                    if size:
                        values = [r.value for r in chunk]
                        opening = asyncio.ensure_future(opener.open_all(values))
                        queued += size
                    ahead.append((chunk, size, opening))
                chunk, size, opening = ahead.popleft()
                if opening is None:
                    yield (chunk[0], *self._decode(chunk[0]))
                    continue
                queued -= size
                for record, opened in zip(chunk, await opening, strict=True):
                    if isinstance(opened, envelope.InvalidEnvelope):
                        yield record, [], [_unopened(record, opened)], None
                    else:
                        yield (record, *_opened(record, opened))
        finally:
            for _, _, opening in ahead:
                if opening is not None:
                    opening.cancel()

    def _decode(
        self, record: Record
    ) -> tuple[list[Touchpoint], list[DeadLetter], list[bytes] | None]:
        """A record's touchpoints (one, or a batch envelope's, built here), what cannot
        be built, and a touchpoint's `own_fields` (encoded here, for a record that is one)."""
        if envelope.is_envelope(record.value):
            try:
                built, failed = envelope.open_envelope(record.value, self._identity)
            except envelope.InvalidEnvelope as exc:
                return [], [_unopened(record, exc)], None
            return _opened(record, (built, failed, None))
        try:
            tp = Touchpoint.from_bytes(record.value)
        except InvalidTouchpoint as exc:
            if not record.value:  # a tombstone, say
                return [], [DeadLetter.of(record, "record has no value")], None
            return [], [DeadLetter.of(record, f"undecodable touchpoint: {_short(exc)}")], None
        try:
            # Encoded now rather than as it is stored: a value that cannot be written (an
            # integer beyond 64 bits, nesting deeper than orjson writes, neither of which the
            # API publishes) makes it a dead letter, not the failure of every attempt.
            row = own_fields(tp)
        except (ValueError, TypeError) as exc:
            return [], [DeadLetter.of(record, f"unstorable touchpoint: {_short(exc)}")], None
        return [tp], [], [row]

    async def _store(
        self,
        origin: dict[Any, Record],
        touchpoints: list[Touchpoint],
        dead: list[DeadLetter],
        encoded: Mapping[Any, bytes],
    ) -> Outcome:
        """The batch in independent parts, one transaction each, side by side: while one
        waits on the database, the next one's Python work runs. ``encoded``: the
        touchpoints' `own_fields` encoded as they were decoded, by event id."""
        if self._parts < 2 or len(touchpoints) < SPLIT_MIN:
            return await self._store_or_isolate(origin, touchpoints, dead, encoded)
        async with self._pool.acquire() as proxy, proxy.transaction():
            conn = cast("asyncpg.Connection[Any]", proxy)
            await conn.execute(f"SELECT {_NO_SEQSCAN}")  # index probes here too
            owners = await identity.current_owners(conn, touchpoints)
        parts = identity.independent_parts(touchpoints, owners, self._parts)
        done = await asyncio.gather(
            *(
                self._store_or_isolate(origin, part, dead if i == 0 else [], encoded, owners)
                for i, part in enumerate(parts)
            ),
            return_exceptions=True,
        )
        total = Outcome()
        for outcome in done:
            if isinstance(outcome, BaseException):
                # The other parts have finished; the batch's redelivery skips what they stored.
                raise outcome
            total.add(outcome)
        return total

    async def _store_or_isolate(
        self,
        origin: dict[Any, Record],
        touchpoints: list[Touchpoint],
        dead: list[DeadLetter],
        encoded: Mapping[Any, bytes],
        owners: identity.Owners | None = None,
    ) -> Outcome:
        try:
            return await self._with_retries(touchpoints, dead, encoded, owners)
        except _REFUSED as exc:
            # Some message the database refuses (e.g. a NUL character in a JSON string):
            # store the others and dead-letter the culprits.
            log.warning("batch refused by the database (%s); isolating", type(exc).__name__)
            return await self._isolate(origin, touchpoints, dead, encoded)

    async def _with_retries(
        self,
        touchpoints: list[Touchpoint],
        dead: list[DeadLetter],
        encoded: Mapping[Any, bytes],
        owners: identity.Owners | None = None,
    ) -> Outcome:
        """`owners` (read before the batch) serve the first attempt; a retry reads afresh.
        The committed transaction's outcome goes into the metrics at once: should another
        part or run of the batch fail, what this one stored is stored (and a duplicate when
        the batch is redelivered), and its dead letters are named again for the topic then
        (the dead-letter count is at least once)."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                outcome = await self._transaction(
                    touchpoints,
                    dead,
                    encoded,
                    owners if attempt == 1 else None,
                    alone=attempt >= ALONE_FROM_ATTEMPT,
                )
            except _RETRYABLE as exc:
                if attempt == MAX_ATTEMPTS:
                    if isinstance(exc.__cause__, _REFUSED):
                        raise exc.__cause__ from None
                    raise
                PIPELINE_RETRIES.labels(_RETRY_REASON[type(exc)]).inc()
                delay = min(2.0, 0.02 * 2**attempt) * (0.5 + random.random())  # noqa: S311
                log.info(
                    "retrying %d events after %s (%s; attempt %d)",
                    len(touchpoints),
                    type(exc).__name__,
                    _short(exc),
                    attempt,
                )
                await asyncio.sleep(delay)
            else:
                PIPELINE_EVENTS.labels("stored").inc(outcome.stored)
                PIPELINE_EVENTS.labels("duplicate").inc(outcome.duplicates)
                PIPELINE_EVENTS.labels("suppressed").inc(outcome.suppressed)
                PIPELINE_EVENTS.labels("dead_letter").inc(len(outcome.dead_letters))
                return outcome
        raise AssertionError("unreachable")

    async def _isolate(
        self,
        origin: dict[Any, Record],
        touchpoints: list[Touchpoint],
        dead: list[DeadLetter],
        encoded: Mapping[Any, bytes],
    ) -> Outcome:
        """Store what the database accepts, bisecting to find the messages it refuses:
        log2(batch) transactions per culprit instead of one per message."""
        total = Outcome(dead_letters=(await self._with_retries([], dead, encoded)).dead_letters)
        pending = [touchpoints]
        while pending:
            part = pending.pop()
            try:
                outcome = await self._with_retries(part, [], encoded)
            except _REFUSED as exc:
                if len(part) > 1:
                    middle = len(part) // 2
                    pending += [part[middle:], part[:middle]]
                    continue
                record = origin[part[0].event_id]
                reason = f"refused by the database: {_short(exc)}"
                if envelope.is_envelope(record.value):
                    # The culprit alone, not the whole envelope it came in.
                    item = self._item_of(origin, record, part[0])
                    letter = DeadLetter.of(record, reason, part[0].to_bytes(), item)
                else:
                    letter = DeadLetter.of(record, reason)
                kept = await self._with_retries([], [letter], encoded)
                total.dead_letters += kept.dead_letters
                continue
            total.stored += outcome.stored
            total.duplicates += outcome.duplicates
            total.suppressed += outcome.suppressed
        return total

    def _item_of(self, origin: dict[Any, Record], record: Record, tp: Touchpoint) -> int:
        """The position among the envelope ``record``'s items of the call ``tp`` was built
        from. Calls are built in order, skipping those that cannot be, and ``origin`` keeps
        them in that order: the envelope is opened again to find which were skipped (for a
        letter only, so rarely; a redelivery builds the same calls)."""
        built, failed = envelope.open_envelope(record.value, self._identity)
        skipped = {item for item, _, _ in failed}
        places = [i for i in range(len(built) + len(skipped)) if i not in skipped]
        ours = [event_id for event_id, came_in in origin.items() if came_in is record]
        return places[ours.index(tp.event_id)]

    async def _transaction(
        self,
        touchpoints: list[Touchpoint],
        dead: list[DeadLetter],
        encoded: Mapping[Any, bytes],
        owners: identity.Owners | None = None,
        *,
        alone: bool = False,
    ) -> Outcome:
        async with self._pool.acquire() as proxy, proxy.transaction():
            # The pool hands out a proxy that forwards every Connection method.
            conn = cast("asyncpg.Connection[Any]", proxy)
            await conn.execute(_ALONE if alone else _BESIDE_OTHERS, WRITERS_LOCK)
            letters = await insert_dead_letters(conn, dead)
            if not touchpoints:
                return Outcome(dead_letters=letters)
            fresh, suppressed = await self._wanted(conn, touchpoints)
            if not fresh:
                return Outcome(
                    duplicates=len(touchpoints) - suppressed,
                    suppressed=suppressed,
                    dead_letters=letters,
                )
            stitching = await identity.resolve(conn, fresh, self._policy, owners)
            resolution = stitching.resolution
            plan = journey.plan_stages(self._model, fresh, resolution)
            deltas = _profile_deltas(fresh, resolution)
            # A new customer's profile and journey are known before anything is written
            # (the plan is its whole history): it goes in final, never to be updated.
            created = [d for d in deltas if d.stored is None]
            for delta in created:
                delta.journey = journey.new_journey(self._model, plan, delta.customer_id)
            await insert_customers(conn, stitching.new, created)
            await stitching.write(conn)
            try:
                await insert_events(
                    conn, fresh, resolution.customer_of, plan.stage_of, encoded, resolution.flags
                )
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name not in STORED_KEYS:
                    raise
                # Another consumer stored some of these since the dedupe read (a batch
                # redelivered after a rebalance): retry, and the dedupe drops them. Should
                # the retries run out, the violation itself is raised: the batch is refused
                # and bisected, and an event that can never be stored is dead-lettered.
                raise identity.StaleRead("events were stored concurrently") from exc
            saved = await journey.persist(conn, self._model, fresh, resolution, plan)
            known = [d for d in deltas if d.stored is not None]
            for delta in known:
                delta.journey = saved.get(delta.customer_id)
            await apply_deltas(conn, known)
            return Outcome(
                stored=len(fresh),
                duplicates=len(touchpoints) - len(fresh) - suppressed,
                suppressed=suppressed,
                dead_letters=letters,
            )

    async def _wanted(
        self, conn: asyncpg.Connection[Any], touchpoints: list[Touchpoint]
    ) -> tuple[list[Touchpoint], int]:
        """The touchpoints to store, and how many were dropped as suppressed: those already
        stored (same source and message id, or a repeat in the batch) go, and so does every
        one carrying a suppressed identifier (app.suppressions), in the dedupe's statement.

        Exact, not a cache: the suppression list only changes under the writers' lock held
        exclusively (an erasure, a suppression), and this transaction holds it shared, so
        every statement of it sees the list as the transaction began. While the list is
        empty this costs one probe of it in that statement and nothing in Python."""
        ask = _identifier_keys(touchpoints) if self._suppressing else None
        found = await stored_or_suppressed(
            conn, [(tp.source_id, tp.message_id) for tp in touchpoints], ask
        )
        self._suppressing = found.suppressing
        suppressed = found.suppressed
        if found.suppressing and suppressed is None:  # the list was empty at the last look
            suppressed = await suppressions.suppressed_among(conn, _identifier_keys(touchpoints))
        seen = found.keys
        fresh = []
        dropped = 0
        for tp in touchpoints:
            key = (tp.source_id, tp.message_id)
            if key not in seen:
                seen.add(key)  # also drops a repeat inside the batch
                if suppressed and any(key in suppressed for key in suppression_keys(tp)):
                    dropped += 1
                else:
                    fresh.append(tp)
        return fresh, dropped


def _identifier_keys(touchpoints: list[Touchpoint]) -> list[tuple[str, str]]:
    """The touchpoints' identifiers as ``(kind, value)``, each once, with what else
    :func:`app.suppressions.service.keys_of` asks about."""
    return list({key for tp in touchpoints for key in suppression_keys(tp)})


def _profile_deltas(
    touchpoints: list[Touchpoint], resolution: identity.Resolution
) -> list[ProfileDelta]:
    """What the batch adds to each profile: its events, and the profiles it merged in. Each
    delta carries the profile as the batch locked it (None for a customer it created)."""
    deltas: dict[Any, ProfileDelta] = {}
    customers = resolution.customers

    def delta_for(cid: Any, seen: datetime) -> ProfileDelta:
        delta = deltas.get(cid)
        if delta is None:
            delta = deltas[cid] = ProfileDelta(cid, seen, seen, stored=customers[cid].row)
        return delta

    # Survivor -> the traits of the profiles merged into it, newest first: each goes in
    # among the survivor's events in time order, so that the newer value of a key wins.
    pending: dict[Any, list[identity.Absorbed]] = {}
    for survivor, profiles in resolution.absorbed.items():
        for p in profiles:
            delta = delta_for(survivor, p.first_seen)
            delta.first_seen = min(delta.first_seen, p.first_seen)
            delta.last_seen = max(delta.last_seen, p.last_seen)
            delta.events += p.events
            for channel, n in p.channels.items():
                delta.channels[channel] = delta.channels.get(channel, 0) + n
        if with_traits := [p for p in profiles if p.traits]:
            pending[survivor] = sorted(with_traits, key=_traits_time, reverse=True)
    # Per event, so written for speed: plain comparisons, no helper calls (but where a
    # merge brought traits). In time order, so that the newer value of a trait wins.
    times = [tp.occurred_at for tp in touchpoints]
    for i in sorted(range(len(touchpoints)), key=times.__getitem__):
        tp, at, cid = touchpoints[i], times[i], resolution.customer_of[i]
        known = deltas.get(cid)
        if known is None:
            delta = deltas[cid] = ProfileDelta(cid, at, at, stored=customers[cid].row)
        else:
            delta = known
            if at < delta.first_seen:
                delta.first_seen = at
            elif at > delta.last_seen:
                delta.last_seen = at
        delta.events += 1
        channel = tp.channel.value
        delta.channels[channel] = delta.channels.get(channel, 0) + 1
        # An event's traits: its context.traits, and an identify call's own over them, as
        # identifiers are read (RudderStack's SDKs send identify's in context.traits alone).
        traits = tp.context.get("traits")
        if tp.type == "identify" and tp.traits:
            traits = {**traits, **tp.traits} if isinstance(traits, dict) else tp.traits
        if isinstance(traits, dict) and traits:
            if pending and (merged := pending.get(cid)):
                _add_merged_traits(delta, merged, at)
            # As ProfileDelta.add_traits.
            if delta.traits_since is None or at >= delta.traits_since:
                delta.traits.update(traits)
            else:
                delta.fill.update(traits)
            if delta.traits_at is None or at > delta.traits_at:
                delta.traits_at = at
    for cid, merged in pending.items():
        _add_merged_traits(deltas[cid], merged, None)
    return list(deltas.values())


def _traits_time(profile: identity.Absorbed) -> datetime:
    return profile.traits_at or profile.first_seen


def _add_merged_traits(
    delta: ProfileDelta, merged: list[identity.Absorbed], until: datetime | None
) -> None:
    """Add the traits of the merged-away profiles (newest first) set no later than `until`
    (all of them: None), taking them off `merged`."""
    while merged and (until is None or _traits_time(merged[-1]) <= until):
        profile = merged.pop()
        delta.add_traits(profile.traits, _traits_time(profile))


def _chunks(records: Sequence[Record]) -> list[tuple[list[Record], int]]:
    """Runs of consecutive envelopes, up to `_CHUNK_BYTES` each, and every other record on
    its own: ``(records, their bytes if they are envelopes, else 0)``."""
    chunks: list[tuple[list[Record], int]] = []
    for record in records:
        size = len(record.value) if envelope.is_envelope(record.value) else 0
        if size and chunks and chunks[-1][1] and chunks[-1][1] + size <= _CHUNK_BYTES:
            chunk, total = chunks[-1]
            chunk.append(record)
            chunks[-1] = (chunk, total + size)
        else:
            chunks.append(([record], size))
    return chunks


def _unopened(record: Record, exc: envelope.InvalidEnvelope) -> DeadLetter:
    return DeadLetter.of(record, f"undecodable envelope: {_short(exc)}")


def _opened(
    record: Record, opened: Opened
) -> tuple[list[Touchpoint], list[DeadLetter], list[bytes] | None]:
    built, failed, rows = opened
    letters = [
        DeadLetter.of(record, f"call not built: {reason}", call, item)
        for item, call, reason in failed
    ]
    return built, letters, rows


def _short(exc: Exception) -> str:
    return str(exc).replace("\n", " ")[:500]
