"""NS queues (research §4 "Queues"): every link has a queue at each end (`toqueue` at its first node, `fromqueue`
at the second) and every LAN member one (`linkq`), reached as `[$ns link $a $b] queue` (a's end of the last link
made between a and b), `[$ns lanlink $lan $node] queue` or `$link set toqueue|fromqueue`, and set with
`$q set limit_ N`. The queue holds what leaves that node, so `limit_` is that end's egress queue in packets (in
bytes with `queue-in-bytes_ 1`: whole 1500-byte packets here, with a note).
RED and GRED parameters have no meaning here: nestbed's queues are drop-tail; they are listed as ignored.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from nestbed.errors import TopologyError
from nestbed.model.nsfile.evaluate import Evaluated, NsObject

RED_PARAMETERS = ("gentle_", "thresh_", "maxthresh_", "q_weight_", "linterm_", "mean_pktsize_", "wait_", "setbit_",
                  "drop-tail_", "bytes_", "red_")
PACKET_BYTES = 1500             # a limit in bytes, as whole packets of the experiment's MTU


@dataclass
class Queues:
    limits: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)   # (segment, node) → (packets, line)
    ignored: list[str] = field(default_factory=list)                               # "line N: what (why)"
    notes: list[str] = field(default_factory=list)


def queue_limits(evaluated: Evaluated, links_between: dict[frozenset[str], str]) -> Queues:
    """Each queue's `limit_`, as the egress queue of the end it belongs to. `links_between` names the last link
    made between each pair of nodes (Emulab's find_link)."""
    objects = {o.name: o for o in evaluated.objects}
    found = Queues()
    for obj in evaluated.objects:
        if obj.kind == "link" and len(obj.args) > 4 and obj.args[4] in ("RED", "GRED"):
            found.ignored.append(f"line {obj.line}: {obj.args[4]} queues (nestbed's queues are drop-tail)")
    settings = [(call, objects[call.target]) for call in evaluated.calls
                if call.target in objects and objects[call.target].kind == "queue" and call.cmd == "set"
                and len(call.args) == 2]
    # Emulab reads a queue's settings at the end: queue-in-bytes_ makes its limit_ bytes, wherever it is set.
    # Keyed by the queue's end: each `[$ns link a b] queue` is a new object here, but one queue in Emulab.
    in_bytes = {_end_or_none(queue, objects, links_between, evaluated.at(call.line)) for call, queue in settings
                if call.args[0] == "queue-in-bytes_" and call.args[1] not in ("0", "false")}
    for call, queue in settings:
        key, value = call.args
        at = evaluated.at(call.line)
        if key in RED_PARAMETERS:
            found.ignored.append(f"line {call.line}: queue {key} (nestbed's queues are drop-tail)")
        elif key == "queue-in-bytes_":
            pass
        elif key == "limit_":
            try:
                packets = int(value)
            except ValueError:
                packets = 0
            if packets < 1:
                raise TopologyError(f"queue limit_ {value!r} is not a positive number of packets", at,
                                    "write e.g. $queue set limit_ 50")
            end = _end(queue, objects, links_between, at)
            if end in in_bytes:
                packets = max(1, packets // PACKET_BYTES)
                found.notes.append(f"line {call.line}: queue limit_ {value} bytes (queue-in-bytes_) taken as "
                                   f"{packets} packet(s) of {PACKET_BYTES} bytes: nestbed's queues count packets")
            found.limits[end] = (packets, call.line)
        else:
            found.ignored.append(f"line {call.line}: queue {key} (not a queue setting nestbed knows)")
    return found


def _end(queue: NsObject, objects: dict[str, NsObject], links_between: dict[frozenset[str], str],
         at: str) -> tuple[str, str]:
    """(segment, sending node) of a queue."""
    owner_name, direction = (queue.args + ["", ""])[:2]
    owner = objects.get(owner_name)
    if owner is None:
        raise TopologyError(f"queue {queue.name} belongs to no link or LAN", at)
    if owner.kind == "simplex":                       # [$ns link a b] / [$ns lanlink lan node]
        first, second = (owner.args + ["", ""])[:2]
        if first in objects and objects[first].kind == "lan":
            return first, second
        segment = links_between.get(frozenset((first, second)))
        if segment is None:
            raise TopologyError(f"no link between {first} and {second} for this queue", at)
        return segment, first
    if owner.kind == "link":                          # $link set toqueue | fromqueue
        return owner.name, owner.args[0] if direction == "to" else owner.args[1]
    if owner.kind == "lan":                           # $lan set toqueue | fromqueue
        raise TopologyError(f"queue {queue.name}: LAN {owner.name} has no {direction}queue (a LAN has one queue "
                            f"per member, toqueue/fromqueue are a link's)", at, f"write [$ns lanlink ${owner.name} "
                            f"$node] queue")
    raise TopologyError(f"queue {queue.name} belongs to {owner.kind} {owner.name}, not to a link or LAN", at)


def _end_or_none(queue: NsObject, objects: dict[str, NsObject], links_between: dict[frozenset[str], str],
                 at: str) -> tuple[str, str] | None:
    """The end of a queue, None when it has none (an error only where its limit_ is set)."""
    try:
        return _end(queue, objects, links_between, at)
    except TopologyError:
        return None
