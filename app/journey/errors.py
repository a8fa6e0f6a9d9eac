"""The one error a journey model raises when it cannot be loaded."""

from __future__ import annotations


class JourneyModelError(Exception):
    """A journey model file (or preset) is missing or invalid.

    ``str(error)`` reads ``"<file>, line <n>: <problem>"``, or ``"<file>: <problem>"`` when no
    line is known, so it can be shown to the model's author as is.
    """

    file: str
    line: int | None
    problem: str

    def __init__(self, file: str, line: int | None, problem: str) -> None:
        # args carries all three fields so the error survives pickling (worker processes).
        super().__init__(file, line, problem)
        self.file = file
        self.line = line
        self.problem = problem

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.file}: {self.problem}"
        return f"{self.file}, line {self.line}: {self.problem}"
