"""pktcounters (startCollection/stopCollection: per-interface deltas), tcpdump (startCapture/stopCapture into the
experiment's log directory) and nodeStats (load and memory: startCollection/stopCollection, collect)."""
from __future__ import annotations

import json
import shutil
import time
from typing import Any

from nestbed.scenario.agents.base import BuiltinAgent, app_argv

FIELDS = {"rx_bytes": ("rx", "bytes"), "tx_bytes": ("tx", "bytes"), "rx_packets": ("rx", "packets"),
          "tx_packets": ("tx", "packets")}


def parse_ip_link(text: str) -> dict[str, dict[str, int]]:
    """`ip -s -j link` → interface → {rx_bytes, tx_bytes, rx_packets, tx_packets} (loopback left out)."""
    result = {}
    for link in json.loads(text or "[]"):
        name, stats = link.get("ifname"), link.get("stats64") or link.get("stats") or {}
        if not name or name == "lo":
            continue
        result[name] = {key: int(stats.get(way, {}).get(what, 0)) for key, (way, what) in FIELDS.items()}
    return result


class PktCounters(BuiltinAgent):
    """startCollection() snapshots every interface of every node; stopCollection() records the deltas
    (agent pktcounters: one record per node and interface with seconds and the four counters)."""
    methods = ("startCollection", "stopCollection", "setConfiguration")
    kind = "pktcounters"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.started: tuple[float, dict[str, dict[str, dict[str, int]]]] | None = None

    def _snapshot(self) -> dict[str, dict[str, dict[str, int]]]:
        results = self.run_all(lambda node: ["ip", "-s", "-j", "link"], 30)
        return {node: parse_ip_link(out) if code == 0 else {} for node, (code, out, _) in results.items()}

    def startCollection(self) -> dict[str, Any]:
        self.started = (time.time(), self._snapshot())
        return {node: bool(ifaces) for node, ifaces in self.started[1].items()}

    def stopCollection(self) -> dict[str, Any]:
        if self.started is None:
            self.warn(f"{self.name}: stopCollection without startCollection")
            return {node: False for node in self.nodes}
        began, before = self.started
        after, now = self._snapshot(), time.time()
        self.started = None
        for node, ifaces in after.items():
            for iface, counters in ifaces.items():
                old = before.get(node, {}).get(iface, {})
                delta = {key: value - old.get(key, 0) for key, value in counters.items()}
                self.record(node, {"iface": iface, "seconds": now - began, **delta})
        return {node: bool(ifaces) for node, ifaces in after.items()}


class Tcpdump(BuiltinAgent):
    """startCapture(interface='any', filter=''): tcpdump -w <state>/logs/<node>-<agent>.pcap; stopCapture()."""
    methods = ("startCapture", "stopCapture", "setConfiguration")
    kind = "tcpdump"

    def startCapture(self, interface: str | None = None, filter: str | None = None) -> dict[str, Any]:
        program = shutil.which("tcpdump")
        if program is None:
            self.warn(f"{self.name}: tcpdump is not installed on this host (apt-get install tcpdump); no capture")
            return {node: False for node in self.nodes}
        from nestbed.realize.state import experiment
        logs = experiment(self.runner.experiment).log_dir
        interface = interface or self.config.get("interface", "any")
        expression = (filter or self.config.get("filter") or "").split()
        return self.spawn_all("capture", lambda node: [program, "-i", interface, "-U", "-w",
                                                       str(logs / f"{node}-{self.name}.pcap"), *expression])

    def stopCapture(self) -> dict[str, Any]:
        return self.stop_all("capture")


class NodeStats(BuiltinAgent):
    """startCollection(interval=1) records load and memory of each node (agent nodeStats) until stopCollection();
    collect() records one sample now."""
    methods = ("startCollection", "stopCollection", "collect", "setConfiguration")
    kind = "nodeStats"

    def startCollection(self, interval: float | None = None) -> dict[str, Any]:
        interval = float(interval or self.config.get("interval", 1))
        return self.spawn_all("stats", lambda node: app_argv("nodestats", "--interval", interval))

    def stopCollection(self) -> dict[str, Any]:
        return self.stop_all("stats")

    def collect(self) -> dict[str, Any]:
        results = self.run_all(lambda node: ["cat", "/proc/loadavg", "/proc/meminfo"], 10)
        ok = {}
        for node, (code, out, _) in results.items():
            ok[node] = code == 0
            if code == 0:
                lines = out.splitlines()
                load = lines[0].split()
                fields = (row.split(":", 1) for row in lines[1:] if ":" in row)
                memory = {k: int(v.split()[0]) * 1024 for k, v in fields}
                self.record(node, {"load1": float(load[0]), "load5": float(load[1]),
                                                       "load15": float(load[2]), "mem_total": memory.get("MemTotal"),
                                                       "mem_available": memory.get("MemAvailable")})
        return ok
