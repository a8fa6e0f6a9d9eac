"""The embedded Postgres is stopped by its last live holder, whoever died before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from app.kit import embedded


def test_holders_that_died_are_forgotten(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    holders = tmp_path / ".handle_pids.json"
    holders.write_text(json.dumps([dead.pid, os.getpid()]))

    embedded.forget_dead_holders(tmp_path)

    assert json.loads(holders.read_text()) == [os.getpid()]


def test_no_list_of_holders_is_left_alone(tmp_path: Path) -> None:
    embedded.forget_dead_holders(tmp_path)
    assert not (tmp_path / ".handle_pids.json").exists()
