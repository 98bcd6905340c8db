"""IRC command and control (the CATCH demo): `ircd` / `ngircd` (the servers), `q9bot` (the bots), `botmaster`.

    ircd       startServer, waitLinked(timeout=30), stopServer        execargs {template, network, port, quickack}
    q9bot      startBots, waitJoined(timeout=60), stopBots             execargs {servers, channel, botmaster, port}
    botmaster  connect, ping, flood(target, port, seconds, total), stop, report, http(url, count),
               forge(text, nick), outside(target)                      execargs {server, channel, bots, port, quickack}

The programs are nestbed.apps.ircd, q9bot and botmaster (one ngircd per server node, one bot per bot node, one
botmaster per master node that stays on the channel and takes its commands through a FIFO). quickack (default
true): the server and botmaster nodes ACK at once (apps/quickack.py: ngircd leaves Nagle on).
The servers of the group link in a chain, in group order. A bot uses the first server
that shares a segment with it, else servers[i % len]. The botmaster's secret, which the bots check, and the
servers' link passwords are HMAC-SHA256s of the experiment's credential, so nothing secret is in the AAL file.
The waits poll the store (ExperimentControl.records) or run a program with a bounded timeout; they block only
their own worker thread of the engine, and cleanup() cuts the polls short when the scenario ends.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nestbed import paths
from nestbed.model.units import parse_bandwidth
from nestbed.scenario.agents.base import AgentError, BuiltinAgent, app_argv

POLL_SECONDS = 0.25
STARTUP_SECONDS = 60.0     # what a program may take to start before its own timeout counts (Python under TCG)
LINK_PASSWORD_CHARS = 20   # ngircd before 18 kept 20 characters of a password
NETWORK = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,30}")


# -- what the parts derive from the experiment ------------------------------------------------------------------
def secret_for(credential: bytes, experiment: str) -> str:
    """The shared secret of the bots and their botmaster: HMAC-SHA256(credential, "q9bot " + experiment), hex."""
    return hmac.new(credential, f"q9bot {experiment}".encode(), hashlib.sha256).hexdigest()


def link_password(credential: bytes, server: str) -> str:
    """The password server NAME (irc1.catch) sends its peers: HMAC-SHA256(credential, "ircd-link " + NAME)."""
    return hmac.new(credential, f"ircd-link {server}".encode(), hashlib.sha256).hexdigest()[:LINK_PASSWORD_CHARS]


def experiment_credential(agent: str, experiment: str) -> bytes:
    """The experiment's credential, read on the controller (root; the experiment is up)."""
    path = paths.credential(paths.experiment_dir(experiment))
    try:
        return path.read_text().strip().encode()
    except OSError as error:
        raise AgentError(f"agent {agent!r}: cannot read the credential of experiment {experiment!r} ({path}): "
                         f"{error.strerror or error}; run as root, with the experiment up") from None


def expand(names: Any, known: list[str], what: str) -> list[str]:
    """Node names as AAL groups take them: a name given with count: N stands for name-0 … name-(N-1)."""
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, list) or not names:
        raise AgentError(f"{what} must be a list of node names, not {names!r}")
    found: list[str] = []
    for name in (str(n) for n in names):
        if name in known:
            found.append(name)
            continue
        family = sorted((n for n in known if n.startswith(name + "-") and n[len(name) + 1:].isdigit()),
                        key=lambda n: int(n.rsplit("-", 1)[1]))
        if not family:
            raise AgentError(f"{what}: {name!r} is not a node of the experiment")
        found.extend(family)
    return list(dict.fromkeys(found))


def choose_servers(bots: list[str], servers: list[str], addresses: Callable[[str], list[str]],
                   subnets: list[str]) -> dict[str, str]:
    """Bot → server: the first server sharing a segment (a subnet) with the bot, else servers[i % len]."""
    networks = [ipaddress.ip_network(s, strict=False) for s in subnets]

    def segments(node: str) -> set[int]:
        mine = [ipaddress.ip_address(a) for a in addresses(node)]
        return {i for i, network in enumerate(networks) if any(a in network for a in mine)}

    of_server = {server: segments(server) for server in servers}
    chosen = {}
    for i, bot in enumerate(bots):
        own = segments(bot)
        local = [server for server in servers if of_server[server] & own]
        chosen[bot] = local[0] if local else servers[i % len(servers)]
    return chosen


def per_bot_rate(total: Any, bots: int) -> str:
    """total / bots as q9bot takes a rate (1Mbit, 500kbit)."""
    try:
        rate = parse_bandwidth(total) // max(1, bots)
    except ValueError as error:
        raise AgentError(f"botmaster: total {error}") from None
    if rate % 1_000_000 == 0:
        return f"{rate // 1_000_000}Mbit"
    return f"{max(1, round(rate / 1000))}kbit"


def _number(value: Any, what: str) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise AgentError(f"{what} {value!r} is not a number") from None
    if number <= 0:
        raise AgentError(f"{what} {value!r} must be above zero")
    return f"{number:g}"


def _port(value: Any, what: str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        port = 0
    if not 0 < port < 65536:
        raise AgentError(f"{what}: port {value!r} is not a port number")
    return port


class _Waiting(BuiltinAgent):
    """An agent whose methods wait on the store; the scenario ending (cleanup) ends their waits."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.ending = threading.Event()

    def store_records(self, agent: str) -> list[dict[str, Any]]:
        records = getattr(self.runner, "records", None)
        if records is None:
            raise AgentError(f"agent {self.name!r} ({self.kind}) needs the records of the experiment, and this "
                             f"control surface cannot read them")
        return list(records(agent))

    def mark(self, agent: str) -> int:
        """The newest record id now: what comes after it happened after this call."""
        return max((int(r.get("id") or 0) for r in self.store_records(agent)), default=0)

    def poll(self, done: Callable[[], bool], seconds: float) -> bool:
        """Ask `done` until it says yes, `seconds` pass or the scenario ends; returns its last answer."""
        deadline = time.monotonic() + seconds
        while not done():
            left = deadline - time.monotonic()
            if left <= 0 or self.ending.wait(min(POLL_SECONDS, left)):
                return done()
        return True

    def cleanup(self) -> None:
        self.ending.set()
        super().cleanup()


def _events_since(records: list[dict[str, Any]], after: int, event: str) -> list[dict[str, Any]]:
    return [r for r in records if int(r.get("id") or 0) > after and isinstance(r.get("data"), dict)
            and r["data"].get("event") == event]


class IrcServer(_Waiting):
    """startServer(): one ngircd per node from the template (relative to the AAL file), linked in a chain in group
    order; true once it listens (its `started` record). waitLinked(timeout=30): true per node once its LINKS lists
    every other server. stopServer()."""
    methods = ("startServer", "waitLinked", "stopServer", "setConfiguration")
    kind = "ircd"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.template_text = self._template()          # read now: a missing file fails the scenario's start

    def _template(self) -> str:
        given = self.config.get("template", "ngircd.conf.template")
        path = Path(str(given))
        path = path if path.is_absolute() else self.base / path
        try:
            return path.read_text()
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or error
            raise AgentError(f"agent {self.name!r} (ircd): cannot read template {str(path)!r}: {reason}; "
                             f"execargs template: is relative to the AAL file's directory") from None

    @property
    def port(self) -> int:
        return _port(self.config.get("port", 6667), f"agent {self.name!r}")

    @property
    def network(self) -> str:
        network = str(self.config.get("network", self.runner.experiment))
        if not NETWORK.fullmatch(network):
            raise AgentError(f"agent {self.name!r}: network {network!r} is not a name (letters, digits, '-')")
        return network

    def server_name(self, node: str) -> str:
        return f"{node}.{self.network}"

    def serve_argv(self, node: str, credential: bytes) -> list[str]:
        """Node i peers with i-1 and i+1; the odd ones connect, so every link has one active side."""
        i = self.nodes.index(node)
        peers = [self.nodes[j] for j in (i - 1, i + 1) if 0 <= j < len(self.nodes)]
        argv = app_argv("ircd", "serve", "--name", self.server_name(node), "--template-text", self.template_text,
                        "--port", self.port, "--network", self.network)
        for peer in peers:
            addresses = self.runner.addresses(peer)
            if not addresses:
                raise AgentError(f"agent {self.name!r}: server {peer!r} has no address to link to")
            name = self.server_name(peer)
            argv += ["--peer", f"{name}={addresses[0]}:{self.port}:{link_password(credential, self.server_name(node))}"
                               f":{link_password(credential, name)}"]
        if i % 2 == 1:
            argv.append("--connect")
        if self.config.get("quickack", True):
            argv.append("--quickack")
        return argv + ["--agent", self.name]

    def startServer(self, timeout: Any = None) -> dict[str, Any]:
        """Every server at once (an active side dials again after the template's ConnectRetry); true per node once
        it recorded `started` (it listens), false when its ngircd ended by itself first or `timeout` s passed."""
        credential = experiment_credential(self.name, self.runner.experiment)
        argv = {node: self.serve_argv(node, credential) for node in self.nodes}
        seconds = float(_number(timeout if timeout is not None else self.config.get("start_timeout", STARTUP_SECONDS),
                                f"agent {self.name!r}: startServer timeout"))
        after = self.mark(self.name)
        self.spawn_all("server", lambda node: argv[node])
        outcome: dict[str, bool] = {}

        def settled() -> bool:
            for record in self.store_records(self.name):
                data, node = record.get("data"), record.get("node")
                if int(record.get("id") or 0) <= after or node not in self.nodes or not isinstance(data, dict):
                    continue
                if data.get("event") == "started":
                    outcome.setdefault(str(node), True)
                elif data.get("event") == "stopped" and not data.get("by_signal"):   # not the one spawn_all stopped
                    outcome.setdefault(str(node), False)
            return len(outcome) == len(self.nodes)
        self.poll(settled, seconds)
        return {node: outcome.get(node, False) for node in self.nodes}

    def waitLinked(self, timeout: Any = 30) -> dict[str, Any]:
        if len(self.nodes) < 2:
            return {node: True for node in self.nodes}      # a network of one server is linked
        seconds = float(_number(timeout, f"agent {self.name!r}: waitLinked timeout"))
        others = {node: ",".join(self.server_name(n) for n in self.nodes if n != node) for node in self.nodes}
        results = self.run_all(lambda node: app_argv("ircd", "linked", "--host", node, "--port", self.port,
                                                     "--expect", others[node], "--timeout", f"{seconds:g}",
                                                     "--agent", self.name), seconds + STARTUP_SECONDS)
        for node, (code, _, err) in results.items():
            if code not in (0, 1):
                self.warn(f"{self.name} on {node}: ircd linked failed (exit {code}): {err.strip()[-300:]}")
        return {node: code == 0 for node, (code, _, _) in results.items()}

    def stopServer(self) -> dict[str, Any]:
        return self.stop_all("server")


class Q9Bot(_Waiting):
    """startBots(): one q9bot per node, on the server of its own LAN; waitJoined(timeout=60): true per node once
    its bot recorded `joined`; stopBots()."""
    methods = ("startBots", "waitJoined", "stopBots", "setConfiguration")
    kind = "q9bot"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.started_after = 0          # the newest record id before startBots: joins after it count

    def servers(self) -> dict[str, str]:
        """Bot node → the server node it uses."""
        known = self.runner.nodes()
        servers = expand(self.config.get("servers"), known, f"agent {self.name!r} (q9bot) execargs servers")
        return choose_servers(self.nodes, servers, self.runner.addresses, self.runner.subnets())

    def nicks(self) -> dict[str, str]:
        prefix = str(self.config.get("nick", "q9bot"))
        return {node: f"{prefix}-{i}" for i, node in enumerate(self.nodes)}

    def startBots(self) -> dict[str, Any]:
        channel = str(self.config.get("channel", "#catch"))
        if not channel.startswith("#") or " " in channel:
            raise AgentError(f"agent {self.name!r} (q9bot): channel {channel!r} is not a channel name (#catch)")
        server, nick = self.servers(), self.nicks()
        secret = secret_for(experiment_credential(self.name, self.runner.experiment), self.runner.experiment)
        port = _port(self.config.get("port", 6667), f"agent {self.name!r}")
        subnets = ",".join(self.runner.subnets())
        botmaster = str(self.config.get("botmaster", "botmaster"))
        self.started_after = self.mark(self.name)
        return self.spawn_all("bot", lambda node: app_argv(
            "q9bot", "--server", server[node], "--port", port, "--channel", channel, "--nick", nick[node],
            "--botmaster", botmaster, "--secret", secret, "--subnets", subnets, "--agent", self.name))

    def joined(self) -> set[str]:
        return {str(r["node"]) for r in _events_since(self.store_records(self.name), self.started_after, "joined")
                if r.get("node") in self.nodes}

    def waitJoined(self, timeout: Any = 60) -> dict[str, Any]:
        seconds = float(_number(timeout, f"agent {self.name!r}: waitJoined timeout"))
        joined: set[str] = set()

        def everyone() -> bool:
            joined.update(self.joined())
            return joined >= set(self.nodes)
        self.poll(everyone, seconds)
        return {node: node in joined for node in self.nodes}

    def stopBots(self) -> dict[str, Any]:
        return self.stop_all("bot")


LISTEN_FIFO = "botmaster.in"        # the listening botmaster's command FIFO, in the node's mailbox
# One command line into that FIFO, with sh (no Python start in the node); refused when nobody listens there, so
# a write never makes a plain file of it. The run's timeout covers a FIFO left by a killed listener.
WRITE_ORDER = ('fifo="$NESTBED_MAILBOX/$2"; [ -p "$fifo" ] || { echo "no botmaster listens at $fifo" >&2; '
               'exit 3; }; printf "%s\\n" "$1" > "$fifo"')
WRITE_SECONDS = 10.0
REPLY_SLACK = 10.0                  # beyond a command's own wait, for the replies record to reach the store


class Botmaster(_Waiting):
    """Commands to the bots from a botmaster that stays on the channel (one per node of the group; `connect()`
    starts it, the first command does if nothing did): ping(), flood(target, port=80, seconds=60, total=20Mbit)
    at total/bots each, stop(), report(), http(url, count), each true when the expected answers came;
    forge(text, nick=mallory): unsigned from another nick, true when no bot obeyed and every bot refused;
    outside(target=127.0.0.2): a signed flood outside the experiment, true when every bot refused.
    A command is a line into the listener's FIFO (`sh`, no Python start); its outcome is the listener's
    `replies` record of the same id.
    """
    methods = ("connect", "ping", "flood", "stop", "report", "http", "forge", "outside", "setConfiguration")
    kind = "botmaster"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.seq = 0
        self.order = 0
        self.listening: set[str] = set()
        self.started_after = 0

    def bots(self) -> list[str]:
        return expand(self.config.get("bots"), self.runner.nodes(), f"agent {self.name!r} (botmaster) execargs bots")

    def seconds(self, key: str, default: float) -> float:
        return float(_number(self.config.get(key, default), f"agent {self.name!r}: execargs {key}"))

    def connect(self, timeout: Any = None) -> dict[str, Any]:
        """Start the listening botmaster on every node of the group; true per node once it has joined (`ready`)."""
        if self.listening >= set(self.nodes):
            return {node: True for node in self.nodes}
        server = self.config.get("server")
        if not server:
            raise AgentError(f"agent {self.name!r} (botmaster) has no server; give execargs {{server: irc1}}")
        seconds = float(_number(timeout if timeout is not None else STARTUP_SECONDS,
                                f"agent {self.name!r}: connect timeout"))
        credential = experiment_credential(self.name, self.runner.experiment)
        argv = app_argv("botmaster", "--server", server,
                        "--port", _port(self.config.get("port", 6667), f"agent {self.name!r}"),
                        "--channel", self.config.get("channel", "#catch"),
                        "--nick", self.config.get("nick", "botmaster"),
                        "--secret", secret_for(credential, self.runner.experiment), "--agent", self.name,
                        "--listen", LISTEN_FIFO, *(["--quickack"] if self.config.get("quickack", True) else []))
        self.started_after = self.mark(self.name)
        self.spawn_all("listener", lambda node: argv)
        self.poll(self.ready, seconds)
        return {node: node in self.listening for node in self.nodes}

    def ready(self) -> bool:
        """Every node's listener has joined (its `ready` since it was started)."""
        self.listening = {str(r["node"]) for r in _events_since(self.store_records(self.name), self.started_after,
                                                                "ready") if r.get("node") in self.nodes}
        return self.listening >= set(self.nodes)

    def command(self, text: str, expect: int, wait: float, forge: str | None = None) -> dict[str, int]:
        """Send TEXT (signed, or unsigned from nick `forge`) with the next SEQ through every node's listener;
        node → 0 when the expected answers came (expect 0: when none came), 1 when not, 3 when no listener."""
        if "listener" not in self.handles:
            self.connect()                        # not started yet: start it now and wait for it to join
        if not self.ready():                      # started and not joined: the order waits in its FIFO
            self.warn(f"{self.name}: no botmaster joined on {sorted(set(self.nodes) - self.listening)} yet")
        expect = 0 if forge else expect           # a forged command must go unanswered
        self.order += 1
        ident = self.order
        order = json.dumps({"id": ident, "text": text, "expect": expect, "wait": wait, "seq": self.next_seq(),
                            **({"forge": forge} if forge else {})})
        after = self.mark(self.name)
        writes = self.run_all(lambda node: ["sh", "-c", WRITE_ORDER, "sh", order, LISTEN_FIFO], WRITE_SECONDS)
        codes: dict[str, int] = {}
        for node, (code, _, err) in writes.items():
            if code != 0:
                self.warn(f"{self.name} on {node}: {text.split()[0]} not sent (exit {code}): {err.strip()[-300:]}")
                codes[node] = 3
        outcome: dict[str, dict[str, Any]] = {}

        def replied() -> bool:
            for record in self.store_records(self.name):
                data, node = record.get("data"), record.get("node")
                if int(record.get("id") or 0) > after and isinstance(data, dict) and data.get("id") == ident \
                        and data.get("event") in ("replies", "failed") and node in self.nodes:
                    outcome[str(node)] = data
            return set(outcome) | set(codes) >= set(self.nodes)
        self.poll(replied, wait + REPLY_SLACK)
        for node in self.nodes:
            if node in codes:
                continue
            data = outcome.get(node)
            if data is None or data.get("event") != "replies":
                self.warn(f"{self.name} on {node}: {text.split()[0]}: "
                          f"{data.get('error') if data else f'no replies record within {wait + REPLY_SLACK:g} s'}")
                codes[node] = 1
                continue
            answered = len(data.get("answered") or {})
            codes[node] = 0 if (answered == 0 if expect == 0 else answered >= expect) else 1
        return codes

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def answered(self, text: str) -> dict[str, Any]:
        codes = self.command(text, len(self.bots()), self.seconds("wait", 10))
        return {node: code == 0 for node, code in codes.items()}

    def refusals(self, after: int, reason: str | None) -> set[str]:
        bots = set(self.bots())
        return {r["node"] for r in _events_since(self.store_records("q9bot"), after, "refused")
                if r.get("node") in bots and (reason is None or r["data"].get("reason") == reason)}

    def all_refuse(self, after: int, reason: str | None) -> bool:
        bots = set(self.bots())
        return self.poll(lambda: self.refusals(after, reason) >= bots, self.seconds("wait", 10))

    def inside(self, target: Any) -> str:
        """The target's address, refused in one line unless it is inside the experiment."""
        try:
            address = ipaddress.ip_address(str(target))
        except ValueError:
            addresses = self.runner.addresses(str(target)) if str(target) in self.runner.nodes() else []
            if not addresses:
                raise AgentError(f"agent {self.name!r}: flood target {target!r} is neither an address nor a node "
                                 f"of experiment {self.runner.experiment!r}") from None
            address = ipaddress.ip_address(addresses[0])
        if not self.in_experiment(address):
            raise AgentError(f"agent {self.name!r}: flood target {address} is outside the experiment's subnets; "
                             f"the bots only attack their own experiment (outside() checks that they refuse)")
        return str(address)

    def in_experiment(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in ipaddress.ip_network(net, strict=False) for net in self.runner.subnets())

    # -- the AAL's methods ----------------------------------------------------------------------------------
    def ping(self) -> dict[str, Any]:
        return self.answered(f"!ping {self.seq + 1}")          # the ping's SEQ is its own, the same

    def flood(self, target: Any = None, port: Any = 80, seconds: Any = 60, total: Any = "20Mbit") -> dict[str, Any]:
        if target is None:
            raise AgentError(f"agent {self.name!r}: flood needs a target (a node or an address)")
        address = self.inside(target)
        rate = per_bot_rate(total, len(self.bots()))
        return self.answered(f"!flood {address} {_port(port, 'flood')} {_number(seconds, 'flood seconds')} {rate}")

    def stop(self) -> dict[str, Any]:
        return self.answered("!stop")

    def report(self) -> dict[str, Any]:
        return self.answered("!report")

    def http(self, url: Any = None, count: Any = 1) -> dict[str, Any]:
        if not url or any(c.isspace() for c in str(url)):
            raise AgentError(f"agent {self.name!r}: http needs a url without spaces, not {url!r}")
        try:
            times = int(count)
        except (TypeError, ValueError):
            times = 0
        if times < 1:
            raise AgentError(f"agent {self.name!r}: http count {count!r} must be a positive integer")
        return self.answered(f"!http {url} {times}")

    def forge(self, text: Any = None, nick: Any = "mallory") -> dict[str, Any]:
        if not text or not str(text).startswith("!"):
            raise AgentError(f"agent {self.name!r}: forge needs a command text like '!flood target 80 10 1Mbit'")
        if str(nick) == str(self.config.get("nick", "botmaster")):
            raise AgentError(f"agent {self.name!r}: forge sends from another nick than the botmaster's ({nick!r})")
        after = self.mark("q9bot")
        codes = self.command(str(text), len(self.bots()), self.seconds("quiet", 3), forge=str(nick))
        refused = self.all_refuse(after, None)
        return {node: code == 0 and refused for node, code in codes.items()}

    def outside(self, target: Any = "127.0.0.2") -> dict[str, Any]:
        try:
            address = ipaddress.ip_address(str(target))
        except ValueError:
            raise AgentError(f"agent {self.name!r}: outside needs an address (e.g. 127.0.0.2), not {target!r}") \
                from None
        if self.in_experiment(address):
            raise AgentError(f"agent {self.name!r}: outside target {address} is inside the experiment; give one "
                             f"outside it, e.g. 127.0.0.2")
        after = self.mark("q9bot")
        codes = self.command(f"!flood {address} 80 5 1Mbit", 0, self.seconds("quiet", 3))   # 0: none may answer
        refused = self.all_refuse(after, "target outside the experiment")
        return {node: code == 0 and refused for node, code in codes.items()}
