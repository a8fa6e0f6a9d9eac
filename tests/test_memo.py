"""Answers remembered per config: another config starts afresh; a full memo starts over."""

from __future__ import annotations

from app.kit.memo import ConfigMemo


def test_answers_are_per_config_and_bounded() -> None:
    memo: ConfigMemo[str, int] = ConfigMemo(limit=2)
    first, second = object(), object()
    memo.answers(first)
    memo.remember("a", 1)
    memo.remember("b", 2)
    assert memo.answers(first) == {"a": 1, "b": 2}
    memo.remember("c", 3)  # full: starts over
    assert memo.answers(first) == {"c": 3}
    assert memo.answers(second) == {}  # another config
    assert memo.answers(first) == {}
