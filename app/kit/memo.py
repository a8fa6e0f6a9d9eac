"""Answers remembered for one config at a time, bounded.

Both the API's batch check (which ids are usable) and identifier extraction see the same
few ids again and again, and their answers depend only on the ids and the process's
identity config. The config is compared by identity, not hashed: hashing a frozen
dataclass costs more than the lookup it guards. A process has one config; another one
(tests) starts the memo afresh.
"""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class ConfigMemo(Generic[K, V]):
    def __init__(self, limit: int) -> None:
        self._config: object = None
        self._answers: dict[K, V] = {}
        self._limit = limit

    def answers(self, config: object) -> dict[K, V]:
        """What is remembered for ``config`` (read it directly: this is the hot path)."""
        if self._config is not config:
            self._answers.clear()
            self._config = config
        return self._answers

    def remember(self, key: K, value: V) -> None:
        """Remember an answer for the config last asked about; a full memo starts over."""
        if len(self._answers) >= self._limit:
            self._answers.clear()
        self._answers[key] = value
