"""The benchmark's own arithmetic: a load measured in rounds adds up as one load would; the
instruction counts of the in-process loops come from the blocks they name; the handler
loop's CPU counts include the database server's."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from app.config import Settings
from app.db import create_pool
from bench import callgrind, handler, phases
from bench.loadgen import LoadResult


def test_rounds_of_a_load_add_up() -> None:
    total = LoadResult(requests=2, events=200, seconds=1.0, latencies_ms=[1.0, 2.0])
    total.statuses[200] = 2
    later = LoadResult(requests=3, events=250, errors=1, seconds=1.5, latencies_ms=[3.0, 4.0, 5.0])
    later.statuses.update({200: 2, 503: 1})
    total.add(later)
    assert (total.requests, total.events, total.errors) == (5, 450, 1)
    assert total.events_per_s == 450 / 2.5
    assert total.latencies_ms == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert total.statuses == {200: 4, 503: 1}


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Proc:
    """A process whose CPU time is whatever the test says."""

    def __init__(self) -> None:
        self.cpu = 0.0

    def cpu_seconds(self) -> float:
        return self.cpu


class _Stack:
    def postgres_cpu_seconds(self) -> float | None:
        return None  # an external server: unknown


def test_a_paused_cpu_window_leaves_the_pause_out(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, proc = _Clock(), _Proc()
    monkeypatch.setattr("bench.phases.time.perf_counter", clock)
    stack: Any = _Stack()
    procs: dict[str, Any] = {"api": proc}
    window = phases.CpuWindow(stack, procs)
    clock.now, proc.cpu = 2.0, 1.0  # 1 s of CPU in 2 s
    window.pause()
    clock.now, proc.cpu = 10.0, 9.0  # paused: not counted
    window.resume()
    clock.now, proc.cpu = 12.0, 12.0  # 3 s of CPU in 2 s
    cores = window.cores()
    assert cores["api"] == pytest.approx(4.0 / 4.0)
    assert cores["postgres"] is None


_LOOPS = """
from bench import callgrind

with callgrind.counted("small"):
    sum(range(20_000))
with callgrind.counted("large"):
    sum(range(200_000))
"""


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind")
def test_instructions_are_counted_per_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "two_loops.py").write_text(_LOOPS)
    root = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{root}")
    counts = callgrind.run("two_loops", [])
    assert list(counts) == ["small", "large"]
    # Ten times the loop; the rest (starting and ending a count) is the same in both.
    assert 5 * counts["small"] < counts["large"] < 15 * counts["small"]


def test_outside_callgrind_a_counted_block_only_runs() -> None:
    assert not callgrind.active()
    with callgrind.counted("block"):
        ran = True
    assert ran


async def test_the_handler_loop_counts_the_local_servers_cpu(settings: Settings) -> None:
    """bench.handler finds the server of its pool on this machine and adds up the CPU of
    all its processes, which grows with the work the server does."""
    pool = await create_pool(settings, size=1)
    try:
        server = await handler._local_server(pool)
        assert server is not None
        assert server.name().startswith("postgres")
        before = handler._cpu(server)
        await pool.fetchval("SELECT count(*) FROM generate_series(1, 2000000)")
        after = handler._cpu(server)
    finally:
        await pool.close()
    assert set(after) == {"handler", "decode workers", "postgres"}
    assert after["postgres"] - before["postgres"] > 0.05  # that query alone, ~0.1-0.3 s
