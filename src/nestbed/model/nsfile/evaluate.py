"""Run an NS file through Tcl: `tclsh prelude.tcl FILE` in a safe interpreter, with a CPU limit and a timeout
(an NS file is a program, and may be hostile); the records it prints (objects, calls, warnings, the first Tcl
error), each with its line in the file.
"""
from __future__ import annotations

import json
import resource
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nestbed.errors import TopologyError

PRELUDE = Path(__file__).with_name("prelude.tcl")
SECONDS = 20.0              # wall clock for one file
CPU_SECONDS = 10            # RLIMIT_CPU of the interpreter
MEMORY = 1 << 30            # RLIMIT_AS of the interpreter


@dataclass
class NsObject:
    seq: int                # its place among the calls (it was made by the call before it)
    kind: str               # simulator, node, link, lan, simplex, queue, program, agent, application, null, …
    name: str
    line: int
    args: list[str]


@dataclass
class NsCall:
    seq: int
    line: int
    target: str             # an object's name, "" for a global (tb-*) command
    cmd: str
    args: list[str]


@dataclass
class NsEvent:
    """One event of `$ns at T "…"` / `$timeline at T "…"` (time as written) or a sequence's line (time "")."""
    seq: int
    line: int
    parent: str             # the simulator, a timeline or a sequence
    time: str
    words: list[str]        # obj cmd args…


@dataclass
class Evaluated:
    path: str
    objects: list[NsObject] = field(default_factory=list)
    calls: list[NsCall] = field(default_factory=list)
    warnings: list[tuple[int, str]] = field(default_factory=list)
    events: list[NsEvent] = field(default_factory=list)

    def at(self, line: int) -> str:
        return f"{self.path}:{line}"

    def in_order(self) -> list[NsObject | NsCall]:
        """Objects and calls as the file made them (an object right after the call that made it)."""
        keyed = [((o.seq, 0), o) for o in self.objects] + [((c.seq, 1), c) for c in self.calls]
        return [item for _, item in sorted(keyed, key=lambda pair: pair[0])]


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def evaluate(path: str) -> Evaluated:
    """The file's records; TopologyError (file:line, the Tcl error) when it fails."""
    tclsh = shutil.which("tclsh")
    if tclsh is None:
        raise TopologyError("reading NS files needs Tcl (tclsh), which is not installed",
                            hint="apt install tcl (./run installs it)")
    if not Path(path).is_file():
        raise TopologyError(f"topology file {path!r} does not exist")
    try:
        done = subprocess.run([tclsh, str(PRELUDE), str(Path(path).resolve())], capture_output=True, text=True,
                              timeout=SECONDS, preexec_fn=_limits, stdin=subprocess.DEVNULL, cwd="/")
    except subprocess.TimeoutExpired:
        raise TopologyError(f"the NS file ran for more than {SECONDS:g} s", f"{path}:1",
                            "look for a loop that never ends") from None
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise TopologyError(f"the NS file could not be evaluated: {why}", f"{path}:1",
                            "its CPU time or memory may be over the limit")
    return _records(path, done.stdout)


def _records(path: str, text: str) -> Evaluated:
    result = Evaluated(path)
    for raw in text.splitlines():
        try:
            record: dict[str, Any] = json.loads(raw)
        except ValueError:
            raise TopologyError("the NS interpreter's output could not be read (a record nestbed's prelude did not "
                                "write: does the file call nestbed's own __nb_ commands?)", f"{path}:1",
                                "remove those calls") from None
        kind = record["t"]
        if kind == "object":
            result.objects.append(NsObject(record["seq"], record["kind"], record["name"], record["line"],
                                           record["args"]))
        elif kind == "call":
            result.calls.append(NsCall(record["seq"], record["line"], record["target"], record["cmd"],
                                       record["args"]))
        elif kind == "event":
            result.events.append(NsEvent(record["seq"], record["line"], record["parent"], record["time"],
                                         record["words"]))
        elif kind == "warning":
            result.warnings.append((record["line"], record["message"]))
        elif kind == "error":
            raise TopologyError(f"Tcl: {record['message']}", f"{path}:{max(1, record['line'])}",
                                "as Emulab's parser would also stop here")
    return result
