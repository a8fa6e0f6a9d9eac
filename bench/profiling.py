"""Optional py-spy sampling of a child process (``--profile``): a flame graph file plus the
top functions by own time, for the report. Sampling costs CPU, so profiled runs are for
finding hotspots, not for the numbers."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent) + "/"


def py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


class Recorder:
    """``py-spy record`` attached to ``pid`` until :meth:`stop` (collapsed-stack output)."""

    def __init__(self, pid: int, out: Path, rate: int = 100) -> None:
        self.out = out
        self._proc: subprocess.Popen[bytes] | None = None
        binary = py_spy()
        if binary is None:
            return
        self._proc = subprocess.Popen(
            [
                binary,
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop(self) -> dict[str, list[tuple[str, float]]]:
        """Stop sampling; the top frames by own time and Percorso's by inclusive time."""
        if self._proc is None:
            return {}
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        return {"own time": top_self(self.out), "inclusive, app/": top_inclusive(self.out)}


_IDLE = (
    "select (selectors.py",
    "run_forever",
    "_run_once",
    "Runner.run (",  # uvloop polling in C under asyncio.run
    "Condition.wait (",
    "Event.wait (",
    "_worker (concurrent",
)


def top_self(collapsed: Path, limit: int = 12) -> list[tuple[str, float]]:
    """Frames on top of the stack most often, in % of busy samples (idle waits excluded)."""
    own: Counter[str] = Counter()
    total = 0
    for frames, count in _stacks(collapsed):
        leaf = frames[-1]
        if any(marker in leaf for marker in _IDLE):
            continue
        own[_short(leaf).rsplit(":", 1)[0]] += count
        total += count
    return [(frame, 100.0 * n / total) for frame, n in own.most_common(limit)] if total else []


def top_inclusive(collapsed: Path, limit: int = 12) -> list[tuple[str, float]]:
    """Percorso functions (under ``app/``) by the % of busy samples they were on the stack."""
    inclusive: Counter[str] = Counter()
    total = 0
    for frames, count in _stacks(collapsed):
        if any(marker in frames[-1] for marker in _IDLE):
            continue
        total += count
        mine = {f for f in frames if _is_app(f) and "app/cli.py" not in f}
        for frame in mine:
            inclusive[_short(frame).rsplit(":", 1)[0]] += count
    return [(f, 100.0 * n / total) for f, n in inclusive.most_common(limit)] if total else []


def _is_app(frame: str) -> bool:
    return " (app/" in frame or f"({_ROOT}app/" in frame


def _stacks(collapsed: Path) -> list[tuple[list[str], int]]:
    try:
        lines = collapsed.read_text(errors="replace").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if count.isdigit() and stack:
            out.append((stack.split(";"), int(count)))
    return out


def _short(frame: str) -> str:
    # "insert_events (app/timeline/writes.py:58)" → keep the name and file tail.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", _ROOT, "python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})" if where else name
