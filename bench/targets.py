"""Issue 6's targets, judged on a run's results: each one met, missed, or not judged, because
the run did not measure it, or measured it away from the condition the target names (a
quick run's reads, say, on far fewer than 2 million events)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Values = Mapping[str, Any]
Verdict = Literal["met", "missed", "not measured", "not at its condition"]
Condition = Callable[[Values], str | None]

# How far a steady load may fall short of the rate a target names and still be that load.
RATE_TOLERANCE = 0.05
# The consumer's RSS is flat when it grows by less than this per 100,000 events, from
# warm to the end of the run (a least-squares slope; on this project's VM the slope of runs
# without a leak ranged from -36 to +7).
FLAT_MB_PER_100K = 10.0
READ_DB_EVENTS = 2_000_000
HEAVY_EVENTS = 10_000


def _at_rate(key: str, rate: int, unit: str) -> dict[str, Any]:
    """A target's condition of a steady load at ``rate`` (measured under ``key``): its text,
    and the check."""

    def condition(values: Values) -> str | None:
        achieved = values.get(key)
        if achieved is None or achieved < rate * (1 - RATE_TOLERANCE):
            shown = "nothing" if achieved is None else f"{achieved:,.0f}"
            return f"measured at {shown} {unit}, not {rate:,}"
        return None

    return {"at": f"at {rate:,} {unit}", "condition": condition}


def _reads_at_size(values: Values) -> str | None:
    stored, heavy = values.get("events_in_db") or 0, values.get("reads_heavy_customer_events") or 0
    if stored < READ_DB_EVENTS or heavy < HEAVY_EVENTS:
        return (
            f"measured with {stored:,} events stored and {heavy:,} for each customer read,"
            f" not {READ_DB_EVENTS:,} and {HEAVY_EVENTS:,}"
        )
    return None


@dataclass(frozen=True, slots=True)
class Target:
    key: str  # the results key judged
    name: str  # what is measured
    limit: float
    below: bool  # True: the value must stay under `limit`; False: reach it at least
    unit: str
    at: str = ""  # the target's condition, as its goal states it
    # Why the run did not measure the value at the target's condition; None when it did.
    condition: Condition = lambda values: None

    @property
    def goal(self) -> str:
        """The target as a sentence: "/v1/track p99 < 25 ms at 1,000 requests/s"."""
        limit = f"{self.limit:.2f}" if self.unit == "ratio" else f"{self.limit:,.0f} {self.unit}"
        return f"{self.name} {'<' if self.below else '≥'} {limit} {self.at}".rstrip()

    def judge(self, values: Values) -> tuple[Verdict, str | None]:
        """The verdict, and why a value was not judged."""
        value = values.get(self.key)
        if value is None:
            return "not measured", None
        if (why := self.condition(values)) is not None:
            return "not at its condition", why
        met = value < self.limit if self.below else value >= self.limit
        return ("met" if met else "missed"), None


TARGETS = (
    Target("pipeline_ratio", "pipeline", 0.40, below=False, unit="ratio", at="of a raw COPY"),
    Target("ingest_ratio", "/v1/batch", 0.60, below=False, unit="ratio", at="of the bare endpoint"),
    Target("track_p99_ms", "/v1/track p99", 25, below=True, unit="ms",
           **_at_rate("track_rate_per_s", 1_000, "requests/s")),
    Target("freshness_p95_ms", "accept → visible p95", 1_000, below=True, unit="ms",
           **_at_rate("freshness_achieved_events_per_s", 2_000, "events/s")),
    Target("timeline_p99_ms", "timeline first page p99", 20, below=True, unit="ms",
           at=f"with {READ_DB_EVENTS:,} events stored", condition=_reads_at_size),
    Target("consumer_rss_mb_per_100k_events", "consumer RSS growth (flat)", FLAT_MB_PER_100K,
           below=True, unit="MB", at="per 100,000 events"),
)  # fmt: skip


def judged(values: Values) -> list[dict[str, Any]]:
    """Every target with the run's value and verdict, as the results file holds them."""
    out = []
    for target in TARGETS:
        verdict, why = target.judge(values)
        out.append(
            {
                "key": target.key,
                "goal": target.goal,
                "value": values.get(target.key),
                "unit": target.unit,
                "verdict": verdict,
                "why_not_judged": why,
            }
        )
    return out
