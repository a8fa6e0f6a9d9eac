"""The stack under test: PostgreSQL, the Tansu broker, the API, consumers, the bare server.

PostgreSQL is ``PERCORSO_DATABASE_URL`` when set, else an embedded server whose data lives
under ``.percorso/bench-postgres``; either way every run gets a fresh database
(``percorso_bench_<ts>``), migrated, and dropped at the end. The broker is an embedded Tansu
on a free port with topics and a consumer group unique to the run. The API, consumers and
the bare server are child processes in their own sessions (a terminal's Ctrl-C reaches only
the bench, which then stops them); :meth:`Stack.close` stops everything it started, and is
safe to call twice and after a failed start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil

from app.auth.service import create_source, create_token
from app.config import Settings
from app.db import create_engine, create_session_factory
from app.kit import embedded
from app.kit.kafka import ensure_topics
from app.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


@dataclass
class Proc:
    """A child process, with its log file and sampled memory."""

    role: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    port: int | None = None
    peak_rss: int = 0
    last_rss: int = 0
    _ps: psutil.Process | None = None

    def __post_init__(self) -> None:
        with contextlib.suppress(psutil.Error):
            self._ps = psutil.Process(self.popen.pid)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def sample(self) -> int:
        """Current RSS in bytes (0 once the process is gone); updates the peak."""
        if self._ps is None:
            return 0
        try:
            rss = int(self._ps.memory_info().rss)
            for child in self._ps.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    rss += int(child.memory_info().rss)
        except psutil.Error:
            return 0
        self.last_rss = rss
        self.peak_rss = max(self.peak_rss, rss)
        return rss

    def cpu_seconds(self) -> float:
        """User + system CPU time the process and its live children (uvicorn workers) have
        used so far (0 once it is gone)."""
        if self._ps is None:
            return 0.0
        try:
            return cpu_seconds([self._ps, *self._ps.children(recursive=True)])
        except psutil.Error:
            return 0.0

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


class MemorySampler:
    """Samples the RSS of every registered process every ``interval_s`` on a thread (so a
    busy event loop in the bench does not skew it)."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self._interval = interval_s
        self._procs: list[Proc] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def watch(self, proc: Proc) -> None:
        with self._lock:
            self._procs.append(proc)
        proc.sample()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                procs = list(self._procs)
            for proc in procs:
                proc.sample()


@dataclass
class Stack:
    run_id: str
    run_dir: Path
    partitions: int = 6
    admin_url: str = ""
    database_url: str = ""
    database: str = ""
    bootstrap: str = ""
    topic: str = ""
    write_key: str = ""
    copy_source_id: Any = None
    source_id: Any = None
    read_token: str = ""
    external_postgres: bool = False
    procs: list[Proc] = field(default_factory=list)
    memory: MemorySampler = field(default_factory=MemorySampler)
    _postgres: embedded.EmbeddedPostgres | None = None
    _broker: embedded.EmbeddedBroker | None = None
    _db_created: bool = False

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        url = os.environ.get("PERCORSO_DATABASE_URL")
        if url:
            self.external_postgres = True
            self.admin_url = url
        else:
            data = Settings().data_dir / "bench-postgres"
            self._postgres = await asyncio.to_thread(embedded.EmbeddedPostgres.start, data)
            self.admin_url = self._postgres.url()
        self.database = f"percorso_bench_{self.run_id}"
        await embedded.ensure_database(self.admin_url, self.database)
        self._db_created = True
        self.database_url = embedded.with_database(self.admin_url, self.database)
        await asyncio.to_thread(upgrade, self.database_url)

        self._broker = await asyncio.to_thread(
            embedded.EmbeddedBroker(log_file=self.run_dir / "tansu.log").start
        )
        self.bootstrap = self._broker.bootstrap
        self.topic = f"touchpoints-bench-{self.run_id}"
        await embedded.wait_for_broker(self.bootstrap)
        await ensure_topics(self.settings())

        engine = create_engine(self.settings(), pool_size=1)
        try:
            async with create_session_factory(engine)() as session:
                source, self.write_key = await create_source(session, name="bench", channel="web")
                copy_source, _ = await create_source(session, name="bench-raw-copy", channel="web")
                _, self.read_token = await create_token(session, scope="read", name="bench")
                await session.commit()
        finally:
            await engine.dispose()
        self.source_id, self.copy_source_id = source.id, copy_source.id
        self.memory.start()

    async def close(self) -> None:
        self.terminate_children()
        self.memory.stop()
        if self._broker is not None:
            self._broker.stop()
            self._broker = None
        if self._db_created:
            self._db_created = False
            try:
                await embedded.drop_database(self.admin_url, self.database)
            except (OSError, asyncpg.PostgresError) as exc:
                print(f"bench: could not drop database {self.database}: {exc}", file=sys.stderr)
        if self._postgres is not None:
            await asyncio.to_thread(self._postgres.stop)
            self._postgres = None

    def terminate_children(self) -> None:
        for proc in self.procs:
            if proc.alive():
                proc.popen.terminate()
        for proc in self.procs:
            proc.stop()

    async def __aenter__(self) -> Stack:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- configuration --------------------------------------------------------------------

    def settings(self) -> Settings:
        return Settings(**{k.removeprefix("PERCORSO_").lower(): v for k, v in self._env().items()})

    def _env(self) -> dict[str, str]:
        return {
            "PERCORSO_DATABASE_URL": self.database_url,
            "PERCORSO_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "PERCORSO_KAFKA_TOPIC": self.topic,
            "PERCORSO_KAFKA_DEAD_LETTER_TOPIC": f"{self.topic}.dead-letter",
            "PERCORSO_KAFKA_CONSUMER_GROUP": f"pipeline-bench-{self.run_id}",
            "PERCORSO_KAFKA_PARTITIONS": str(self.partitions),
            # The bench measures capacity, not the per-source rate limit policy.
            "PERCORSO_INGEST_RATE_LIMIT_PER_S": "1000000000",
        }

    def child_env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PERCORSO_")}
        env.update(self._env())
        env.update(extra)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def postgres_cpu_seconds(self) -> float | None:
        """CPU time of the embedded server (:func:`server_cpu_seconds`); None for an
        external server, whose processes the bench cannot see."""
        if self._postgres is None:
            return None
        pidfile = (Settings().data_dir / "bench-postgres" / "postmaster.pid").resolve()
        try:
            return server_cpu_seconds(psutil.Process(int(pidfile.read_text().split()[0])))
        except (OSError, ValueError, IndexError, psutil.Error):
            return None

    def broker_cpu_seconds(self) -> float | None:
        """CPU time of the embedded broker (memory storage: its work per fetch grows with
        the records it holds); None when it is not running."""
        pid = self._broker.pid if self._broker is not None else None
        try:
            return None if pid is None else cpu_seconds([psutil.Process(pid)])
        except psutil.Error:
            return None

    def pg_dsn(self) -> str:
        return self.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)

    async def connect(self) -> asyncpg.Connection[Any]:
        return await asyncpg.connect(self.pg_dsn())

    # -- processes ------------------------------------------------------------------------

    def _spawn(
        self,
        role: str,
        args: list[str],
        env: dict[str, str],
        port: int | None,
        cwd: Path = ROOT,
    ) -> Proc:
        log_path = self.run_dir / f"{role}.log"
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                [sys.executable, *args],
                cwd=cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Proc(role, popen, log_path, port)
        self.procs.append(proc)
        self.memory.watch(proc)
        return proc

    async def start_api(
        self,
        workers: int = 1,
        cwd: Path = ROOT,
        env: dict[str, str] | None = None,
        role: str = "api",
    ) -> Proc:
        """The API, from the checkout in ``cwd`` (``python -m`` imports ``app`` from there),
        with the stack's settings and ``env``."""
        port = embedded.free_port()
        proc = self._spawn(
            role,
            ["-m", "app.cli", "api"],
            self.child_env(
                PERCORSO_HTTP_PORT=str(port),
                PERCORSO_HTTP_HOST="127.0.0.1",
                PERCORSO_HTTP_WORKERS=str(workers),
                **(env or {}),
            ),
            port,
            cwd,
        )
        await _wait_http(proc, f"http://127.0.0.1:{port}/readyz")
        return proc

    async def start_bare(self, workers: int = 1) -> Proc:
        port = embedded.free_port()
        args = ["-m", "bench.bare_app", "--port", str(port), "--workers", str(workers)]
        proc = self._spawn("bare", args, self.child_env(), port)
        await _wait_http(proc, f"http://127.0.0.1:{port}/healthz")
        return proc

    def start_consumer(
        self, index: int, cwd: Path = ROOT, env: dict[str, str] | None = None
    ) -> Proc:
        """A consumer, from the checkout in ``cwd``, with the stack's settings and ``env``."""
        port = embedded.free_port()
        return self._spawn(
            f"consumer-{index}",
            ["-m", "app.cli", "consume"],
            self.child_env(PERCORSO_PIPELINE_METRICS_PORT=str(port), **(env or {})),
            port,
            cwd,
        )

    def stop(self, proc: Proc) -> None:
        proc.stop()


def server_cpu_seconds(postmaster: psutil.Process) -> float:
    """CPU time of a PostgreSQL server: the postmaster, its live processes (backends,
    WAL writer, checkpointer…), and the backends it has reaped (their time stays in its
    children's times, so a connection closing during a phase does not take its CPU out of
    the phase's)."""
    times = postmaster.cpu_times()
    own = times.user + times.system + times.children_user + times.children_system
    return own + cpu_seconds(postmaster.children(recursive=True))


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """User + system CPU time of ``procs`` so far (one that has exited counts 0)."""
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


async def _wait_http(proc: Proc, url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while True:
            if not proc.alive():
                raise RuntimeError(
                    f"{proc.role} exited with {proc.popen.returncode}:\n{proc.log_tail()}"
                )
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{proc.role} not ready after {timeout_s}s:\n{proc.log_tail()}")
            await asyncio.sleep(0.1)
