"""A customer's stage history: stepping events into transitions, and recomputing histories
from the stored timeline (late events and merges from a checkpoint; model changes whole)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

import asyncpg
import orjson

from app.journey import writes
from app.journey.model import JourneyModel, JourneyState
from app.journey.rules import EventFacts
from app.journey.writes import SavedJourney, TransitionRow
from app.touchpoint import EventKey

# Rows buffered before a write while recomputing; bounds memory for very long timelines.
FLUSH_ROWS: Final = 5_000


class Recorder:
    """Steps one customer's events (in (occurred_at, event_id) order) through the model and
    records each change of the current stage as a transition, with the state after it.

    A transition's ``exited_at`` is the next recorded transition's ``entered_at``; the last
    one stays open (None). Started from a checkpoint (`resume`), the checkpoint is the first
    transition and is closed like any other; otherwise closing a transition recorded before
    this recorder started is the caller's business (`first_entry` says when).
    """

    __slots__ = ("customer_id", "model", "newest", "state", "transitions")

    def __init__(self, model: JourneyModel, customer_id: uuid.UUID, state: JourneyState) -> None:
        self.model = model
        self.customer_id = customer_id
        self.state = state
        self.transitions: list[TransitionRow] = []
        self.newest: EventKey | None = None

    @classmethod
    def resume(cls, model: JourneyModel, checkpoint: TransitionRow) -> Recorder:
        """A recorder continuing right after the checkpoint's event, which it re-records
        (open again until a later transition closes it)."""
        state = JourneyState.from_json(orjson.loads(checkpoint.state))
        recorder = cls(model, checkpoint.customer_id, state)
        recorder.transitions.append(checkpoint)
        recorder.newest = (checkpoint.entered_at, checkpoint.event_id)
        return recorder

    def apply(
        self,
        facts: EventFacts,
        occurred_at: datetime,
        event_id: uuid.UUID,
    ) -> str | None:
        """Step one event; returns the customer's current stage once it is applied."""
        state = self.state
        result = self.model.step(state, facts)
        self.newest = (occurred_at, event_id)
        if result.changed and result.stage is not None:
            if self.transitions:
                self.transitions[-1].exited_at = occurred_at
            self.transitions.append(
                TransitionRow(
                    customer_id=self.customer_id,
                    from_stage=result.previous_stage,
                    to_stage=result.stage,
                    entered_at=occurred_at,
                    event_id=event_id,
                    channel=facts.channel,
                    event=facts.event,
                    rule_id=result.rule_id,
                    state=orjson.dumps(state.to_json()).decode(),
                )
            )
        return state.current_stage

    @property
    def first_entry(self) -> datetime | None:
        return self.transitions[0].entered_at if self.transitions else None

    def saved(self, fingerprint: str) -> SavedJourney:
        at, event_id = self.newest if self.newest is not None else (None, None)
        return SavedJourney(self.customer_id, self.state, fingerprint, at, event_id)


def _uses_properties(model: JourneyModel) -> bool:
    return any(rule.where for rule in model.rules)


async def recompute(
    conn: asyncpg.Connection[Any],
    model: JourneyModel,
    customer_ids: Iterable[uuid.UUID],
    *,
    since: Mapping[uuid.UUID, EventKey] | None = None,
) -> None:
    """Recompute the customers' journeys from their stored timelines.

    `since` gives, for some of the customers, the earliest event new to their timeline: the
    history before it stands, so the replay resumes from the customer's last transition
    ordered before that event (its checkpoint: the state once its event was applied) and
    steps only the events after it. Any other customer, or one without a checkpoint, is
    replayed from its first event with a fresh `JourneyState`. Either way it rewrites
    ``events.stage`` where it differs, replaces the replayed part of ``stage_transitions``
    and saves the state with the model's fingerprint: exactly what the events would have
    produced had they arrived in time order. Checkpoints are trusted only for customers
    whose stored journey this model computed (the caller's check).

    The caller must hold the row locks (``FOR UPDATE``) of all customers in the current
    transaction: every writer of a customer's events, transitions and journey columns takes
    that lock first, so nothing changes underneath the replay. A whole batch of customers
    costs a handful of statements; memory stays bounded (rows are streamed and flushed).
    """
    ids = sorted(set(customer_ids))
    if not ids:
        return
    fingerprint = model.fingerprint()
    since = since or {}
    found = await writes.checkpoints(
        conn, [(cid, *event) for cid in ids if (event := since.get(cid)) is not None]
    )
    bounds: list[writes.Bound] = [
        (cid, cp.entered_at, cp.event_id) if (cp := found.get(cid)) else (cid, None, None)
        for cid in ids
    ]
    await writes.delete_transitions_from(conn, bounds)
    stage_changes: list[tuple[uuid.UUID, str | None]] = []
    finished: list[TransitionRow] = []
    saved: list[SavedJourney] = []

    def start(customer_id: uuid.UUID) -> Recorder:
        checkpoint = found.pop(customer_id, None)
        if checkpoint is not None:
            return Recorder.resume(model, checkpoint)
        return Recorder(model, customer_id, JourneyState())

    def finish(recorder: Recorder) -> None:
        finished.extend(recorder.transitions)
        saved.append(recorder.saved(fingerprint))

    recorder: Recorder | None = None
    async for row in writes.timelines(conn, bounds, with_properties=_uses_properties(model)):
        # Per replayed event, so unpacked at once (in writes.timelines' column order).
        customer_id, event_id, type_, event, channel, occurred_at, stored, properties, flags = row
        if recorder is None or recorder.customer_id != customer_id:
            if recorder is not None:
                finish(recorder)
            recorder = start(customer_id)
        if isinstance(properties, str):
            properties = orjson.loads(properties)
        facts = EventFacts(type_, event, channel, properties, orjson.loads(flags))
        stage = recorder.apply(facts, occurred_at, event_id)
        if stage != stored:
            stage_changes.append((event_id, stage))
        if len(stage_changes) >= FLUSH_ROWS:
            await writes.set_event_stages(conn, stage_changes)
            stage_changes.clear()
        if len(finished) >= FLUSH_ROWS:
            await writes.insert_transitions(conn, finished)
            finished.clear()
        if len(recorder.transitions) >= FLUSH_ROWS:
            # A very long history: everything but the open transition is final already.
            finished.extend(recorder.transitions[:-1])
            del recorder.transitions[:-1]
    if recorder is not None:
        finish(recorder)
    # A checkpoint with no event after it (not expected: the new event follows it) keeps its
    # state; a customer without a single event (possible after an erasure) starts over.
    for checkpoint in list(found.values()):
        finish(start(checkpoint.customer_id))
    await writes.set_event_stages(conn, stage_changes)
    await writes.insert_transitions(conn, finished)
    seen = {s.customer_id for s in saved}
    saved.extend(
        SavedJourney(cid, JourneyState(), fingerprint, None, None) for cid in ids if cid not in seen
    )
    await writes.save_states(conn, saved)
