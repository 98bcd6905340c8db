"""runshell / runcmd (run a command line on every node, true where it exits 0; or start it and stop it later)
and link_up_down (runtime link changes through the runner)."""
from __future__ import annotations

from typing import Any

from nestbed.scenario.agents.base import AgentError, BuiltinAgent


class RunShell(BuiltinAgent):
    """runCommand(cmd, timeout=60) — also named run / execute: `sh -c CMD` on every node; records exit code and
    the output's end (agent runshell). timeout 0: no limit (an NS Program's `run` without -timeout)."""
    methods = ("runCommand", "run", "execute", "startCommand", "stopCommand", "setConfiguration")
    kind = "runshell"

    def startCommand(self, cmd: str | None = None) -> dict[str, Any]:
        """`sh -c CMD` started on every node and left running (an NS Program's start); stopCommand stops it."""
        cmd = cmd or self.config.get("cmd") or self.config.get("command")
        if not cmd:
            raise AgentError(f"agent {self.name!r} (runshell): no cmd given; write args: {{cmd: 'ls /'}}")
        return self.spawn_all("command", lambda node: ["sh", "-c", str(cmd)])

    def stopCommand(self) -> dict[str, Any]:
        return self.stop_all("command")

    def runCommand(self, cmd: str | None = None, timeout: float | None = None) -> dict[str, Any]:
        cmd = cmd or self.config.get("cmd") or self.config.get("command")
        if not cmd:
            raise AgentError(f"agent {self.name!r} (runshell): no cmd given; write args: {{cmd: 'ls /'}}")
        limit = float(self.config.get("timeout", 60) if timeout is None else timeout)
        results = self.run_all(lambda node: ["sh", "-c", str(cmd)], limit or None)     # 0: no limit
        self.record_all([(node, {"cmd": cmd, "exit": code, "stdout": out[-2000:], "stderr": err[-2000:]})
                                     for node, (code, out, err) in results.items()])
        return {node: code == 0 for node, (code, _, _) in results.items()}

    def run(self, cmd: str | None = None, timeout: float | None = None) -> dict[str, Any]:
        return self.runCommand(cmd, timeout)

    def execute(self, cmd: str | None = None, timeout: float | None = None) -> dict[str, Any]:
        return self.runCommand(cmd, timeout)


class LinkUpDown(BuiltinAgent):
    """linkDown(link), linkUp(link), setLink(link, bandwidth=…, delay=…, loss=…): once per event, whatever the
    group's size (a link is the experiment's, not a node's)."""
    methods = ("linkDown", "linkUp", "setLink", "setConfiguration")
    kind = "link_up_down"

    def _links(self, link: Any) -> list[str]:
        link = link or self.config.get("link") or self.config.get("links")
        links = [link] if isinstance(link, str) else list(link or [])
        if not links:
            raise AgentError(f"agent {self.name!r} (link_up_down): name the link, e.g. args: {{link: link0}}")
        return [str(name) for name in links]

    def linkDown(self, link: Any = None) -> bool:
        for name in self._links(link):
            self.runner.link(name, "down")
        return True

    def linkUp(self, link: Any = None) -> bool:
        for name in self._links(link):
            self.runner.link(name, "up")
        return True

    def setLink(self, link: Any = None, **shaping: Any) -> bool:
        for name in self._links(link):
            self.runner.link(name, "set", **shaping)
        return True
