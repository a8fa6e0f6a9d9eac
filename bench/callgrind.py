"""Instructions instead of seconds, for the in-process loops (``--instructions`` of
``bench.readpath`` and ``bench.handler``).

On a virtual machine the same code measures tens of percent apart from one minute to the
next, so a change of 5 or 10 % cannot be seen in seconds. Valgrind's callgrind counts the
instructions a loop executes instead: the same code on the same inputs counts within a
fraction of a percent, whatever else the machine does. The loop runs in a child process
under ``valgrind --tool=callgrind``, with counting off except inside :func:`counted` blocks.
Only this process's instructions count: not PostgreSQL's, nor a worker process's.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Set in the child that runs under callgrind.
_ACTIVE = "PERCORSO_BENCH_CALLGRIND"


def add_option(parser: argparse.ArgumentParser) -> None:
    """The ``--instructions`` option of a loop that counts with :func:`counted`."""
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions under callgrind (slow)"
    )


def wanted(args: argparse.Namespace) -> bool:
    """Whether to count: ``--instructions`` given, and this is not already the child (which
    gets the same command line and runs the loop)."""
    return bool(args.instructions) and not active()


def active() -> bool:
    """Whether this process is :func:`run`'s child (its timings are valgrind's, not ours)."""
    return bool(os.environ.get(_ACTIVE))


@contextmanager
def counted(label: str) -> Iterator[None]:
    """Count the block's instructions, as part ``label`` of :func:`run`'s answer; outside
    :func:`run`, nothing."""
    if not active():
        yield
        return
    _control("--instr=on")
    try:
        yield
    finally:
        _control(f"--dump={label}")
        _control("--instr=off")


def run(module: str, args: list[str] | None = None) -> dict[str, int]:
    """Run ``python -m module *args`` (by default, with this process's arguments) under
    callgrind; the instructions of each of its :func:`counted` blocks, by label, in order."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (Debian: apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-m",
                module,
                *(sys.argv[1:] if args is None else args),
            ],
            env={**os.environ, _ACTIVE: "1"},
            check=True,
            stderr=subprocess.DEVNULL,
        )
        counts: dict[str, int] = {}
        # One file per dump (callgrind.out.1, .2, …), then the part up to the exit.
        for part in sorted(Path(tmp).glob("callgrind.out.*"), key=lambda p: int(p.suffix[1:])):
            text = part.read_text(errors="replace")
            label = re.search(r"^desc: Trigger: dump (.*)$", text, re.MULTILINE)
            total = re.search(r"^totals: (\d+)$", text, re.MULTILINE)
            if label and total:
                counts[label.group(1)] = int(total.group(1))
        return counts


def _control(option: str) -> None:
    subprocess.run(["callgrind_control", option, str(os.getpid())], check=True, capture_output=True)
