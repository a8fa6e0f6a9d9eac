"""The consumer process takes its batching from the settings."""

from __future__ import annotations

import inspect
from typing import Any, cast

from app.config import Settings
from app.journey.model import load_model
from app.pipeline.handler import BatchHandler
from app.pipeline.runner import Pipeline


async def test_runs_are_as_large_as_pipeline_run_events(settings: Settings) -> None:
    tuned = settings.model_copy(
        update={"pipeline_run_events": 123, "pipeline_max_batch": 45, "pipeline_decode_workers": 0}
    )
    # Nothing connects before run(): the pool is only handed to the batch handler.
    consumer = Pipeline(tuned, cast(Any, None), load_model(tuned.journey_model))
    try:
        assert consumer._handler._max_events == 123
    finally:
        await consumer._consumer.stop()
        await consumer._dlq.stop()
    # The handler's own default is the setting's.
    handler_default = inspect.signature(BatchHandler).parameters["max_events"].default
    assert Settings.model_fields["pipeline_run_events"].default == handler_default
