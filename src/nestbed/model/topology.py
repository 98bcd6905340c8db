"""The vtopo as typed objects, and the Python API that builds it.

The YAML loader and Python users build an Experiment through the same methods, so a rule checked here holds for
both. Checks that need the whole topology (unknown nodes, counts that collide, addresses) run in `validate()`.
"""
from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from nestbed.errors import TopologyError
from nestbed.kinds import registry
from nestbed.model import units
from nestbed.model.routes import UserRoute, check_routes, user_routes
from nestbed.types import Location, NodeName, SegmentKind

if TYPE_CHECKING:
    from nestbed.kinds.base import NodeKind

EXPERIMENT_NAME = re.compile(r"[a-z][a-z0-9-]{0,14}")     # whole strings (fullmatch): "lab\n" is no name
OBJECT_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")
API = "<python>"
MAX_COUNT = 100_000


RESERVED_NODE_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})   # already in every hosts file


def check_name(name: object, what: str, location: Location) -> str:
    if not isinstance(name, str) or not OBJECT_NAME.fullmatch(name) or name.endswith("-"):
        raise TopologyError(f"{what} name {name!r} is not valid", location,
                            "use lowercase letters, digits and '-', starting with a letter (e.g. r1, bot-3)")
    if what == "node" and name in RESERVED_NODE_NAMES:
        raise TopologyError(f"node name {name!r} is reserved (every node's hosts file maps it to itself)",
                            location, "pick another name")
    return name


@dataclass(frozen=True)
class Shaping:
    """Traffic shaping of a link or LAN, applied on each member's egress."""
    bandwidth: int | None = None      # bit/s
    delay: float | None = None        # s, one way
    jitter: float | None = None       # s
    loss: float | None = None         # fraction
    queue: int | None = None          # packets

    @classmethod
    def parse(cls, location: Location, bandwidth: object = None, delay: object = None, jitter: object = None,
              loss: object = None, queue: object = None) -> Shaping:
        try:
            try:
                return _parse_shaping(bandwidth, delay, jitter, loss, queue)
            except TypeError:           # an unhashable value (a list, a mapping): parse it uncached to say why
                return _parse_shaping.__wrapped__(bandwidth, delay, jitter, loss, queue)
        except _ShapingError as err:
            raise TopologyError(err.args[0], location, err.args[1]) from None
        except ValueError as err:
            raise TopologyError(str(err), location) from None

    @property
    def needs_netem(self) -> bool:
        return bool(self.delay or self.jitter)

    @property
    def is_empty(self) -> bool:
        return not (self.bandwidth or self.delay or self.jitter or self.loss or self.queue)


class _ShapingError(ValueError):
    """(message, hint) of an inconsistent shaping."""


@functools.lru_cache(maxsize=4096, typed=True)     # typed: True and 1 must not share an entry
def _parse_shaping(bandwidth: object, delay: object, jitter: object, loss: object, queue: object) -> Shaping:
    """Shaping from raw values; cached because big topologies repeat a few settings on 10⁵ links."""
    shaping = Shaping(
        bandwidth=None if bandwidth is None else units.parse_bandwidth(bandwidth),
        delay=None if delay is None else units.parse_time(delay, "delay"),
        jitter=None if jitter is None else units.parse_time(jitter, "jitter"),
        loss=None if loss is None else units.parse_loss(loss),
        queue=None if queue is None else units.parse_queue(queue),
    )
    if shaping.jitter and not shaping.delay:
        raise _ShapingError("jitter needs a delay", "add e.g. delay: 10ms")
    if shaping.jitter and shaping.delay and shaping.jitter > shaping.delay:
        raise _ShapingError(f"jitter {units.format_time(shaping.jitter)} is larger than delay "
                            f"{units.format_time(shaping.delay)}", "lower the jitter")
    return shaping


@dataclass
class Node:
    name: NodeName
    kind: str = "process"              # a registered kind's name (nestbed.kinds.registry)
    router: bool = False
    commands: list[str] = field(default_factory=list)
    host: str | None = None
    partition: str | None = None
    control: bool = False
    cpus: float | None = None
    memory: int | None = None          # bytes
    count: int | None = None           # a group: expands to name-0 … name-(count-1)
    location: Location = API
    routes: tuple[UserRoute, ...] = ()   # `routes:` (model/routes.py), resolved at compile; a tuple: 10⁵ nodes

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Endpoint:
    """A node's attachment to a link or LAN, with an address when the user fixed one, and its own shaping:
    `egress` from this member into the segment, `ingress` from the segment to it. Traffic X→Y crosses the
    segment's shaping, X's egress and Y's ingress, composed (plan/pathshaping.py)."""
    node: NodeName
    ip: ipaddress.IPv4Interface | None = None
    location: Location = API
    egress: Shaping = Shaping()
    ingress: Shaping = Shaping()

    @property
    def has_own_shaping(self) -> bool:
        return not (self.egress.is_empty and self.ingress.is_empty)


@dataclass
class Link:
    name: str
    ends: tuple[Endpoint, Endpoint]
    shaping: Shaping = Shaping()
    location: Location = API
    kind: SegmentKind = "link"

    @property
    def endpoints(self) -> Sequence[Endpoint]:
        return self.ends


@dataclass
class Lan:
    name: str
    members: list[Endpoint]
    shaping: Shaping = Shaping()
    location: Location = API
    kind: SegmentKind = "lan"

    @property
    def endpoints(self) -> Sequence[Endpoint]:
        return self.members


Segment = Link | Lan
NodeRef = Node | str | tuple[Node | str, str] | Endpoint


@dataclass
class EmbedSettings:
    processes_in: str = "host"        # host | qemu
    per_vhost: int = 10
    per_host: int = 1000


class Experiment:
    """A virtual topology. Build it with the methods below or load it with `load_topology`.

    >>> exp = Experiment("lan3")
    >>> a, b = exp.process("a"), exp.process("b")
    >>> r = exp.process("r1", router=True)
    >>> lan = exp.lan("lan0", [a, b, r], bandwidth="100Mbit")
    """

    def __init__(self, name: str, location: Location = API, routing: str = "static",
                 embed: EmbedSettings | None = None, source: str | None = None):
        if not isinstance(name, str) or not EXPERIMENT_NAME.fullmatch(name):
            raise TopologyError(f"experiment name {name!r} is not valid", location,
                                "use 1-15 lowercase letters, digits and '-', starting with a letter")
        self.name = name
        self.location = location
        self.source = source
        self.nodes: dict[NodeName, Node] = {}      # as declared (groups not yet expanded)
        self.segments: dict[str, Segment] = {}    # links and LANs, in declaration order
        self._links = 0                            # links so far: unnamed links are numbered from it
        self.read_fast = False                     # loaded by the fast reader: locations name entities' lines
        self.routing = "static"
        self.set_routing(routing, location)
        self.embed = embed or EmbedSettings()

    # -- building ---------------------------------------------------------------------------------------
    def set_routing(self, routing: object, location: Location = API) -> None:
        if routing not in ("static", "none"):
            raise TopologyError(f"routing {routing!r} is not known", location, "use static or none")
        self.routing = str(routing)

    def node(self, name: str, kind: str = "process", *, router: bool = False, commands: Iterable[str] = (),
             host: str | None = None, partition: object = None, control: bool = False, cpus: object = None,
             memory: object = None, count: object = None, routes: object = (), location: Location = API) -> Node:
        check_name(name, "node", location)
        if name in self.nodes:
            raise TopologyError(f"node {name!r} is defined twice (first at {self.nodes[name].location})", location)
        node = _user_kind(name, kind, location).node(
            name, location, router=router, commands=commands, host=host, partition=partition, control=control,
            cpus=cpus, memory=memory, count=count)
        node.routes = user_routes(name, routes, location)
        self.nodes[name] = node
        return node

    def route(self, node: Node | str, to: Node | Segment | str, via: Node | str, location: Location = API) -> None:
        """Give `node` a route to `to` (a node, link, LAN or network) via the neighbour `via` (`routes:` in YAML)."""
        name = node.name if isinstance(node, Node) else node
        if name not in self.nodes:
            raise TopologyError(f"route from unknown node {name!r}", location, _suggest(name, self.nodes))
        self.nodes[name].routes += user_routes(name, [(to, via)], location)

    def process(self, name: str, **options: object) -> Node:
        return self.node(name, "process", **options)  # type: ignore[arg-type]

    def qemu(self, name: str, **options: object) -> Node:
        return self.node(name, "qemu", **options)  # type: ignore[arg-type]

    def physical(self, name: str, **options: object) -> Node:
        return self.node(name, "physical", **options)  # type: ignore[arg-type]

    def link(self, a: NodeRef, b: NodeRef, *, name: str | None = None, location: Location = API,
             **shaping: object) -> Link:
        name = self._segment_name(name, "link", location)
        ends = (self._endpoint(a, location), self._endpoint(b, location))
        link = Link(name, ends, Shaping.parse(location, **shaping), location)
        self.segments[name] = link
        return link

    def lan(self, name: str, members: Iterable[NodeRef], *, location: Location = API, **shaping: object) -> Lan:
        name = self._segment_name(name, "lan", location)
        endpoints = [self._endpoint(m, location) for m in members]
        lan = Lan(name, endpoints, Shaping.parse(location, **shaping), location)
        self.segments[name] = lan
        return lan

    def _segment_name(self, name: str | None, kind: str, location: Location) -> str:
        if name is None:        # link<position among links>, or the next free number if a user took that name
            number = self._links
            while f"link{number}" in self.segments:
                number += 1
            name = f"link{number}"
        check_name(name, kind, location)
        if name in self.segments:
            raise TopologyError(f"{kind} name {name!r} is already used by the "
                                f"{self.segments[name].kind} at {self.segments[name].location}", location)
        if kind == "link":
            self._links += 1
        return name

    @staticmethod
    def member(node: Node | str, ip: str | None = None, *, egress: dict[str, object] | Shaping | None = None,
               ingress: dict[str, object] | Shaping | None = None, location: Location = API) -> Endpoint:
        """A link end or LAN member with its own shaping: `exp.lan("l", [exp.member(a, egress={"bandwidth":
        "10Mbit"}), b])`. egress: this member → the segment; ingress: the segment → this member."""
        end = Experiment._endpoint(node if ip is None else (node, ip), location)
        return replace(end, egress=_own_shaping(egress, "egress", end.node, location),
                       ingress=_own_shaping(ingress, "ingress", end.node, location))

    @staticmethod
    def _endpoint(ref: NodeRef, location: Location) -> Endpoint:
        if isinstance(ref, Endpoint):
            return ref
        ip = None
        if isinstance(ref, tuple):
            ref, ip_text = ref
            try:
                ip = ipaddress.IPv4Interface(ip_text)
            except (ValueError, ipaddress.AddressValueError):
                raise TopologyError(f"address {ip_text!r} of {ref} is not an IPv4 address with prefix", location,
                                    "write e.g. 10.1.0.20/24") from None
            if "/" not in str(ip_text):
                raise TopologyError(f"address {ip_text!r} of {ref} has no prefix length", location,
                                    f"write e.g. {ip_text}/24")
            net = ip.network
            if net.prefixlen < 31 and ip.ip in (net.network_address, net.broadcast_address):
                which = "network" if ip.ip == net.network_address else "broadcast"
                raise TopologyError(f"address {ip_text} of {ref} is the {which} address of {net}", location,
                                    "pick a host address inside the subnet")
            if net.prefixlen > 30:
                raise TopologyError(f"address {ip_text} of {ref}: prefix /{net.prefixlen} is too small", location,
                                    "use /30 or shorter")
        name = ref.name if isinstance(ref, Node) else ref
        if not isinstance(name, str):
            raise TopologyError(f"{name!r} is not a node name", location)
        return Endpoint(name, ip, location)

    # -- reading ----------------------------------------------------------------------------------------
    def expanded_nodes(self) -> dict[NodeName, Node]:
        """Every concrete node, groups expanded (``bot`` with count 3 → bot-0, bot-1, bot-2)."""
        nodes: dict[NodeName, Node] = {}
        for node in self.nodes.values():
            names = [node.name] if node.count is None else [f"{node.name}-{i}" for i in range(node.count)]
            for name in names:
                if name in nodes:
                    # Declared names are unique, so one of the two is a group member: name its group.
                    if node.count is not None:
                        clash = f"node {name!r} from {node.name!r} (count {node.count}) collides with node {name!r}"
                    else:
                        group = self.nodes[name.rsplit("-", 1)[0]]
                        clash = f"node {name!r} collides with {name!r} from {group.name!r} (count {group.count})"
                    raise TopologyError(f"{clash} at {nodes[name].location}", node.location, "rename one of them")
                nodes[name] = node if node.count is None else _member_of(node, name)
        return nodes

    def segment_members(self, segment: Segment, nodes: dict[NodeName, Node]) -> list[Endpoint]:
        """A segment's endpoints with group names expanded to their members."""
        members: list[Endpoint] = []
        for end in segment.endpoints:
            group = self.nodes.get(end.node)
            if group is not None and group.count is not None:
                if segment.kind == "link":
                    raise TopologyError(f"link {segment.name!r} ends at {end.node!r}, a group of {group.count} "
                                        f"nodes", end.location, f"name one node, e.g. {end.node}-0, or use a LAN")
                if end.ip is not None:
                    raise TopologyError(f"{end.node!r} is a group of {group.count} nodes and cannot take one "
                                        f"address", end.location, "give addresses to its members instead")
                members.extend(Endpoint(f"{end.node}-{i}", None, end.location, end.egress, end.ingress)
                               for i in range(group.count))
            elif end.node not in nodes:
                raise TopologyError(f"{segment.kind} {segment.name!r} names unknown node {end.node!r}",
                                    end.location, _suggest(end.node, nodes))
            else:
                members.append(end)
        return members

    def validate(self) -> None:
        """Whole-topology checks; raises TopologyError at the first problem."""
        nodes = self.expanded_nodes()
        for segment in self.segments.values():
            members = self.segment_members(segment, nodes)
            seen: dict[str, Endpoint] = {}
            for end in members:
                if end.node in seen:
                    what = "links a node to itself" if segment.kind == "link" else f"lists {end.node!r} twice"
                    raise TopologyError(f"{segment.kind} {segment.name!r} {what}"
                                        + (f" ({end.node!r})" if segment.kind == "link" else ""), end.location)
                seen[end.node] = end
            if segment.kind == "lan" and len(members) < 1:
                raise TopologyError(f"lan {segment.name!r} has no members", segment.location)
        check_routes(self, nodes)


def _user_kind(node: str, kind: object, location: Location) -> NodeKind:
    """The kind a topology names; the testbed's own kinds (vhost) are unknown to users."""
    try:
        found = registry.get(kind)      # type: ignore[arg-type]
    except registry.UnknownKind:
        found = None
    if found is None or not found.user_visible:
        raise TopologyError(f"node {node!r} has unknown kind {kind!r}", location,
                            f"use one of {', '.join(registry.names())}")
    return found


OWN_SHAPING_KEYS = ("bandwidth", "delay", "jitter", "loss", "queue")


def _own_shaping(values: dict[str, object] | Shaping | None, which: str, node: str, location: Location) -> Shaping:
    if values is None:
        return Shaping()
    if isinstance(values, Shaping):
        return values
    if not isinstance(values, dict):
        raise TopologyError(f"{which} of {node} must be a mapping of shaping keys", location,
                            "write e.g. {bandwidth: 10Mbit, delay: 5ms}")
    for key in values:
        if key not in OWN_SHAPING_KEYS:
            import difflib
            close = difflib.get_close_matches(str(key), OWN_SHAPING_KEYS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(OWN_SHAPING_KEYS)}"
            raise TopologyError(f"unknown key {key!r} in {which} of {node}", location, hint)
    try:
        return Shaping.parse(location, **values)
    except TopologyError as error:
        raise TopologyError(f"{which} of {node}: {error.message}", location, error.hint) from None


def _member_of(group: Node, name: str) -> Node:
    member = Node(**{**group.__dict__, "name": name, "count": None, "commands": list(group.commands)})
    return member


def _suggest(name: str, known: Iterable[str]) -> str:
    import difflib
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"did you mean {close[0]!r}?" if close else "define it under nodes:"
