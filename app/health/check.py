"""``percorso healthcheck``: whether the process a container runs answers (the Dockerfile's
HEALTHCHECK). Docker runs it every few seconds, so it imports little: the settings and
``http.client``."""

from __future__ import annotations

import http.client
import itertools
from pathlib import Path

from app.config import Settings

# What a process listening on every address is reached at from inside its container.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104


def container_command(cmdline: Path = Path("/proc/1/cmdline")) -> str | None:
    """The ``percorso`` command the container's first process runs (``api``, ``consume``,
    ``migrate``…), started as ``percorso …`` or ``python -m app.cli …``, directly or under
    an init (``docker run --init``); None when it runs no ``percorso`` command."""
    try:
        args = cmdline.read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    for program, command in itertools.pairwise(args):
        if program.rsplit("/", 1)[-1] == "percorso" or program == "app.cli":
            return command or None
    return None


def check(command: str | None, settings: Settings, timeout_s: float = 2.0) -> tuple[bool, str]:
    """Whether ``command``'s process answers, and what was found. The API answers
    ``/healthz`` on its HTTP port; a consumer, its metrics server
    (``PERCORSO_PIPELINE_METRICS_PORT``), when it has one. Other commands (``migrate``…) run
    once and serve nothing: they pass."""
    if command is None:
        return False, "process 1 runs no percorso command: name one (api or consume)"
    if command == "api":
        port, path = settings.http_port, "/healthz"
    elif command == "consume" and settings.pipeline_metrics_port:
        port, path = settings.pipeline_metrics_port, "/metrics"
    elif command == "consume":
        return True, "nothing to check: PERCORSO_PIPELINE_METRICS_PORT is not set"
    else:
        return True, f"nothing to check for `percorso {command}`"
    host = _WILDCARDS.get(settings.http_host, settings.http_host)
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}{path}"
    connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        connection.request("GET", path)
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException) as exc:  # refused, timed out, not HTTP
        return False, f"{url}: {exc}"
    finally:
        connection.close()
    return status == 200, f"{url}: {status}"
