"""Load a topology file: YAML (C parser when present) → located raw values → Experiment via the Python API.

Every raw value remembers the line it came from, so each error names file:line.
"""
from __future__ import annotations

import difflib
import gc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from nestbed.errors import TopologyError
from nestbed.model import fastyaml
from nestbed.model.located import Located, LocatedList
from nestbed.model.routes import HINT as ROUTE_HINT
from nestbed.model.routes import UserRoute, user_route
from nestbed.model.topology import EmbedSettings, Experiment

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
T = TypeVar("T")

TOP_KEYS = ("name", "nodes", "links", "lans", "routing", "embed")
NODE_KEYS = ("kind", "count", "router", "commands", "host", "partition", "control", "cpus", "memory", "routes")
ROUTE_KEYS = ("to", "via")
LINK_KEYS = ("name", "ends", "bandwidth", "delay", "jitter", "loss", "queue")
LAN_KEYS = ("members", "bandwidth", "delay", "jitter", "loss", "queue")
MEMBER_KEYS = ("node", "ip", "egress", "ingress")    # egress/ingress: the member's own shaping
EMBED_KEYS = ("processes_in", "per_vhost", "per_host")
SHAPING_KEYS = ("bandwidth", "delay", "jitter", "loss", "queue")


@dataclass
class _Source:
    path: str

    def at(self, line: int) -> str:
        return f"{self.path}:{line}"


def _to_python(node: yaml.Node, loader: Any) -> Any:
    if isinstance(node, yaml.MappingNode):
        result = Located()
        result.line = node.start_mark.line + 1
        result.key_lines = {}
        for key_node, value_node in node.value:
            key = _to_python(key_node, loader)
            if not isinstance(key, (str, int)):
                raise TopologyError(f"key {key!r} is not a name", f"{{path}}:{key_node.start_mark.line + 1}")
            key = str(key)
            if key in result:
                raise TopologyError(f"key {key!r} appears twice (first on line {result.key_lines[key]})",
                                    f"{{path}}:{key_node.start_mark.line + 1}")
            result[key] = _to_python(value_node, loader)
            result.key_lines[key] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        items = LocatedList(_to_python(item, loader) for item in node.value)
        items.line = node.start_mark.line + 1
        items.item_lines = [item.start_mark.line + 1 for item in node.value]
        return items
    return loader.construct_object(node, deep=True)


def parse_yaml(text: str, path: str) -> Any:
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise TopologyError("the file is empty", f"{path}:1", "start with e.g. name: lan3")
        return _to_python(root, loader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else 1
        raise TopologyError(f"YAML syntax: {err.problem or err.context}", f"{path}:{line}",
                            "check indentation, colons and quotes") from None
    except yaml.YAMLError as err:
        raise TopologyError(f"YAML syntax: {err}", f"{path}:1") from None
    except TopologyError as err:
        raise TopologyError(err.message, (err.location or "").replace("{path}", path), err.hint) from None
    finally:
        loader.dispose()


def _check_keys(value: Any, allowed: tuple[str, ...], what: str, source: _Source, line: int) -> dict[str, Any]:
    if not isinstance(value, dict):
        found = "a list" if isinstance(value, list) else "empty" if value is None else type(value).__name__
        raise TopologyError(f"{what} must be a mapping (key: value), not {found}", source.at(line))
    for key in value:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(allowed)}"
            raise TopologyError(f"unknown key {key!r} in {what}", source.at(_line_of(value, key, line)), hint)
    return value


# The fast reader (fastyaml) locates only what later stages name in errors (nodes, links, LANs); inner mappings
# and lists it gives as plain dicts and lists, which take the line of the thing they belong to.
def _line_of(mapping: Any, key: str, default: int | None = None) -> int:
    lines = getattr(mapping, "key_lines", None)
    own = getattr(mapping, "line", 1) if default is None else default
    return lines.get(key, own) if lines is not None else own


def _item_line(items: Any, index: int, default: int) -> int:
    lines = getattr(items, "item_lines", None)
    return lines[index] if lines is not None else default


def _shaping(raw: dict[str, Any]) -> dict[str, Any]:
    return {key: raw[key] for key in SHAPING_KEYS if key in raw}


def _member(raw: Any, source: _Source, line: int, where: str) -> Any:
    """A link end or LAN member: a node name, or {node: NAME, ip: ADDR/LEN}."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, dict):
        _check_keys(raw, MEMBER_KEYS, f"member of {where}", source, line)
        if "node" not in raw:
            raise TopologyError(f"member of {where} has no node", source.at(line), "write {node: b, ip: 10.1.0.20/24}")
        ref = (raw["node"], raw["ip"]) if "ip" in raw else raw["node"]
        if "egress" not in raw and "ingress" not in raw:
            return ref
        end = Experiment._endpoint(ref, source.at(line))
        own = {}
        for which in ("egress", "ingress"):
            if which in raw:
                at = source.at(_line_of(raw, which, line))
                if not isinstance(raw[which], dict):
                    raise TopologyError(f"{which} of {end.node} in {where} must be a mapping of shaping keys", at,
                                        "write e.g. {bandwidth: 10Mbit, delay: 5ms}")
                _check_keys(raw[which], SHAPING_KEYS, f"{which} of {end.node} in {where}", source,
                            _line_of(raw, which, line))
                own[which] = getattr(Experiment.member(end.node, location=at, **{which: raw[which]}), which)
        return Experiment.member(end.node, egress=own.get("egress"), ingress=own.get("ingress"),
                                 location=source.at(line)) if end.ip is None else \
            Experiment.member(end.node, str(end.ip), egress=own.get("egress"), ingress=own.get("ingress"),
                              location=source.at(line))
    raise TopologyError(f"member {raw!r} of {where} must be a node name or {{node: NAME, ip: ADDR/LEN}}",
                        source.at(line))


def _routes(node: str, raw: Any, source: _Source, line: int) -> list[UserRoute]:
    """A node's `routes:`: a list of {to, via}, each at its own line (model/routes.py checks the values)."""
    if not isinstance(raw, list):
        raise TopologyError(f"node {node!r}: routes must be a list", source.at(line), ROUTE_HINT)
    routes = []
    for i, item in enumerate(raw):
        item_line = _item_line(raw, i, line)
        _check_keys(item, ROUTE_KEYS, f"a route of node {node!r}", source, item_line)
        for key in ROUTE_KEYS:
            if key not in item:
                raise TopologyError(f"a route of node {node!r} has no {key}", source.at(item_line), ROUTE_HINT)
        routes.append(user_route(node, item["to"], item["via"], source.at(item_line)))
    return routes


def build_experiment(raw: Any, path: str) -> Experiment:
    source = _Source(path)
    top = _check_keys(raw, TOP_KEYS, "the topology", source, getattr(raw, "line", 1))
    if "name" not in top:
        raise TopologyError("the topology has no name", source.at(getattr(top, "line", 1)),
                            "add e.g. name: lan3 at the top")
    exp = Experiment(top["name"], source.at(_line_of(top, "name")), source=path)
    if "routing" in top:
        exp.set_routing(top["routing"], source.at(_line_of(top, "routing")))
    if "embed" in top:
        embed = _check_keys(top["embed"], EMBED_KEYS, "embed", source, _line_of(top, "embed"))
        exp.embed = _embed_settings(embed, source)

    nodes = top.get("nodes") or Located()
    if not isinstance(nodes, dict):
        raise TopologyError("nodes must be a mapping of node names", source.at(_line_of(top, "nodes")))
    nodes_line = _line_of(top, "nodes")
    for name, spec in nodes.items():
        line = _line_of(nodes, name, nodes_line)
        spec = {} if spec is None else spec
        _check_keys(spec, NODE_KEYS, f"node {name!r}", source, line)
        options = dict(spec)
        kind = options.pop("kind", "process")
        options["location"] = source.at(line)
        if "routes" in options:
            options["routes"] = _routes(name, options["routes"], source, _line_of(spec, "routes", line))
        exp.node(name, kind, **options)

    # Links and LANs keep file order between them: interfaces are numbered in that order.
    segments: list[tuple[int, str, Any]] = []
    links = top.get("links") or LocatedList()
    if not isinstance(links, list):
        raise TopologyError("links must be a list", source.at(_line_of(top, "links")),
                            "write - {ends: [a, b]} per link")
    links_line = _line_of(top, "links")
    for index, spec in enumerate(links):
        segments.append((_item_line(links, index, links_line), "link", spec))
    lans = top.get("lans") or Located()
    if not isinstance(lans, dict):
        raise TopologyError("lans must be a mapping of LAN names", source.at(_line_of(top, "lans")),
                            "write lan0: {members: [a, b]}")
    lans_line = _line_of(top, "lans")
    for name, spec in lans.items():
        segments.append((_line_of(lans, name, lans_line), name, spec))
    for line, name, spec in sorted(segments, key=lambda item: item[0]):
        if name == "link" and isinstance(spec, dict):
            _add_link(exp, spec, source, line)
        elif name == "link":
            raise TopologyError("a link must be a mapping like {ends: [a, b]}", source.at(line))
        else:
            _add_lan(exp, name, spec, source, line)
    exp.validate()
    return exp


def _add_link(exp: Experiment, spec: dict[str, Any], source: _Source, line: int) -> None:
    _check_keys(spec, LINK_KEYS, "link", source, line)
    ends = spec.get("ends")
    if not isinstance(ends, list) or len(ends) != 2:
        raise TopologyError("a link needs exactly two ends", source.at(_line_of(spec, "ends", line)),
                            "write ends: [a, b] (use a LAN for more members)")
    # Each end carries its own line, so errors about it (unknown node, address) point at it.
    at = source.at(line)
    members = []
    for i, end in enumerate(ends):
        end_line = _item_line(ends, i, line)
        end_at = at if end_line == line else source.at(end_line)
        members.append(exp._endpoint(_member(end, source, end_line, "link"), end_at))
    exp.link(members[0], members[1], name=spec.get("name"), location=at, **_shaping(spec))


def _add_lan(exp: Experiment, name: str, spec: Any, source: _Source, line: int) -> None:
    spec = _check_keys(spec, LAN_KEYS, f"lan {name!r}", source, line)
    members = spec.get("members")
    if not isinstance(members, list) or not members:
        raise TopologyError(f"lan {name!r} needs a list of members", source.at(_line_of(spec, "members", line)),
                            "write members: [a, b, c]")
    lines = [_item_line(members, i, line) for i in range(len(members))]
    refs = [exp._endpoint(_member(m, source, lines[i], f"lan {name!r}"), source.at(lines[i]))
            for i, m in enumerate(members)]
    exp.lan(name, refs, location=source.at(line), **_shaping(spec))


def _embed_settings(raw: dict[str, Any], source: _Source) -> EmbedSettings:
    settings = EmbedSettings()
    if "processes_in" in raw:
        if raw["processes_in"] not in ("host", "qemu"):
            raise TopologyError(f"embed.processes_in {raw['processes_in']!r} is not known",
                                source.at(_line_of(raw, "processes_in", 1)), "use host or qemu")
        settings.processes_in = raw["processes_in"]
    for key in ("per_vhost", "per_host"):
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TopologyError(f"embed.{key} {value!r} must be a positive integer",
                                    source.at(_line_of(raw, key, 1)))
            setattr(settings, key, value)
    return settings


FAST_READ_BYTES = 1 << 20     # files this big take the fast reader (hand-written ones stay on PyYAML's exact lines)


def load_topology_text(text: str, path: str = "<text>", fast: bool | None = None) -> Experiment:
    # Millions of small acyclic objects: the cyclic GC would only rescan them (40% of the time on 10⁵ nodes).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _load_text(text, path, fast)
    finally:
        if collecting:
            gc.enable()


def _load_text(text: str, path: str, fast: bool | None) -> Experiment:
    """Parse and validate a topology.

    `fast`: None reads files of FAST_READ_BYTES or more with the fast reader (fastyaml), True always tries it,
    False never. The fast reader locates nodes, links and LANs but not the values inside them, so any error while
    building is re-read with PyYAML to name the exact line; `Experiment.read_fast` tells later stages the same
    (see `with_exact_lines`)."""
    if fast is None:
        fast = len(text) >= FAST_READ_BYTES
    raw = fastyaml.parse(text) if fast else None
    if raw is not None:
        try:
            exp = build_experiment(raw, path)
            exp.read_fast = True
            return exp
        except TopologyError:
            pass
    return build_experiment(parse_yaml(text, path), path)


NS_SUFFIXES = (".ns", ".tcl")     # NS files (Emulab's and DETER's Tcl), read by model/nsfile


def load_topology(path: str | Path, fast: bool | None = None) -> Experiment:
    if Path(path).suffix in NS_SUFFIXES:
        from nestbed.model import nsfile
        return build_experiment(nsfile.read(path).raw, str(path))
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise TopologyError(f"topology file {str(path)!r} does not exist") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as err:
        raise TopologyError(f"cannot read topology file {str(path)!r}: {err.__class__.__name__}") from None
    return load_topology_text(text, str(path), fast)


def with_exact_lines(path: str | Path, stage: Callable[[Experiment], T]) -> T:
    """Load a topology and run `stage` (plan, embed…) on it. If the stage finds a mistake in a file that the fast
    reader read, read it again with PyYAML and rerun, so the one-line error names the exact line."""
    exp = load_topology(path)
    try:
        return stage(exp)
    except TopologyError as error:
        if not exp.read_fast or not (error.location or "").startswith(f"{path}:"):
            raise                 # exact already, or about something else (a cluster that is too small)
    return stage(load_topology(path, fast=False))
