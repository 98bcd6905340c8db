"""What an experiment's store holds about a CATCH run (issue 12), read into plain data: the scenario's trigger
times, the bots' records (joined, cmd, refused), the botmaster's reply rounds, the legitimate clients'
transfers, and the counter samples of the traffic into the target on the link `bottleneck`. The figures and
checks come from it in control/catchreport.py, the PNGs in cli/catch_png.py.

One clock: every time here is a store `created` time (Unix seconds of the host that holds the store). The
engine's events and the counter samples are stamped there directly; records get it when the host agent receives
the mailbox line, a few ms after the program wrote it. The `time` programs put in their records is not used:
bots and clients in VMs stamp it with their guest's clock, which need not agree with the host's.
"""
from __future__ import annotations

import re
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from nestbed.agent.store import Store
from nestbed.control.traffic import Sample

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from nestbed.plan.hostplan import HostPlan

# The scenario's triggers (examples/catch/catch.aal), in the order they fire: the report's contract.
TRIGGERS = ("serversStarted", "linked", "botsStarted", "joined", "webStarted", "baseline", "forged", "pinged",
            "flooding", "stopped", "recovered", "reported")
LATE = 5.0      # s: records that reach the store after the scenario's end event still belong to its run


@dataclass(frozen=True)
class Names:
    """Who is who in the experiment (the defaults are the contract's, examples/catch/)."""
    target: str = "target"
    bottleneck: str = "bottleneck"                  # the link in front of the target
    bot_families: tuple[str, ...] = ("bota", "botb")  # node names, or families of counted nodes (bota-0 …)
    servers: tuple[str, ...] = ("irc1", "irc2")     # used when no ircd recorded that it started
    bot_agent: str = "q9bot"                        # agent name or kind of the records
    botmaster_agent: str = "botmaster"
    botmaster_nick: str = "botmaster"
    ircd_agent: str = "ircd"
    legit_agent: str = "legit"


@dataclass(frozen=True)
class Joined:
    node: str
    nick: str
    server: str
    at: float


@dataclass(frozen=True)
class BotRecord:
    """A bot's `cmd` or `refused` record."""
    node: str
    at: float
    cmd: str
    sender: str
    reason: str = ""
    seq: Any = None                   # the botmaster's SEQ of the command, when it carried one


@dataclass(frozen=True)
class Reply:
    nick: str
    rtt_ms: float
    text: str


@dataclass(frozen=True)
class Round:
    """One botmaster command and the answers it collected."""
    cmd: str
    seq: Any
    at: float                         # when the replies were recorded
    sent: float | None                # when it was sent (its `sent` record), if recorded
    expected: int
    replies: tuple[Reply, ...]


@dataclass(frozen=True)
class Transfer:
    """One legitimate HTTP transfer, at its completion."""
    node: str
    at: float
    seconds: float
    bytes: int
    ok: bool


@dataclass
class Counters:
    """Cumulative byte counters (traffic.Sample: its tx fields hold whichever direction is named here)."""
    into_target: list[Sample]         # through the bottleneck into the target
    out_of_target: list[Sample]       # and back out (the web server's answers)
    source: str                       # which counters: "target eth1 rx", or the other end's "rt eth2 tx"
    marked: bool                      # some counter of the store saw DSCP-8 bytes (attack counters work)
    bot_tx: dict[tuple[str, str], list[Sample]] = field(default_factory=dict)   # every bot interface's tx


@dataclass
class Run:
    origin: float                     # the scenario's first event: time 0 of the report
    end: float                        # the scenario's end event (or the last thing stored)
    reached_exit: bool | None         # None: no end event stored
    triggers: dict[str, float]        # first firing of each of TRIGGERS that fired
    bots: list[str]
    servers: list[str]
    joined: dict[str, Joined]         # the first `joined` of each bot node
    commands: list[BotRecord]
    refused: list[BotRecord]
    reported: dict[str, int]          # attack bytes each bot says it sent (its last `report`)
    rounds: list[Round]
    transfers: list[Transfer]
    capacity: int | None              # bit/s of the bottleneck
    counters: Counters

    def trigger(self, name: str) -> float | None:
        return self.triggers.get(name)


def open_store(path: Path | str) -> Store:
    """The store at path; ValueError (one line) when there is none or it is not a store."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no store {path}: give the path of an experiment's control.sqlite")
    try:
        store = Store(path)
        store.events(0)
        return store
    except sqlite3.Error as error:
        raise ValueError(f"{path} is not a nestbed control store ({error})") from None


def load(store: Store, plan: HostPlan, names: Names = Names()) -> Run:
    """Read the run out of the store; the plan gives the bots, the bottleneck's capacity and the target's end."""
    events = store.events(0)
    triggers, origin, end, reached = _scenario(events)
    ran = any(e["source"] == "scenario" for e in events)

    def of_this_run(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in records if origin <= r["created"] <= end + LATE] if ran else records
    bot_records = of_this_run(store.records(names.bot_agent))
    bots = _bots(plan, names.bot_families, bot_records)
    bot_set = set(bots)
    joined: dict[str, Joined] = {}
    commands: list[BotRecord] = []
    refused: list[BotRecord] = []
    reported: dict[str, int] = {}
    for record in bot_records:
        data, node = record["data"], str(record["node"])
        if not isinstance(data, dict) or node not in bot_set:
            continue
        what = data.get("event")
        if what == "joined" and node not in joined:
            joined[node] = Joined(node, str(data.get("nick", node)), server_node(plan, str(data.get("server", ""))),
                                  record["created"])
        elif what in ("cmd", "refused"):
            item = BotRecord(node, record["created"], str(data.get("cmd", "")), str(data.get("from", "")),
                             str(data.get("reason", "")), data.get("seq"))
            (commands if what == "cmd" else refused).append(item)
        elif what == "report" and isinstance(data.get("bytes"), int):
            reported[node] = data["bytes"]
    started = [str(r["node"]) for r in of_this_run(store.records(names.ircd_agent))
               if isinstance(r["data"], dict) and r["data"].get("event") == "started" and r["node"]]
    servers = list(dict.fromkeys(started)) or list(names.servers)
    capacity, target_iface, peers = _bottleneck(plan, names)
    counters = _counters(store, names.target, target_iface, peers, bot_set)
    if not ran:
        everything = [r["created"] for r in bot_records] + [s.created for s in counters.into_target]
        origin = min(everything, default=0.0)
        end = max(everything, default=0.0)
    return Run(origin=origin, end=end, reached_exit=reached, triggers=triggers, bots=bots, servers=servers,
               joined=joined, commands=commands, refused=refused, reported=reported,
               rounds=_rounds(of_this_run(store.records(names.botmaster_agent))),
               transfers=_transfers(of_this_run(store.records(names.legit_agent))), capacity=capacity,
               counters=counters)


def _scenario(events: list[dict[str, Any]]) -> tuple[dict[str, float], float, float, bool | None]:
    """The last run's first firing of each trigger (the engine's events of kind "trigger"; failing those, a node
    event of the name), its start (time 0), its end and whether it reached its exit. A store holds every
    `nestbed run` of the experiment: the last run is what follows the end event of the one before."""
    def kind(event: dict[str, Any]) -> Any:
        return event["data"].get("kind") if isinstance(event["data"], dict) else None
    scenario = [e for e in events if e["source"] == "scenario"]
    ends = [i for i, e in enumerate(scenario) if kind(e) == "end"]
    if ends and ends[-1] == len(scenario) - 1:
        first = ends[-2] + 1 if len(ends) > 1 else 0
    else:
        first = ends[-1] + 1 if ends else 0
    run = scenario[first:]
    if not run:
        times = [e["created"] for e in events]
        return {}, min(times, default=0.0), max(times, default=0.0), None
    origin = run[0]["created"]
    end, reached = run[-1]["created"], None
    if kind(run[-1]) == "end":
        reached = bool(run[-1]["data"].get("reached_exit"))
    fired: dict[str, float] = {}
    from_nodes: dict[str, float] = {}
    for event in events:
        if event["name"] not in TRIGGERS or not origin <= event["created"] <= end:
            continue
        if event["source"] == "scenario" and kind(event) == "trigger":
            fired.setdefault(event["name"], event["created"])
        elif event["source"] != "scenario":
            from_nodes.setdefault(event["name"], event["created"])
    return {**from_nodes, **fired}, origin, end, reached


def _bots(plan: HostPlan, families: tuple[str, ...], records: list[dict[str, Any]]) -> list[str]:
    """The plan's nodes named in `families` (a name, or name-N of a counted node), and any node with a bot's
    records, in the plan's order."""
    def is_bot(node: str) -> bool:
        return any(node == f or re.fullmatch(re.escape(f) + r"-\d+", node) for f in families)
    found = [n.name for n in plan.nodes if is_bot(n.name)]
    recorded = {str(r["node"]) for r in records if r["node"]}
    return found + sorted(recorded - set(found), key=_natural)


def server_node(plan: HostPlan, server: str) -> str:
    """The node a bot's `--server` names: a node, one of its addresses, or a name whose first label is a node
    (irc1.catch); else the text as it is."""
    names = {n.name for n in plan.nodes}
    if server in names:
        return server
    for node in plan.nodes:
        if any(i.address.split("/")[0] == server for i in node.interfaces):
            return node.name
    first = server.split(".")[0]
    return first if first in names else server


def _natural(name: str) -> tuple[str, int]:
    head, _, tail = name.rpartition("-")
    return (head, int(tail)) if tail.isdigit() else (name, -1)


def _bottleneck(plan: HostPlan, names: Names) -> tuple[int | None, str, list[tuple[str, str]]]:
    """The bottleneck's bandwidth (bit/s), the target's interface on it and the other ends' interfaces."""
    segment = next((s for s in plan.segments if s.name == names.bottleneck), None)
    if segment is None:
        raise ValueError(f"the plan has no link named {names.bottleneck!r} (its links: "
                         f"{', '.join(s.name for s in plan.segments) or 'none'})")
    target = next((iface for node, iface, _ in segment.members if node == names.target), None)
    if target is None:
        raise ValueError(f"{names.target!r} is not on the link {names.bottleneck!r}")
    peers = [(node, iface) for node, iface, _ in segment.members if node != names.target]
    capacity = segment.shaping.bandwidth if segment.shaping else None
    if capacity is None:
        node = next((n for n in plan.nodes if n.name == names.target), None)
        shaping = next((i.shaping for i in (node.interfaces if node else []) if i.name == target), None)
        capacity = shaping.bandwidth if shaping else None
    return capacity, target, peers


def _counters(store: Store, target: str, iface: str, peers: list[tuple[str, str]], bots: set[str]) -> Counters:
    """One pass over the counter samples: the target's end of the bottleneck (else its peer's), the bots'."""
    received: list[Sample] = []
    sent: list[Sample] = []
    peer_into: list[Sample] = []
    peer_out: list[Sample] = []
    bot_tx: dict[tuple[str, str], list[Sample]] = defaultdict(list)
    peer = peers[0] if peers else None
    marked = False
    for created, row in store.counter_series():
        marked = marked or bool(row.attack_rx_bytes or row.attack_tx_bytes)
        if row.node == target and row.iface == iface:
            received.append(Sample(created, row.rx_bytes or 0, row.attack_rx_bytes or 0))
            sent.append(Sample(created, row.tx_bytes or 0, row.attack_tx_bytes or 0))
        elif peer is not None and (row.node, row.iface) == peer:
            peer_into.append(Sample(created, row.tx_bytes or 0, row.attack_tx_bytes or 0))
            peer_out.append(Sample(created, row.rx_bytes or 0, row.attack_rx_bytes or 0))
        if row.node in bots and not _control_interface(row.iface):
            bot_tx[(row.node, row.iface)].append(Sample(created, row.tx_bytes or 0, row.attack_tx_bytes or 0))
    # The peer's end counts what enters the target where nobody samples the target (physical), or where its
    # counters cannot tell attack apart (a qemu target's boot agent reads /sys) while the peer's can.
    blind = not any(s.attack_tx_bytes for s in received) and any(s.attack_tx_bytes for s in peer_into)
    if peer is not None and len(peer_into) >= 2 and (len(received) < 2 or blind):
        return Counters(peer_into, peer_out, f"{peer[0]} {peer[1]} tx", marked, dict(bot_tx))
    return Counters(received, sent, f"{target} {iface} rx", marked, dict(bot_tx))


def _control_interface(iface: str) -> bool:
    return iface.startswith("ctl")


def _rounds(records: list[dict[str, Any]]) -> list[Round]:
    sent: dict[tuple[str, str], float] = {}
    rounds: list[Round] = []
    for record in records:
        data = record["data"]
        if not isinstance(data, dict):
            continue
        key = (str(data.get("cmd")), str(data.get("seq")))
        if data.get("event") == "sent":              # the latest sending of it: a seq may be used again
            sent[key] = record["created"]
        elif data.get("event") == "replies":
            answered = data.get("answered")
            replies = tuple(Reply(str(nick), float(answer["rtt_ms"]), str(answer.get("text", "")))
                            for nick, answer in (answered.items() if isinstance(answered, dict) else ())
                            if isinstance(answer, dict) and isinstance(answer.get("rtt_ms"), (int, float)))
            rounds.append(Round(key[0], data.get("seq"), record["created"], sent.get(key),
                                int(data.get("expected") or 0), replies))
    return rounds


def _transfers(records: list[dict[str, Any]]) -> list[Transfer]:
    result = []
    for record in records:
        data = record["data"]
        if not isinstance(data, dict) or not isinstance(data.get("bytes"), (int, float)):
            continue
        ok = data.get("status") == 200 and not data.get("error")
        result.append(Transfer(str(record["node"]), record["created"], float(data.get("seconds") or 0.0),
                               int(data["bytes"]), ok))
    result.sort(key=lambda t: t.at)
    return result
