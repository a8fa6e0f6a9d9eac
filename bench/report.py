"""Collecting numbers, printing the table, writing ``bench/results/*.json``."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psutil

from bench import targets

RESULTS = Path(__file__).resolve().parent / "results"

# Keys every results file carries (null when a phase did not run; listed in not_measured).
REQUIRED_KEYS = (
    "pipeline_events_per_s",
    "raw_copy_rows_per_s",
    "pipeline_ratio",
    "batch_ingest_events_per_s",
    "bare_events_per_s",
    "ingest_ratio",
    "track_p99_ms",
    "freshness_p95_ms",
    "timeline_p99_ms",
    "events_in_db",
    "consumer_rss_mb_start",
    "consumer_rss_mb_end",
)


@dataclass(slots=True)
class Row:
    section: str
    metric: str
    value: float | None
    unit: str
    reference: float | None = None
    reference_label: str = ""
    ratio: float | None = None


@dataclass
class Report:
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    values: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    profiles: dict[str, dict[str, list[tuple[str, float]]]] = field(default_factory=dict)
    durations_s: dict[str, float] = field(default_factory=dict)

    def set(self, **values: Any) -> None:
        self.values.update({k: _round(v) for k, v in values.items()})

    def row(self, section: str, metric: str, value: float | None, unit: str, **kw: Any) -> None:
        self.rows.append(Row(section, metric, value, unit, **kw))

    def note(self, text: str) -> None:
        self.notes.append(text)

    # -- output ---------------------------------------------------------------------------

    def table(self) -> str:
        head = ("section", "metric", "value", "reference", "ratio")
        body = [
            (
                r.section,
                r.metric,
                _fmt(r.value, r.unit),
                f"{_fmt(r.reference, r.unit)} {r.reference_label}".strip()
                if r.reference is not None
                else "",
                f"{r.ratio:.2f}" if r.ratio is not None else "",
            )
            for r in self.rows
        ]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=False)]
        line = "  ".join("-" * w for w in widths)
        out = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)), line]
        previous = None
        for cells in body:
            shown = ("" if cells[0] == previous else cells[0], *cells[1:])
            previous = cells[0]
            out.append(
                "  ".join(
                    c.ljust(w) if i < 2 else c.rjust(w) if i in (2, 4) else c.ljust(w)
                    for i, (c, w) in enumerate(zip(shown, widths, strict=True))
                ).rstrip()
            )
        out += ["", "targets"]
        judged = targets.judged(self.values)
        texts = [_fmt(t["value"], t["unit"]) for t in judged]
        goals, values = max(len(t["goal"]) for t in judged), max(map(len, texts))
        for target, text in zip(judged, texts, strict=True):
            verdict = target["verdict"]
            if target["why_not_judged"]:
                verdict += f": {target['why_not_judged']}"
            out.append(f"  {target['goal'].ljust(goals)}  {text.rjust(values)}  {verdict}")
        for role, views in self.profiles.items():
            for view, top in views.items():
                out.append("")
                out.append(f"py-spy, {role}: top functions, {view} (% of busy samples)")
                out.extend(f"  {pct:5.1f}%  {frame}" for frame, pct in top)
        if self.notes:
            out.append("")
            out.extend(f"note: {n}" for n in self.notes)
        return "\n".join(out)

    def document(self, config: dict[str, Any]) -> dict[str, Any]:
        values = {k: self.values.get(k) for k in REQUIRED_KEYS} | self.values
        return {
            **values,
            "not_measured": sorted(k for k in REQUIRED_KEYS if values.get(k) is None),
            "started_at": self.started_at.isoformat(),
            "durations_s": {k: round(v, 2) for k, v in self.durations_s.items()},
            "config": config,
            "machine": machine(),
            "table": [asdict(r) for r in self.rows],
            "targets": targets.judged(values),
            "profiles": {
                role: {
                    view: [{"frame": f, "pct": round(p, 2)} for f, p in top]
                    for view, top in views.items()
                }
                for role, views in self.profiles.items()
            },
            "notes": self.notes,
        }

    def write(self, config: dict[str, Any], directory: Path = RESULTS) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        data = orjson.dumps(self.document(config), option=orjson.OPT_INDENT_2)
        dated = directory / f"{self.started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
        latest = directory / "latest.json"
        dated.write_bytes(data)
        latest.write_bytes(data)
        return latest, dated


def machine() -> dict[str, Any]:
    freq = psutil.cpu_freq()
    return {
        "cpus_logical": psutil.cpu_count(logical=True),
        "cpus_physical": psutil.cpu_count(logical=False),
        "cpu_model": _cpu_model(),
        "cpu_mhz": round(freq.current) if freq else None,
        "ram_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3 if abs(value) < 10 else 1)
    return value


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a" if unit else ""
    if unit == "ratio":
        return f"{value:.2f}"
    whole = abs(value) >= 100 or float(value).is_integer()
    text = f"{value:,.0f}" if whole else f"{value:,.1f}"
    return f"{text} {unit}".strip()
