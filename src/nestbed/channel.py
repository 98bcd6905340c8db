"""The controller ↔ agent channel: one JSON object per line over TCP on the control network.

A VM's agent opens with {"challenge": HEX}; the client's first line is {"answer": …}, the challenge signed with
that VM's own credential (guestproto.answer), which never crosses the wire. An agent answers a wrong answer with
{"error": "refused: …"} and closes. Requests are {"op": …}; a one-shot answer is one line, a stream (exec, shell) is
lines of {"o": base64} / {"e": base64} ending with {"rc": N}. A shell's client sends {"i": base64} and
{"size": [rows, cols]} lines.
"""
from __future__ import annotations

import base64
import json
import socket
import sys
import time
from collections.abc import Callable

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.4 s of a VM's boot under emulation
if TYPE_CHECKING:
    from typing import Any, BinaryIO

from nestbed.errors import ExperimentError
from nestbed.guestproto import REFUSED, answer

CREDENTIAL_BYTES = 32
TIMEOUT_GRACE = 3.0       # how long after a command's timeout the controller waits for the guest agent's answer


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode()


def decode(text: str) -> bytes:
    return base64.b64decode(text)


class Connection:
    """A line-oriented JSON connection (either side)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.reader: BinaryIO = sock.makefile("rb")

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    def receive(self) -> dict[str, Any] | None:
        line = self.reader.readline()
        if not line:
            return None
        message = json.loads(line)
        if not isinstance(message, dict):
            raise ValueError("not a JSON object")
        return message

    def close(self) -> None:
        try:
            self.reader.close()
        finally:
            self.sock.close()


class AgentClient:
    """The controller's side: connect to one VM's agent, proving it holds that VM's credential."""

    def __init__(self, vm: str, address: str, port: int, credential: str, timeout: float = 10.0):
        self.vm, self.address, self.port, self.credential, self.timeout = vm, address, port, credential, timeout

    def connect(self, timeout: float | None = None) -> Connection:
        try:
            sock = socket.create_connection((self.address, self.port), timeout=timeout or self.timeout)
        except OSError as error:
            raise ExperimentError(f"cannot reach the agent of VM {self.vm} at {self.address}:{self.port}: "
                                  f"{error.strerror or error}") from None
        conn = Connection(sock)
        try:
            challenge = conn.receive()
        except (OSError, ValueError) as error:
            conn.close()
            raise ExperimentError(f"the agent of VM {self.vm} did not send its challenge: {error}") from None
        if challenge is None or not isinstance(challenge.get("challenge"), str):
            conn.close()
            raise ExperimentError(f"the agent of VM {self.vm} did not send its challenge")
        sock.settimeout(None)
        conn.send({"answer": answer(self.credential, challenge["challenge"])})
        return conn

    def request(self, op: str, timeout: float | None = None, **arguments: Any) -> dict[str, Any]:
        conn = self.connect(timeout)
        try:
            conn.sock.settimeout(timeout or self.timeout)
            conn.send({"op": op, **arguments})
            answer = conn.receive()
        except (OSError, ValueError) as error:
            raise ExperimentError(f"the agent of VM {self.vm} did not answer {op!r}: {error}") from None
        finally:
            conn.close()
        if answer is None:
            raise ExperimentError(f"the agent of VM {self.vm} closed the connection on {op!r}")
        if "error" in answer:
            raise ExperimentError(f"VM {self.vm}: {answer['error']}")
        return answer

    def wait_ready(self, deadline: float, alive: Callable[[], str | None]) -> dict[str, Any]:
        """Poll until the agent says it is ready. `alive()` returns a reason when the VM died (then give up)."""
        while True:
            problem = alive()
            if problem:
                raise ExperimentError(problem)
            try:
                answer = self.request("ping", timeout=1.0)
                if answer.get("failed"):
                    raise ExperimentError(f"VM {self.vm} could not configure itself: {answer['failed']}")
                if answer.get("ready"):
                    return answer
            except ExperimentError as error:
                if "could not configure" in str(error) or REFUSED in str(error):
                    raise         # otherwise: not listening yet, keep polling
            if time.monotonic() > deadline:
                raise ExperimentError(f"VM {self.vm}: its agent was not ready in time")
            time.sleep(0.1)

    def run(self, node: str, argv: list[str], stdout: BinaryIO | None = None, stderr: BinaryIO | None = None,
            env: dict[str, str] | None = None, timeout: float | None = None) -> tuple[int, bool]:
        """Run argv in a node of this VM; its output goes to stdout/stderr as it comes. Returns (exit code, timed
        out). With a timeout the guest agent kills the program then (exit code -9), and this side gives up
        TIMEOUT_GRACE seconds later when the VM did not answer."""
        out = stdout or sys.stdout.buffer
        err = stderr or sys.stderr.buffer
        conn = self.connect()
        try:
            conn.send({"op": "exec", "node": node, "argv": argv, "env": env or {},
                       **({"timeout": timeout} if timeout else {})})
            deadline = time.monotonic() + timeout + TIMEOUT_GRACE if timeout else None
            return _relay_output(conn, out, err, self.vm, deadline)
        finally:
            conn.close()


def _relay_output(conn: Connection, out: BinaryIO, err: BinaryIO, vm: str, deadline: float | None) -> tuple[int, bool]:
    while True:
        try:
            if deadline is not None:
                conn.sock.settimeout(max(0.01, deadline - time.monotonic()))
            message = conn.receive()
        except TimeoutError:
            raise ExperimentError(f"the agent of VM {vm} did not answer: the command's timeout passed "
                                  f"{TIMEOUT_GRACE:g} s ago") from None
        except (OSError, ValueError):
            message = None
        if message is None:
            raise ExperimentError(f"the agent of VM {vm} went away while the command ran")
        if "o" in message:
            out.write(decode(message["o"]))
            out.flush()
        elif "e" in message:
            err.write(decode(message["e"]))
            err.flush()
        elif "rc" in message:
            if not isinstance(message["rc"], int):
                raise ExperimentError(f"the agent of VM {vm} answered without an exit code: {message['rc']!r}")
            return message["rc"], bool(message.get("timeout"))
        elif "error" in message:
            raise ExperimentError(f"VM {vm}: {message['error']}")


def interactive_shell(agent: AgentClient, node: str) -> int:
    """A shell in a node of a VM on this terminal: raw mode, keystrokes and window size to the agent."""
    import os
    import select
    import shutil
    import termios
    import tty
    conn = agent.connect()
    size = shutil.get_terminal_size()
    conn.send({"op": "shell", "node": node, "size": [size.lines, size.columns]})
    stdin = sys.stdin.fileno()
    saved = termios.tcgetattr(stdin) if os.isatty(stdin) else None
    try:
        if saved is not None:
            tty.setraw(stdin)
        buffer = b""
        while True:
            readable, _, _ = select.select([stdin, conn.sock], [], [])
            if stdin in readable:
                data = os.read(stdin, 4096)
                if not data:
                    break
                conn.send({"i": encode(data)})
            if conn.sock in readable:
                chunk = conn.sock.recv(65536)
                if not chunk:
                    return 0
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    message = json.loads(line)
                    if "o" in message:
                        os.write(sys.stdout.fileno(), decode(message["o"]))
                    elif "rc" in message:
                        return int(message["rc"])
                    elif "error" in message:
                        raise ExperimentError(f"VM {agent.vm}: {message['error']}")
        return 0
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        conn.close()
