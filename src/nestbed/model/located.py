"""Parsed YAML values that remember where they came from, so errors can name file:line.

Both readers build them: PyYAML's (model.loader) and the fast rapidyaml one (model.fastyaml).
"""
from __future__ import annotations


class Located(dict):
    """A YAML mapping that knows its own line and each key's line."""
    line: int
    key_lines: dict[str, int]


class LocatedList(list):
    """A YAML sequence that knows its own line and each item's line."""
    line: int
    item_lines: list[int]
