"""iperf (nestbed's TCP blaster: startServer/stopServer, startClient/stopClient) and flooder
(setConfiguration, startFlood/stopFlood: DSCP-marked packets, only to the experiment's own subnets)."""
from __future__ import annotations

import ipaddress
from typing import Any

from nestbed.agent.attack_counters import ATTACK_DSCP
from nestbed.scenario.agents.base import AgentError, BuiltinAgent, app_argv

PROTOS = {"udp": "udp", "tcp-syn": "tcp-syn", "tcp": "tcp-syn", "syn": "tcp-syn", "icmp": "icmp"}


class Iperf(BuiltinAgent):
    """startServer(port=5201); startClient(server, duration=10, port=5201): records bits_per_second (agent iperf)."""
    methods = ("startServer", "stopServer", "startClient", "stopClient", "setConfiguration")
    kind = "iperf"

    def startServer(self, port: int | None = None) -> dict[str, Any]:
        port = int(port or self.config.get("port", 5201))
        return self.spawn_all("server", lambda node: app_argv("blaster", "server", "--port", port))

    def stopServer(self) -> dict[str, Any]:
        return self.stop_all("server")

    def startClient(self, server: str | None = None, duration: Any = None, port: int | None = None) -> dict[str, Any]:
        server = server or self.config.get("server") or (self.config.get("servers") or [None])[0]
        if not server:
            raise AgentError(f"agent {self.name!r} (iperf) has no server; give execargs {{server: b}}")
        duration = float(duration if duration is not None else self.config.get("duration", 10))
        port = int(port or self.config.get("port", 5201))
        return self.spawn_all("client", lambda node: app_argv("blaster", "client", server, "--port", port,
                                                              "--duration", duration, "--agent", self.name))

    def stopClient(self) -> dict[str, Any]:
        return self.stop_all("client")


class Flooder(BuiltinAgent):
    """setConfiguration(dst, proto=udp|tcp-syn|icmp, length=64, rate=100 pps, dport=80, duration=0);
    startFlood(), stopFlood(). Packets carry DSCP ATTACK_DSCP. Targets outside the experiment are refused."""
    methods = ("setConfiguration", "startFlood", "stopFlood")
    kind = "flooder"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.config.get("dst"):
            self._target()

    def setConfiguration(self, **kwargs: Any) -> bool:
        known = ("dst", "src", "proto", "length", "rate", "highrate", "lowrate", "ratetype", "dport", "sport",
                 "duration")
        for key in kwargs:
            if key not in known:
                raise AgentError(f"flooder {self.name!r}: unknown setting {key!r}; known: {', '.join(known)}")
        self.config.update(kwargs)
        if self.config.get("dst"):
            self._target()
        return True

    def _target(self) -> str:
        dst = self.config.get("dst")
        if not dst:
            raise AgentError(f"flooder {self.name!r} has no dst; call setConfiguration with dst: NODE or ADDRESS")
        try:
            address = ipaddress.ip_address(str(dst))
        except ValueError:
            try:
                addresses = self.runner.addresses(str(dst))
            except Exception:
                addresses = []
            if not addresses:
                raise AgentError(f"flooder {self.name!r}: dst {dst!r} is neither an address nor a node of "
                                 f"experiment {self.runner.experiment!r}") from None
            address = ipaddress.ip_address(addresses[0])
        subnets = self.runner.subnets()
        if not any(address in ipaddress.ip_network(net, strict=False) for net in subnets):
            raise AgentError(f"flooder {self.name!r}: target {address} is outside the experiment's subnets "
                             f"({', '.join(subnets[:6])}{' …' if len(subnets) > 6 else ''}); a flooder only "
                             f"attacks its own experiment")
        proto = str(self.config.get("proto", "udp")).lower()
        if proto not in PROTOS:
            raise AgentError(f"flooder {self.name!r}: proto {proto!r} is not one of udp, tcp-syn, icmp")
        return str(address)

    def startFlood(self) -> dict[str, Any]:
        dst = self._target()
        rate = self.config.get("rate", self.config.get("highrate", 100))
        argv = app_argv("flooder", "--dst", dst, "--subnets", ",".join(self.runner.subnets()),
                        "--proto", PROTOS[str(self.config.get("proto", "udp")).lower()],
                        "--length", int(self.config.get("length", 64)), "--rate", float(rate),
                        "--dport", int(self.config.get("dport", 80)), "--sport", int(self.config.get("sport", 0)),
                        "--duration", float(self.config.get("duration", 0)), "--dscp", ATTACK_DSCP)
        return self.spawn_all("flood", lambda node: argv)

    def stopFlood(self) -> dict[str, Any]:
        return self.stop_all("flood")
