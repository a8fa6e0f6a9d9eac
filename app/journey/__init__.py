"""Journey models, rules and stage assignment.

The engine is pure (no database, no network): `load_model` reads a preset or a model file
(format: `app.journey.loader`); the resulting `JourneyModel` assigns stages to a customer's
events one at a time (`JourneyModel.step`). Around it: `service` (the pipeline's journey
step and the read service), `history` (transitions; recomputing whole histories),
`rebuild` (after a model change), `writes`/`repository` (SQL), `endpoints`, `cli`.
"""

from app.journey.model import (
    EventFacts,
    JourneyModel,
    JourneyModelError,
    JourneyState,
    StepResult,
    load_model,
)

__all__ = [
    "EventFacts",
    "JourneyModel",
    "JourneyModelError",
    "JourneyState",
    "StepResult",
    "load_model",
]
