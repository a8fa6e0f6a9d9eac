"""Health, readiness, metrics, and what the API does when the broker or the database is
gone."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.cli import main
from app.config import Settings
from app.health.check import container_command
from app.kit.embedded import free_port, port_open, with_database
from app.main import create_app
from tests.helpers import basic, bearer, kill_api_connections, scalar, serving


async def test_health_ready_and_metrics_need_no_credentials(app_client: httpx.AsyncClient) -> None:
    assert (await app_client.get("/healthz")).json() == {"status": "ok"}
    ready = await app_client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": True, "broker": True, "spool": True}
    metrics = await app_client.get("/metrics")
    assert metrics.status_code == 200
    assert "percorso_ingest_events_accepted_total" in metrics.text


@pytest.fixture
async def brokerless_client(
    settings: Settings, db: AsyncEngine
) -> AsyncIterator[httpx.AsyncClient]:
    nowhere = settings.model_copy(
        update={
            "kafka_bootstrap_servers": f"127.0.0.1:{free_port()}",
            "kafka_publish_timeout_s": 1.0,
            "spool_enabled": False,
        }
    )
    async with serving(create_app(nowhere)) as client:
        yield client


async def test_without_a_broker_nor_spool_events_get_503_with_retry_after_and_readiness_fails(
    brokerless_client: httpx.AsyncClient, write_key: str, db: AsyncEngine
) -> None:
    """With the spool off (PERCORSO_SPOOL_ENABLED=false), as before there was one."""
    response = await brokerless_client.post(
        "/v1/track", json={"userId": "u", "event": "Product Viewed"}, headers=basic(write_key)
    )
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) > 0
    ready = await brokerless_client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"database": True, "broker": False}
    assert await scalar(db, "SELECT count(*) FROM events") == 0
    assert await scalar(db, "SELECT count(*) FROM spool") == 0


@pytest.mark.parametrize("database", ["down", "missing"])
async def test_without_a_database_requests_get_503_with_retry_after_and_readiness_fails(
    settings: Settings, write_key: str, read_token: str, database: str
) -> None:
    """A database that is down (connections refused) or that refuses the connection (no
    such database) is the 503 problem of every request that needs it, credentials checked
    or not; the pixel API still answers its GIF, with the verdict."""
    url = (
        f"postgresql://postgres@127.0.0.1:{free_port()}/percorso"
        if database == "down"
        else with_database(settings.database_url or "", "percorso_no_such_database")
    )
    # Validated anew: a copy would keep the SQLAlchemy URL cached from the database's.
    unavailable = Settings.model_validate({**settings.model_dump(), "database_url": url})
    customer = uuid.uuid4()
    call = {"writeKey": write_key, "userId": "ada", "event": "Email Opened"}
    async with serving(create_app(unavailable)) as client:
        answers = [
            await client.post(
                "/v1/track", json={"userId": "ada", "event": "e"}, headers=basic(write_key)
            ),
            await client.post(
                "/v1/contacts", json={"contacts": [{"crm_id": "C-1"}]}, headers=basic(write_key)
            ),
            await client.get(f"/v1/projects/{write_key}/settings"),
        ]
        for path in (
            f"/v1/customers/{customer}",
            f"/v1/customers/{customer}/timeline",
            f"/v1/customers/{customer}/journey",
            "/v1/customers/lookup?kind=email&value=ada@example.com",
            "/v1/contacts/changes",
            "/v1/journey/model",
        ):
            answers.append(await client.get(path, headers=bearer(read_token)))
        pixel = await client.get(
            "/v1/pixel/track", params={"data": base64.b64encode(orjson.dumps(call)).decode()}
        )
        ready = await client.get("/readyz")
    for answer in answers:  # each a documented problem+json (serving checks)
        assert answer.status_code == 503, (answer.request.url, answer.text)
        assert answer.headers["retry-after"] == "1"
        assert answer.json()["type"].endswith("service-unavailable")
        assert answer.json()["detail"] == "The database could not be reached; retry."
    assert pixel.status_code == 200
    assert pixel.content.startswith(b"GIF89a")
    assert pixel.headers["x-percorso-verdict"].startswith("service-unavailable:")
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"database": False, "broker": True, "spool": False}


async def test_a_key_first_used_while_the_database_is_unavailable_works_once_it_is_back(
    settings: Settings, db: AsyncEngine, write_key: str
) -> None:
    """A lookup that fails caches nothing: not the key as unknown, for the cache's time."""
    cached = settings.model_copy(update={"auth_cache_ttl_s": 300.0})
    path = f"/v1/projects/{write_key}/settings"  # the source of a write key, as every call
    async with serving(create_app(cached)) as client:
        assert (await client.get("/readyz")).status_code == 200  # a pooled connection
        assert await kill_api_connections(db) >= 1  # a database restart, say
        lost = await client.get(path)
        assert lost.status_code == 503
        again = await client.get(path)
        assert again.status_code == 200, again.text


async def _percorso(*args: str, env: dict[str, str], output: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "app.cli", *args),
        env={**os.environ, "PERCORSO_ENVIRONMENT": "test", **env},
        stdout=output,
        stderr=asyncio.subprocess.STDOUT,
    )


async def _healthcheck(process: str, env: dict[str, str]) -> tuple[int | None, str]:
    check = await _percorso("healthcheck", process, env=env, output=asyncio.subprocess.PIPE)
    found, _ = await asyncio.wait_for(check.communicate(), 30)
    return check.returncode, found.decode().strip()


@asynccontextmanager
async def _running(command: str, env: dict[str, str], port: int) -> AsyncIterator[None]:
    """``percorso <command>`` in its own process, once it listens on ``port``."""
    process = await _percorso(command, env=env, output=asyncio.subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not port_open("127.0.0.1", port):
            assert process.returncode is None, f"percorso {command} exited"
            assert time.monotonic() < deadline, f"percorso {command} never listened"
            await asyncio.sleep(0.1)
        yield
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            process.kill()
            await process.wait()


def _servers(settings: Settings) -> dict[str, str]:
    return {
        "PERCORSO_DATABASE_URL": settings.database_url or "",
        "PERCORSO_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
    }


async def test_healthcheck_passes_while_the_api_answers_on_its_port_and_fails_elsewhere(
    settings: Settings,
    engine: AsyncEngine,  # the broker answers
) -> None:
    port = free_port()
    env = {**_servers(settings), "PERCORSO_HTTP_PORT": str(port)}
    async with _running("api", env, port):
        assert await _healthcheck("api", env) == (0, f"http://127.0.0.1:{port}/healthz: 200")
    nowhere = {**env, "PERCORSO_HTTP_PORT": str(free_port())}
    code, found = await _healthcheck("api", nowhere)
    assert (code, found.endswith("Connection refused")) == (1, True)


async def test_healthcheck_of_a_consumer_asks_its_metrics_server(
    settings: Settings,
    engine: AsyncEngine,  # the broker answers
) -> None:
    port = free_port()
    env = {
        **_servers(settings),
        "PERCORSO_PIPELINE_METRICS_PORT": str(port),
        # A group and topics of its own: this consumer must take no other test's events.
        "PERCORSO_KAFKA_TOPIC": f"healthcheck-{port}",
        "PERCORSO_KAFKA_DEAD_LETTER_TOPIC": f"healthcheck-{port}.dead-letter",
        "PERCORSO_KAFKA_CONSUMER_GROUP": f"healthcheck-{port}",
    }
    async with _running("consume", env, port):
        assert await _healthcheck("consume", env) == (0, f"http://127.0.0.1:{port}/metrics: 200")
    assert (await _healthcheck("consume", env))[0] == 1  # stopped: nothing listens


@pytest.mark.parametrize(
    ("cmdline", "command"),
    [
        # docker run percorso consume: the entry point's script, run by its interpreter
        (b"/opt/percorso/bin/python\0/opt/percorso/bin/percorso\0consume\0", "consume"),
        (b"/sbin/docker-init\0--\0percorso\0api\0", "api"),  # docker run --init
        (b"/usr/local/bin/python\0-m\0app.cli\0migrate\0", "migrate"),
        (b"/sbin/init\0", None),
    ],
)
def test_healthcheck_checks_the_process_the_container_runs(
    tmp_path: Path, cmdline: bytes, command: str | None
) -> None:
    (tmp_path / "cmdline").write_bytes(cmdline)
    assert container_command(tmp_path / "cmdline") == command


@pytest.mark.parametrize(
    ("args", "missing"),
    [
        (["sources", "create", "--name", "website", "--channel", "web"], "PERCORSO_DATABASE_URL"),
        (["tokens", "list"], "PERCORSO_DATABASE_URL"),
        (["journey", "rebuild"], "PERCORSO_DATABASE_URL"),
        (["migrate"], "PERCORSO_DATABASE_URL"),
    ],
)
def test_a_command_without_its_server_says_which_setting_to_give(
    args: list[str],
    missing: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    # As beside `make run` in a new terminal: a traceback ending in RuntimeError before.
    for name in list(os.environ):
        if name.startswith("PERCORSO_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PERCORSO_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["percorso", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {missing} is not set: name the server"), error
    assert "make run" in error
    assert "Traceback" not in error
