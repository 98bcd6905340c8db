"""`nestbed counters NAME [--json] [--watch]`: per node and interface, rx/tx packets and bytes (and attack traffic).

Counters come from the experiment's store (<state>/control.sqlite, written every second by the host agent). When
the store has no recent sample (no host agent running), the nodes on this host are sampled directly over
netlink (nestbed.agent.sampler.Sampler), so the command works either way. In a terminal (or with --watch) a
live table refreshes every second with rates; otherwise, and with --json, it prints once (--json --watch: one
JSON document per line, every second).
"""
from __future__ import annotations

import json
import time
from typing import Any

import typer

from nestbed.errors import ExperimentError

FRESH = 5.0             # seconds: a store sample younger than this is the agent's live view
INTERVAL = 1.0
KEYS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "attack_rx_bytes", "attack_tx_bytes",
        "attack_rx_packets", "attack_tx_packets")


def register(app: typer.Typer, out: Any, err: Any) -> None:
    @app.command()
    def counters(name: str = typer.Argument(..., help="experiment"),
                 as_json: bool = typer.Option(False, "--json", help="print the counters once as JSON"),
                 watch: bool = typer.Option(False, "--watch", help="keep refreshing every second (also when not "
                                                                    "a terminal; with --json: one line a second)")
                 ) -> None:
        """Per node and interface: rx/tx packets and bytes, attack (DSCP-marked) traffic apart; live in a terminal."""
        source = CounterSource(name)
        try:
            if as_json:
                _print_json(source, watch)
            elif watch or out.is_terminal:
                _live(source, out)
            else:
                snapshot = source.read()
                out.print(render_table(name, snapshot, None, height=None), soft_wrap=True)
        finally:
            source.close()


class Snapshot:
    def __init__(self, created: float, rows: list[Any], origin: str, attack: str, note: str = ""):
        self.created = created
        self.rows = rows
        self.origin = origin          # "store" | "sampled"
        self.attack = attack          # the attack counters' state, in words
        self.note = note


class CounterSource:
    """Reads the store when the agent keeps it fresh; otherwise samples the experiment's local nodes itself."""

    def __init__(self, name: str):
        from nestbed.realize.state import require
        self.name = name
        self.state = require(name)
        self.plan = self.state.load_plan()
        self.store: Any = None
        self.sampler: Any = None
        self._attack_state: str | None = None
        path = self.state.directory / "control.sqlite"
        self.path = path
        if path.exists():
            import sqlite3

            from nestbed.agent.store import Store
            from nestbed.cli.storefile import unreadable
            try:
                self.store = Store(path)
            except sqlite3.Error as error:
                raise unreadable(path, error) from None

    @property
    def is_up(self) -> bool:
        return self.plan is not None and self.state.status().get("state") == "up"

    def local_nodes(self) -> list[tuple[str, str]]:
        return [(node.name, node.netns) for node in self.plan.local_nodes] if self.plan is not None else []

    def read(self) -> Snapshot:
        if self.state.status().get("cluster"):
            return self._read_hosts()
        created, rows = (None, [])
        if self.store is not None:
            import sqlite3

            from nestbed.cli.storefile import unreadable
            try:
                created, rows = self.store.latest_counters()
            except sqlite3.Error as error:
                raise unreadable(self.path, error) from None
        if created is not None and (time.time() - created <= FRESH or not self.is_up):
            note = "" if time.time() - created <= FRESH else f"last sample {time.time() - created:.0f} s old"
            return Snapshot(created, rows, "store", self._attack(), note)
        if not self.is_up:
            state = self.state.status().get("state")
            raise ExperimentError(f"experiment {self.name!r} is not up (state: {state}) and its store has no "
                                  f"counter samples; see 'nestbed status {self.name}'")
        if self.sampler is None:
            from nestbed.agent.sampler import Sampler
            self.sampler = Sampler(self.local_nodes())
        rows = self.sampler.sample()
        assert self.plan is not None          # is_up implies a plan
        elsewhere = len(self.plan.nodes) - len(self.plan.local_nodes)
        note = f"{elsewhere} nodes in VMs not sampled (their agent reports them)" if elsewhere else ""
        return Snapshot(time.time(), rows, "sampled", self.sampler.attack_state, note)

    def _read_hosts(self) -> Snapshot:
        """A multi-host experiment: each host's agent keeps its own nodes' counters in its store (emulated hosts'
        stores are on this machine)."""
        from nestbed.agent.store import Store
        from nestbed.cluster import deploy
        stores = deploy.host_stores(self.name)
        if not stores:
            raise ExperimentError(f"experiment {self.name!r} has no counter samples on its hosts yet; see "
                                  f"'nestbed status {self.name}'")
        newest: list[float] = []
        rows: list[Any] = []
        for path in stores.values():
            store = Store(path)
            try:
                created, host_rows = store.latest_counters()
            finally:
                store.close()
            if created is not None:
                newest.append(created)
                rows.extend(host_rows)
        if not newest:
            raise ExperimentError(f"experiment {self.name!r} has no counter samples on its hosts yet")
        stale = time.time() - min(newest)
        note = f"{len(stores)} hosts" + (f"; the oldest sample {stale:.0f} s old" if stale > FRESH else "")
        return Snapshot(min(newest), rows, "store", "hosts' agents", note)

    def _attack(self) -> str:
        if self._attack_state is None:
            self._attack_state = "unknown"
            nodes = self.local_nodes()
            if nodes and self.is_up:
                from nestbed.agent.sampler import attack_state_of
                self._attack_state = attack_state_of(nodes[0][1])
        return self._attack_state

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.close()
        if self.store is not None:
            self.store.close()


def snapshot_json(name: str, snapshot: Snapshot) -> dict[str, Any]:
    interfaces = []
    for row in snapshot.rows:
        entry = {"node": row.node, "iface": row.iface, "time": snapshot.created}
        entry.update({key: getattr(row, key) for key in KEYS})
        interfaces.append(entry)
    return {"experiment": name, "time": snapshot.created, "source": snapshot.origin,
            "attack_counters": snapshot.attack, "attack_dscp": _attack_dscp(), "note": snapshot.note,
            "interfaces": interfaces}


def _attack_dscp() -> int:
    from nestbed.agent.attack_counters import ATTACK_DSCP
    return ATTACK_DSCP


def _print_json(source: CounterSource, watch: bool) -> None:
    while True:
        print(json.dumps(snapshot_json(source.name, source.read()), separators=(",", ":") if watch else None),
              flush=True)
        if not watch:
            return
        time.sleep(INTERVAL)


def _rates(previous: Snapshot | None, current: Snapshot) -> dict[tuple[str, str], dict[str, float]]:
    if previous is None or current.created <= previous.created:
        return {}
    span = current.created - previous.created
    before = {(r.node, r.iface): r for r in previous.rows}
    rates = {}
    for row in current.rows:
        old = before.get((row.node, row.iface))
        if old is not None:
            rates[(row.node, row.iface)] = {key: max(0, getattr(row, key) - getattr(old, key)) / span for key in KEYS}
    return rates


def _si(value: float, unit: str) -> str:
    for prefix in ("", "k", "M", "G", "T"):
        if abs(value) < 1000 or prefix == "T":
            return f"{value:.0f} {prefix}{unit}" if prefix == "" else f"{value:.1f} {prefix}{unit}"
        value /= 1000
    return f"{value:.1f} {unit}"


def render_table(name: str, snapshot: Snapshot, rates: dict | None, height: int | None) -> Any:
    from rich.table import Table
    when = time.strftime("%H:%M:%S", time.localtime(snapshot.created))
    source = "host agent's store" if snapshot.origin == "store" else "sampled directly (no host agent)"
    table = Table(title=f"{name}: interface counters at {when}, {source}", title_justify="left")
    for column in ("node", "iface", "rx pkts", "rx bytes", "tx pkts", "tx bytes"):
        table.add_column(column, justify="left" if column in ("node", "iface") else "right")
    if rates:
        for column in ("rx rate", "tx rate", "attack rx", "attack tx"):
            table.add_column(column, justify="right")
    else:
        for column in ("attack rx pkts", "attack tx pkts"):
            table.add_column(column, justify="right")
    rows = list(snapshot.rows)
    if rates:
        rows.sort(key=lambda r: -(rates.get((r.node, r.iface), {}).get("rx_bytes", 0)
                                   + rates.get((r.node, r.iface), {}).get("tx_bytes", 0)))
    shown = rows if height is None else rows[:max(1, height - 9)]
    for row in shown:
        cells = [row.node, row.iface, f"{row.rx_packets:,}", _si(row.rx_bytes, "B"), f"{row.tx_packets:,}",
                 _si(row.tx_bytes, "B")]
        if rates:
            rate = rates.get((row.node, row.iface), {})
            cells += [_si(8 * rate.get(key, 0), "bit/s")
                      for key in ("rx_bytes", "tx_bytes", "attack_rx_bytes", "attack_tx_bytes")]
        else:
            cells += [f"{row.attack_rx_packets:,}", f"{row.attack_tx_packets:,}"]
        table.add_row(*cells)
    nodes = len({r.node for r in rows})
    caption = f"{len(rows)} interfaces on {nodes} nodes"
    if len(shown) < len(rows):
        caption += f"; showing the {len(shown)} busiest"
    if rates:
        total_rx = sum(r.get("rx_bytes", 0) for r in rates.values())
        total_attack = sum(r.get("attack_rx_bytes", 0) for r in rates.values())
        caption += f"; total rx {_si(8 * total_rx, 'bit/s')} (attack {_si(8 * total_attack, 'bit/s')})"
    caption += f"\nattack counters (DSCP {_attack_dscp()}): {snapshot.attack}"
    if snapshot.note:
        caption += f"\n{snapshot.note}"
    table.caption = caption
    table.caption_justify = "left"
    return table


def _live(source: CounterSource, out: Any) -> None:
    from rich.live import Live
    snapshot = source.read()
    rates: dict = {}
    with Live(render_table(source.name, snapshot, None, out.height), console=out, auto_refresh=False,
              vertical_overflow="crop") as live:
        try:
            while True:
                time.sleep(INTERVAL)
                fresh = source.read()
                if fresh.created > snapshot.created:       # the store may not have a newer sample yet
                    previous, snapshot = snapshot, fresh
                    rates = _rates(previous, snapshot)
                live.update(render_table(source.name, snapshot, rates, out.height), refresh=True)
        except KeyboardInterrupt:
            pass
