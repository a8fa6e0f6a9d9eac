"""``percorso dev``: the whole service on one machine, in the foreground.

Starts an embedded PostgreSQL (unless PERCORSO_DATABASE_URL is set) and the embedded Tansu
broker (unless PERCORSO_KAFKA_BOOTSTRAP_SERVERS is set), applies migrations, creates the
topics and a demo source and read token, then runs the API and one pipeline consumer as
child processes. Ctrl-C or SIGTERM stops every process it started.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from types import FrameType

from app.auth.service import ensure_source_key, replace_token
from app.config import Settings
from app.db import create_engine, create_session_factory
from app.kit import embedded
from app.kit.kafka import ensure_topics
from app.migrate import upgrade

DEMO_SOURCE = "demo-website"
DEMO_TOKEN = "demo read token"  # noqa: S105 (the token's name)


def run(settings: Settings) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    postgres = broker = None
    children: list[subprocess.Popen[bytes]] = []
    try:
        env = dict(os.environ)
        if not settings.database_url:
            postgres = embedded.EmbeddedPostgres.start(settings.data_dir / "postgres")
            asyncio.run(embedded.ensure_database(postgres.url(), "percorso"))
            env["PERCORSO_DATABASE_URL"] = postgres.url("percorso")
        if not settings.kafka_bootstrap_servers:
            port = 9092 if not embedded.port_open("127.0.0.1", 9092) else None
            broker = embedded.EmbeddedBroker(port, settings.data_dir / "tansu.log").start()
            env["PERCORSO_KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap
        settings = Settings(
            database_url=env["PERCORSO_DATABASE_URL"],
            kafka_bootstrap_servers=env["PERCORSO_KAFKA_BOOTSTRAP_SERVERS"],
        )
        write_key, read_token = asyncio.run(_prepare(settings))
        env.pop("PERCORSO_DEV_WRITE_KEY", None)
        env.pop("PERCORSO_DEV_READ_TOKEN", None)
        for role in ("api", "consume"):
            children.append(subprocess.Popen([sys.executable, "-m", "app.cli", role], env=env))  # noqa: S603
        if not _wait_until_serving(settings, children, stop):
            return 1
        _banner(settings, write_key, read_token)
        while not stop.wait(0.5):
            for child in children:
                if child.poll() is not None:
                    print(
                        f"percorso: {_role(child)} exited with {child.returncode}; stopping",
                        flush=True,
                    )
                    return 1
        return 0
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
        if broker:
            broker.stop()
        if postgres:
            postgres.stop()


async def _prepare(settings: Settings) -> tuple[str, str]:
    """Migrations, topics, and demo credentials (rotated unless fixed by PERCORSO_DEV_*)."""
    await asyncio.to_thread(upgrade, settings.sqlalchemy_url)
    await embedded.wait_for_broker(settings.kafka_bootstrap_servers or "")
    await ensure_topics(settings)
    fixed = Settings()
    fixed_key = fixed.dev_write_key.get_secret_value() if fixed.dev_write_key else None
    fixed_token = fixed.dev_read_token.get_secret_value() if fixed.dev_read_token else None
    engine = create_engine(settings, pool_size=1)
    try:
        async with create_session_factory(engine)() as session:
            write_key = await ensure_source_key(
                session, name=DEMO_SOURCE, channel="web", write_key=fixed_key
            )
            _, read_token = await replace_token(
                session, name=DEMO_TOKEN, scope="read", secret=fixed_token
            )
            await session.commit()
    finally:
        await engine.dispose()
    return write_key, read_token


def _role(child: subprocess.Popen[bytes]) -> str:
    args = child.args
    return str(args[-1]) if isinstance(args, list) else "a child process"


def _wait_until_serving(
    settings: Settings, children: list[subprocess.Popen[bytes]], stop: threading.Event
) -> bool:
    """Wait for the API to answer before telling the user it is running."""
    url = f"http://{settings.http_host}:{settings.http_port}/healthz"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not stop.is_set():
        if any(child.poll() is not None for child in children):
            print("percorso: a child process exited during start-up; stopping", flush=True)
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    print("percorso: the API did not come up within 60 s; stopping", flush=True)
    return False


def _banner(settings: Settings, write_key: str, read_token: str) -> None:
    base = f"http://{settings.http_host}:{settings.http_port}"
    dashboard = (
        f"  dashboard  {base}/dashboard/  (sign in with the demo read token)\n"
        if settings.dashboard_enabled
        else ""
    )
    print(
        f"""
Percorso is running.
  API        {base}        (docs: {base}/docs, health: {base}/readyz)
{dashboard}  database   {settings.database_url}
  broker     {settings.kafka_bootstrap_servers}

  demo write key   {write_key}
  demo read token  {read_token}

Send an event:
  curl -s -u '{write_key}:' {base}/v1/track -H 'content-type: application/json' \\
    -d '{{"userId": "ada", "event": "Product Viewed", "properties": {{"sku": "P-1"}}}}'

Then find the customer and their timeline:
  curl -s -H 'authorization: Bearer {read_token}' {base}/v1/customers/lookup \\
    -H 'content-type: application/json' -d '{{"kind": "user_id", "value": "ada"}}'

From a web page (analytics.js loads its settings from Percorso, and sends only here):
  AnalyticsBrowser.load({{ writeKey: '{write_key}', cdnURL: '{base}' }})

The other percorso commands (sources, tokens, import, email, journey), in another terminal:
  . .venv/bin/activate
  export PERCORSO_DATABASE_URL='{settings.database_url}'
  export PERCORSO_KAFKA_BOOTSTRAP_SERVERS='{settings.kafka_bootstrap_servers}'

Ctrl-C stops everything.
""",
        flush=True,
    )
