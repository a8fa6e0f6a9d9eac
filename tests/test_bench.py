"""The benchmark's own arithmetic: a load measured in rounds adds up as one load would; the
instruction counts of the in-process loops come from the blocks they name; the handler
loop's CPU counts include the database server's; bench.ab's variants and medians."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import uuid
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
from aiokafka import AIOKafkaProducer

from app.config import Settings
from app.db import create_pool
from app.kit import embedded
from app.timeline.writes import COLUMNS
from bench import ab, callgrind, handler, http_protocol, phases, reads, targets, workload
from bench.loadgen import LoadResult
from bench.report import Report
from bench.stack import Stack
from tests.factories import touchpoint


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


def test_cpu_a_request_is_the_busy_cores_over_the_request_rate() -> None:
    # 0.85 cores busy serving 1,700 requests/s: half a millisecond of CPU each.
    assert phases.cpu_us_per_request(0.85, 1_700) == pytest.approx(500)
    assert phases.cpu_us_per_request(None, 1_700) is None  # the process was not sampled
    assert phases.cpu_us_per_request(0.85, 0.0) is None  # no request was served


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

    def broker_cpu_seconds(self) -> float | None:
        return None


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


def test_a_cpu_window_can_count_from_an_earlier_mark(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline's window starts where its first batch started, found only once that
    batch is done: from the mark taken then, not from when the window is made."""
    clock, proc = _Clock(), _Proc()
    monkeypatch.setattr("bench.phases.time.perf_counter", clock)
    stack: Any = _Stack()
    procs: dict[str, Any] = {"consumer0": proc}
    probe = phases.CpuWindow(stack, procs)
    clock.now, proc.cpu = 5.0, 2.0  # start-up: 2 s of CPU in 5 s
    start = probe.mark()
    clock.now, proc.cpu = 9.0, 6.0  # the first batch: 4 s of CPU in 4 s
    window = phases.CpuWindow(stack, procs, since=start)
    clock.now, proc.cpu = 10.0, 6.5  # then 0.5 s in 1 s
    assert window.cores()["consumer0"] == pytest.approx(4.5 / 5.0)
    assert probe.cores()["consumer0"] == pytest.approx(6.5 / 10.0)


_LOOPS = """
from bench import callgrind

with callgrind.counted("small"):
    sum(range(20_000))
with callgrind.counted("large"):
    sum(range(200_000))
"""


def test_consumer_memory_is_judged_from_its_second_batch_on() -> None:
    """The heap's warm-up (the first two batches) is no growth; later growth is."""
    # (batches, events handled, RSS) per sample while 600 events are handled in 4 batches of
    # 150, each committed in parts of 50 (the events count as each part commits): RSS rises
    # through the first two batches, then stays.
    warm_up = [
        (0, 0, 50.0),
        (0, 50, 300.0),
        (0, 100, 500.0),
        (1, 150, 660.0),
        (1, 200, 700.0),
        (1, 250, 730.0),
        (2, 300, 748.0),
        (2, 350, 748.0),
        (3, 450, 748.0),
        (4, 600, 748.0),
    ]
    start, end, growth = phases._memory_trend(warm_up, 600)
    assert (start, end) == (748.0, 748.0)
    assert growth == pytest.approx(0.0)
    leak = [(0, 0, 50.0), (1, 150, 660.0), (2, 300, 748.0), (3, 450, 848.0), (4, 600, 948.0)]
    _, _, growth = phases._memory_trend(leak, 600)
    assert growth == pytest.approx(100_000 * 100 / 150)
    # Two batches in all: warm only at the end, so no trend to show.
    assert phases._memory_trend([(0, 0, 50.0), (1, 100, 400.0), (2, 200, 420.0)], 200) == (
        420.0,
        420.0,
        None,
    )
    assert phases._memory_trend([(0, 0, 50.0), (1, 200, 420.0)], 200) == (None, None, None)


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


async def test_the_bench_counts_the_brokers_cpu(broker: embedded.EmbeddedBroker) -> None:
    """The broker's CPU is its own process's: it grows with the requests the broker serves,
    and there is none to read for a broker that is not running."""
    stack = Stack(run_id="test", run_dir=Path("unused"))
    stack._broker = broker
    before = stack.broker_cpu_seconds()
    assert before is not None
    topic = f"bench-cpu-{uuid.uuid4().hex}"
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for _ in range(300):
            await producer.send_and_wait(topic, b"x")
    finally:
        await producer.stop()
    after = stack.broker_cpu_seconds()
    assert after is not None
    assert after > before
    assert broker.pid is not None
    times = psutil.Process(broker.pid).cpu_times()  # the broker's, not this process's
    assert after == pytest.approx(times.user + times.system, abs=0.02)
    stack._broker = embedded.EmbeddedBroker()  # never started
    assert stack.broker_cpu_seconds() is None


async def test_the_reads_phase_copies_every_column_into_its_own_place(
    settings: Settings, handle: Any, source_id: Any
) -> None:
    """The fill of the reads phase copies stored rows by column name: a copy differs from
    its row in the columns it changes and nowhere else (a copy by position broke when
    the columns were reordered)."""
    stored = touchpoint(source_id, user_id="u-1", properties={"sku": "A"}, traits={"plan": "x"})
    await handle([stored])
    pool = await create_pool(settings, size=1)
    try:
        await pool.execute(
            reads.copies(event_id="gen_random_uuid()", message_id="'copy-' || message_id")
            + " WHERE message_id = $1",
            stored.message_id,
        )
        select = f"SELECT {', '.join(COLUMNS)} FROM events WHERE message_id = $1"
        row = await pool.fetchrow(select, stored.message_id)
        copy = await pool.fetchrow(select, f"copy-{stored.message_id}")
    finally:
        await pool.close()
    assert row is not None
    assert copy is not None
    changed = {c for c in COLUMNS if copy[c] != row[c]}
    assert changed == {"event_id", "message_id"}
    with pytest.raises(ValueError, match="seq"):
        reads.copies(seq="1")


def test_an_ab_variant_is_a_checkout_and_its_settings() -> None:
    root = Path(__file__).resolve().parents[1]
    variant = ab.parse_variant(f"zstd={root},PERCORSO_KAFKA_COMPRESSION_TYPE=zstd,PERCORSO_X=a=b")
    assert (variant.name, variant.directory) == ("zstd", root)
    assert variant.env == {"PERCORSO_KAFKA_COMPRESSION_TYPE": "zstd", "PERCORSO_X": "a=b"}
    assert ab.parse_variant(f"plain={root}").env == {}


@pytest.mark.parametrize(
    "text",
    ["nodir", "=.", "name=", "bare=.", "x=.,HOME=/tmp", "x=.,PERCORSO_X", "x=/nonexistent"],
)
def test_an_ab_variant_that_names_no_checkout_or_a_foreign_setting_is_refused(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    with pytest.raises(argparse.ArgumentTypeError):
        ab.parse_variant(text)


def test_ab_variants_have_distinct_names_and_a_round_holds_a_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    assert [v.name for v in ab.parse(["a=.", "b=."]).variants] == ["a", "b"]
    for argv in (["a=.", "a=."], ["a=.", "--rounds", "0"], ["a=.", "--events", "50"]):
        with pytest.raises(SystemExit):
            ab.parse(argv)


def test_ab_can_send_the_write_key_in_every_call_as_analyticsjs_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    work = workload.generate(30, 3, seed=1)
    for argv, keys in (([], [None] * 3), (["--write-key-in-calls"], ["pw_k"] * 3)):
        args = ab.parse(["a=.", "--batch-size", "10", "--events", "30", *argv])
        bodies = [orjson.loads(b) for b in ab._bodies(args, work, "pw_k")]
        assert [len(b["batch"]) for b in bodies] == [10, 10, 10]
        assert [b["batch"][0].get("writeKey") for b in bodies] == keys
        assert [{k: v for k, v in c.items() if k != "writeKey"} for c in bodies[0]["batch"]] == (
            work.items[:10]
        )


def test_ab_reports_medians_of_rounds_and_cpu_per_request() -> None:
    def measured(*rounds: tuple[int, float, float]) -> ab.Measured:
        m = ab.Measured()
        for requests, seconds, cpu in rounds:
            m.add(LoadResult(requests=requests, events=100 * requests, seconds=seconds), cpu)
        return m

    before = measured((100, 1.0, 0.08), (100, 2.0, 0.10), (100, 1.0, 0.09))
    after = measured((100, 0.5, 0.05), (100, 1.0, 0.07), (100, 1.0, 0.06))
    assert before.median_events_per_s() == 10_000
    assert before.median_cpu_ms_per_request() == pytest.approx(0.9)
    assert after.median_events_per_s() == 10_000
    assert after.median_cpu_ms_per_request() == pytest.approx(0.6)
    lines = ab.summary({"before": before, "after": measured((100, 0.5, 0.05))})
    assert "10,000 events/s (x1.00)" in lines[0]
    assert "20,000 events/s (x2.00)" in lines[1]
    assert "0.500 ms/request" in lines[1]


def test_ab_reports_medians_of_the_handler_runs() -> None:
    def run(events_per_s: float, handler_us: float) -> dict[str, Any]:
        cpu = {"handler": handler_us, "decode workers": 30.0, "postgres": 60.0}
        return {
            "events_per_s": events_per_s,
            "raw_copy_rows_per_s": 40_000.0,
            "cpu_us_per_event": cpu,
        }

    lines = ab.runs_summary(
        {
            "before": [run(8_000, 60), run(9_000, 58), run(7_000, 70)],
            "after": [run(10_000, 50), run(12_000, 45), run(11_000, 47)],
        }
    )
    assert "8,000 events/s (x1.00)" in lines[0]
    assert "handler 60, decode workers 30, postgres 60" in lines[0]
    assert "of raw COPY 0.20" in lines[0]
    assert "11,000 events/s (x1.38)" in lines[1]
    assert "handler 47" in lines[1]
    root = Path(__file__).resolve().parents[1]
    for modes in (["--pipeline", "--bare"], ["--handler", "--bare"], ["--handler", "--pipeline"]):
        with pytest.raises(SystemExit):
            ab.parse([f"a={root}", *modes])
    consumer = ab.runs_summary(
        {
            "now": [
                {"events_per_s": e, "cpu_us_per_event": {"consumer": 90.0}, "rss_mb_peak": m}
                for e, m in ((9_000.0, 410.0), (8_000.0, 450.0), (9_500.0, 430.0))
            ]
        }
    )
    assert consumer[0].startswith("       now    9,000 events/s (x1.00)  CPU µs/event: consumer 90")
    assert "raw COPY" not in consumer[0]
    assert "peak RSS 430 MB" in consumer[0]


async def test_ab_runs_the_handler_loop_in_a_checkout(pg_admin_url: str) -> None:
    """bench.handler --json, as bench.ab --handler runs it in a variant's checkout."""
    root = Path(__file__).resolve().parents[1]
    args = ab.parse([f"now={root}", "--handler", "--events", "2000", "--rounds", "1"])
    variant = ab.Variant("now", root, {"PERCORSO_DATABASE_URL": pg_admin_url})
    numbers = await ab._handler_run(variant, args)
    assert numbers["events_per_s"] > 0
    assert numbers["raw_copy_rows_per_s"] > 0
    assert {"handler", "decode workers"} <= set(numbers["cpu_us_per_event"])
    assert numbers["cpu_us_per_event"]["handler"] > 0


# A full run's results, at every target's condition.
_AT_CONDITIONS: dict[str, Any] = {
    "pipeline_ratio": 0.41,
    "ingest_ratio": 0.45,
    "track_p99_ms": 6.2,
    "track_rate_per_s": 998.0,
    "freshness_p95_ms": 171.0,
    "freshness_achieved_events_per_s": 1_990.0,
    "timeline_p99_ms": 19.7,
    "events_in_db": 2_083_501,
    "reads_heavy_customer_events": 10_000,
    "consumer_rss_mb_per_100k_events": -9.5,
}


def _verdicts(values: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["verdict"] for t in targets.judged(values)}


def test_each_target_is_met_or_missed_on_its_side_of_the_limit() -> None:
    assert _verdicts(_AT_CONDITIONS) == {
        "pipeline_ratio": "met",
        "ingest_ratio": "missed",
        "track_p99_ms": "met",
        "freshness_p95_ms": "met",
        "timeline_p99_ms": "met",
        "consumer_rss_mb_per_100k_events": "met",
    }
    at_limits = {
        **_AT_CONDITIONS,
        "pipeline_ratio": 0.40,  # at least: met
        "ingest_ratio": 0.60,
        "track_p99_ms": 25.0,  # under: missed
        "timeline_p99_ms": 20.0,
        "freshness_p95_ms": 1_000.0,
        "consumer_rss_mb_per_100k_events": 10.0,
    }
    assert set(_verdicts(at_limits).values()) == {"met", "missed"}
    assert [k for k, v in _verdicts(at_limits).items() if v == "met"] == [
        "pipeline_ratio",
        "ingest_ratio",
    ]


def test_a_target_is_not_judged_away_from_its_condition_or_unmeasured() -> None:
    quick = {
        **_AT_CONDITIONS,
        "events_in_db": 100_000,  # a quick run's reads
        "freshness_achieved_events_per_s": 1_500.0,  # the machine fell behind the rate
        "track_rate_per_s": None,
        "pipeline_ratio": None,  # no bare or raw COPY measured
    }
    judged = {t["key"]: t for t in targets.judged(quick)}
    assert judged["timeline_p99_ms"]["verdict"] == "not at its condition"
    assert "100,000 events stored" in judged["timeline_p99_ms"]["why_not_judged"]
    assert judged["freshness_p95_ms"]["verdict"] == "not at its condition"
    assert "1,500 events/s, not 2,000" in judged["freshness_p95_ms"]["why_not_judged"]
    assert judged["track_p99_ms"]["verdict"] == "not at its condition"
    assert judged["pipeline_ratio"]["verdict"] == "not measured"
    assert judged["ingest_ratio"]["verdict"] == "missed"


def test_the_table_and_the_results_file_give_the_verdicts(tmp_path: Path) -> None:
    report = Report()
    report.set(**_AT_CONDITIONS)
    table = report.table()
    lines = table.splitlines()
    shown = lines[lines.index("targets") + 1 :]
    assert [[cell.strip() for cell in line.split("  ")[-2:]] for line in shown] == [
        ["0.41", "met"],
        ["0.45", "missed"],
        ["6.2 ms", "met"],
        ["171 ms", "met"],
        ["19.7 ms", "met"],
        ["-9.5 MB", "met"],
    ]
    assert shown[1].strip().startswith("/v1/batch ≥ 0.60 of the bare endpoint")
    latest, _ = report.write({}, tmp_path)
    written = orjson.loads(latest.read_bytes())["targets"]
    assert [t["verdict"] for t in written] == list(_verdicts(_AT_CONDITIONS).values())
    assert written[1] == {
        "key": "ingest_ratio",
        "goal": "/v1/batch ≥ 0.60 of the bare endpoint",
        "value": 0.45,
        "unit": "ratio",
        "verdict": "missed",
        "why_not_judged": None,
    }


async def test_the_protocol_loop_times_each_protocol_on_each_request() -> None:
    best = await asyncio.wait_for(http_protocol.main(requests=20, rounds=2), 30)
    assert set(best) == {"GET", "POST 1 KB"}
    for by_protocol in best.values():
        assert set(by_protocol) == {"uvicorn", "percorso"}
        assert all(0 < us < 10_000 for us in by_protocol.values())
