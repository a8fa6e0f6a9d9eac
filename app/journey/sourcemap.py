"""Line numbers for a journey model file, so validation errors can point at the mistake.

`tomllib` returns plain dicts without positions, so the TOML map is built by scanning the
text: the n-th ``[[rules]]`` header is rule n, the ``[[rules.where]]`` headers after it are
its predicates, and ``key = ...`` lines are attributed to the table they sit in. The scan is
a heuristic (it does not parse values), which is fine for its one purpose: when it cannot
place a key it falls back to the enclosing table's line, or to no line at all. YAML models
get the same map from PyYAML's node tree, which does carry positions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_ARRAY_HEADER = re.compile(r"^\s*\[\[(?P<name>[^\[\]]+)\]\]")
_TABLE_HEADER = re.compile(r"^\s*\[(?P<name>[^\[\]]+)\]")
_KEY = re.compile(r"""^\s*(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>[A-Za-z0-9_-]+))\s*[.=]""")


@dataclass
class Section:
    """One table (a rule or a where predicate): its first line and its keys' lines."""

    line: int | None
    keys: dict[str, int] = field(default_factory=dict)
    where: list[Section] = field(default_factory=list)

    def at(self, key: str | None) -> int | None:
        if key is None:
            return self.line
        return self.keys.get(key, self.line)


@dataclass
class SourceMap:
    """Where things are in one model file. Every look-up may answer None (position unknown)."""

    top: dict[str, int] = field(default_factory=dict)
    rules: list[Section] = field(default_factory=list)

    def line(
        self, key: str | None = None, *, rule: int | None = None, where: int | None = None
    ) -> int | None:
        """Line of `key` at the top level, in rule `rule` (0-based) or in its `where` item."""
        if rule is None:
            return self.top.get(key) if key is not None else None
        if rule >= len(self.rules):
            # Rules written as an inline array: the best we know is where the array starts.
            return self.top.get("rules")
        section = self.rules[rule]
        if where is None:
            return section.at(key)
        if where >= len(section.where):
            return section.at("where")
        return section.where[where].at(key)


def _dotted_name(raw: str) -> list[str]:
    return [part.strip().strip("\"'") for part in raw.split(".")]


def toml_source_map(text: str) -> SourceMap:
    """Map a TOML model's tables and keys to 1-based line numbers by scanning its text."""
    smap = SourceMap()
    keys: dict[str, int] = smap.top
    open_quote: str | None = None  # inside a multi-line string, nothing looks like a key
    for number, line in enumerate(text.splitlines(), start=1):
        if open_quote is not None:
            if open_quote in line:
                open_quote = None
            continue
        if match := _ARRAY_HEADER.match(line):
            name = _dotted_name(match["name"])
            if name == ["rules"]:
                section = Section(number)
                smap.rules.append(section)
                keys = section.keys
            elif name == ["rules", "where"] and smap.rules:
                section = Section(number)
                smap.rules[-1].where.append(section)
                keys = section.keys
            else:
                keys = {}
            continue
        if match := _TABLE_HEADER.match(line):
            name = _dotted_name(match["name"])
            if len(name) == 1:
                smap.top.setdefault(name[0], number)
            elif len(name) == 2 and name[0] == "rules" and smap.rules:
                smap.rules[-1].keys.setdefault(name[1], number)
            keys = {}  # keys of a sub-table (e.g. [rules.count]) are not the rule's keys
            continue
        if match := _KEY.match(line):
            keys.setdefault(match["dq"] or match["sq"] or match["bare"] or "", number)
        for quote in ('"""', "'''"):
            if line.count(quote) % 2 == 1:
                open_quote = quote
                break
    return smap


def yaml_source_map(root: Any, yaml: Any) -> SourceMap:
    """Map a YAML model's keys to 1-based lines, from the node tree of ``yaml.compose``."""

    def items(node: Any) -> list[tuple[Any, Any]]:
        return list(node.value) if isinstance(node, yaml.MappingNode) else []

    def line(node: Any) -> int:
        return int(node.start_mark.line) + 1

    smap = SourceMap()
    for key_node, value_node in items(root):
        key = str(key_node.value)
        smap.top.setdefault(key, line(key_node))
        if key != "rules" or not isinstance(value_node, yaml.SequenceNode):
            continue
        for rule_node in value_node.value:
            section = Section(line(rule_node))
            smap.rules.append(section)
            for rule_key, rule_value in items(rule_node):
                section.keys.setdefault(str(rule_key.value), line(rule_key))
                if rule_key.value != "where" or not isinstance(rule_value, yaml.SequenceNode):
                    continue
                for where_node in rule_value.value:
                    where = Section(line(where_node))
                    section.where.append(where)
                    for where_key, _ in items(where_node):
                        where.keys.setdefault(str(where_key.value), line(where_key))
    return smap
