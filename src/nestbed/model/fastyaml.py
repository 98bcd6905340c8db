"""Fast reading of big topology files: rapidyaml (C++) → JSON → Python, with the lines of nodes, links and LANs.

PyYAML, even with its C parser, needs about 15 s for a 100,000-node file; this reader about 1.5 s. It answers
None — and the caller falls back to PyYAML — whenever it cannot promise PyYAML's reading of the text:
- the text uses a YAML 1.1 form that rapidyaml reads differently (yes/no/on/off booleans, octal and sexagesimal
  numbers, 1e3 without a dot, ~, timestamps, anchors, aliases, tags, merge keys, tabs, several documents);
- a key appears twice in a mapping (PyYAML's path reports it with its line);
- the nodes, links and LANs are not written in block style, where their lines can be found exactly;
- rapidyaml is not installed, or fails on the text.
Errors found later while building the experiment are also re-read by PyYAML, which names the exact line.
"""
from __future__ import annotations

import json
import re
from typing import Any

from nestbed.model.located import Located, LocatedList

try:
    import ryml
except ImportError:          # optional: without it every file takes the PyYAML path
    ryml = None

# Plain scalars whose meaning differs between PyYAML (YAML 1.1) and rapidyaml's JSON (YAML 1.2-like), and
# syntax only PyYAML should judge. The text is cut into tokens, and each distinct token is checked: one regex
# over 10 MB would take seconds. False alarms only cost speed, so the patterns are broad.
_TOKEN_SEPARATORS = re.compile(r"[\s\[\]{},#]+|:(?=\s|$)")
_RISKY_TOKEN = re.compile(
    r"yes|Yes|YES|no|No|NO|on|On|ON|off|Off|OFF|True|TRUE|False|FALSE|Null|NULL|~|<<|="   # 1.1 words
    r"|(?i:[-+]?(?:nan|inf|infinity))"
    r"|[-+]?0[0-9_]+(?:\.[0-9_]*)?"            # leading zero: octal in 1.1
    r"|[-+]?0[bxo][0-9a-fA-F_]*"               # binary, hex, 1.2 octal
    r"|\+[0-9.].*"                             # explicit plus sign
    r"|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?"   # sexagesimal 1:30
    r"|[-+]?[0-9.][0-9._]*[eE][-+]?[0-9]*"     # exponents (1.1 wants a dot and a sign)
    r"|[-+]?[0-9]*_[0-9_]*"                    # digit separators
    r"|[-+]?\.[0-9a-zA-Z]+"                    # .5 .inf .nan
    r"|[-+]?[0-9]+\."                          # 1.
    r"|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}.*"       # timestamps
    r"|[&*!].+")                               # anchors, aliases, tags
# Comments may say anything: drop whole-line comments, and trailing ones on lines without quotes before them.
_COMMENTS = re.compile(r"^[ ]*#.*$|^([^\"'\n#]*?)[ ]+#.*$", re.MULTILINE)


def _risky(text: str) -> bool:
    if "\t" in text or text.startswith(("---", "...", "%")) or "\n---" in text or "\n..." in text or "\n%" in text:
        return True                           # tabs, several documents, directives
    if "#" in text:
        text = _COMMENTS.sub(lambda m: m.group(1) or "", text)
    return any(_RISKY_TOKEN.fullmatch(token) for token in set(_TOKEN_SEPARATORS.split(text)))


class _Unsure(Exception):
    """The fast reading might differ from PyYAML's: use PyYAML."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    mapping = dict(pairs)
    if len(mapping) != len(pairs):
        raise _Unsure
    return mapping


class _Lines:
    """Finds the line of each top-level key, each key of a block mapping, each item of a block sequence.

    Every pattern starts with a newline so that the regex engine can search for its literal prefix; `^` with
    MULTILINE makes it try every position, which takes seconds on 10 MB."""

    def __init__(self, text: str):
        self.text = "\n" + text              # line n starts after the n-th newline

    def line_at(self, offset: int) -> int:
        return self.text.count("\n", 0, offset + 1)

    def _top_key(self, key: str) -> re.Match[str]:
        match = re.compile("\n" + re.escape(key) + r"[ ]*:(?=[ \n]|$)").search(self.text)
        if match is None:
            raise _Unsure
        return match

    def top_keys(self, keys: list[str]) -> dict[str, int]:
        return {key: self.line_at(self._top_key(key).start() + 1) for key in keys}

    def _section(self, key: str) -> tuple[int, int, str]:
        """The body of a top-level block collection: start and end offsets and its indentation."""
        match = re.compile(r"[ ]*(?:#.*)?\n").match(self.text, self._top_key(key).end())
        if match is None:                     # a flow collection on the key's own line
            raise _Unsure
        start = match.end() - 1               # at the newline that ends the key's line
        following = re.compile(r"\n(?!-[ \n])[^\s#]").search(self.text, start)
        end = following.start() if following else len(self.text)
        body = re.compile(r"\n([ ]*)[^\s#]").search(self.text, start, end)
        if body is None:
            raise _Unsure
        return start, end, body.group(1)

    def _count_entries(self, start: int, end: int, indent: str) -> int:
        return sum(1 for _ in re.compile("\n" + indent + r"[^\s#]").finditer(self.text, start, end))

    def mapping_keys(self, key: str, keys: list[str]) -> list[int]:
        """Lines of `keys`, in order, as keys of the block mapping under top-level `key`."""
        start, end, indent = self._section(key)
        if not indent or self._count_entries(start, end, indent) != len(keys):
            raise _Unsure                     # flow style, quoted keys split over lines, or other surprises
        lines, position, line = [], start, self.line_at(start) - 1   # the line of the key itself
        for name in keys:
            needle = "\n" + indent + name + ":"
            found = self.text.find(needle, position, end)
            after = found + len(needle)
            if found < 0 or (after < len(self.text) and self.text[after] not in " \n"):
                raise _Unsure
            line += self.text.count("\n", position, found + 1)
            position = found + 1
            lines.append(line)
        return lines

    def sequence_items(self, key: str, count: int) -> list[int]:
        """Lines of the `count` items of the block sequence under top-level `key`."""
        start, end, indent = self._section(key)
        lines, position, line = [], start, self.line_at(start) - 1   # the line of the key itself
        for match in re.compile("\n" + indent + r"-(?=[ \n])").finditer(self.text, start, end):
            line += self.text.count("\n", position, match.start() + 1)
            position = match.start() + 1
            lines.append(line)
        if len(lines) != count or self._count_entries(start, end, indent) != count:
            raise _Unsure
        return lines


def parse(text: str) -> Any | None:
    """The topology as plain Python values with lines (see model.located), or None to use PyYAML."""
    if ryml is None or _risky(text):
        return None
    try:
        tree = ryml.parse_in_arena(text.encode())
        raw = json.loads(ryml.emit_json_malloc(tree, tree.root_id()), object_pairs_hook=_unique_keys)
        if not isinstance(raw, dict):
            return None
        lines = _Lines(text)
        top = Located(raw)
        top.key_lines = lines.top_keys(list(raw))
        top.line = min(top.key_lines.values(), default=1)
        for key in ("nodes", "lans"):
            if isinstance(raw.get(key), dict) and raw[key]:
                mapping = Located(raw[key])
                mapping.line = top.key_lines[key]
                mapping.key_lines = dict(zip(mapping, lines.mapping_keys(key, list(mapping))))
                top[key] = mapping
        if isinstance(raw.get("links"), list) and raw["links"]:
            items = LocatedList(raw["links"])
            items.line = top.key_lines["links"]
            items.item_lines = lines.sequence_items("links", len(items))
            top["links"] = items
        return top
    except (_Unsure, ValueError, TypeError, RuntimeError):
        return None
    except Exception as error:     # rapidyaml's own parse errors (ryml.ExceptionParse and kin)
        if type(error).__module__.startswith("ryml"):
            return None
        raise
