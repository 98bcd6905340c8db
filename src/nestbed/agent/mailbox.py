"""Node mailboxes: how programs in process nodes (which run no daemon) talk to the host agent ("piggy-back").

Every process node has `<state>/mailbox/<node>/`, seen inside the node at /var/nestbed/mailbox
(processes.enter_node bind-mounts it; programs get NESTBED_MAILBOX=/var/nestbed/mailbox). Programs append lines
to `events.jsonl` there, or write them to the FIFO `events.fifo`:

    {"event": "serverReady", "data": {"port": 80}}     an event (it can satisfy scenario triggers)
    {"record": "http_client", "data": {"bytes": 1000}}  a record of an agent's measurement
    serverReady                                        a bare name: an event without data

The host agent watches every mailbox with inotify (asyncinotify, synchronous mode, in a thread) and the FIFOs with
a selector, and turns each complete line into a store event or record whose source/node is the node.

Making and removing the mailboxes (files, tmpfs, journal, who may write them: root in the node) is
realize/mailboxes.py's; this module only reads them.
"""
from __future__ import annotations

import json
import os
import re
import selectors
import sys
import threading

TYPE_CHECKING = False     # not typing's: the guest agent imports this module too
if TYPE_CHECKING:
    from typing import Any

from nestbed.realize.mailboxes import EVENTS, FIFO

MAX_LINE = 1 << 20
_NAME = re.compile(r"[A-Za-z0-9_.:@/-]{1,128}")    # fullmatch: whole strings


class MailboxError(ValueError):
    pass


def parse_line(line: str | bytes) -> tuple[str, str, Any, str | None]:
    """One mailbox line → ("event", name, data, None) or ("record", agent, data, kind): a record names the
    scenario's agent and may name its kind (the program's: http_client, iperf …). Raises MailboxError."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    text = line.strip()
    if not text:
        raise MailboxError("empty line")
    if not text.startswith("{"):
        if _NAME.fullmatch(text):
            return "event", text, None, None
        raise MailboxError(f"not a JSON object nor an event name: {text[:80]!r}")
    try:
        message = json.loads(text)
    except json.JSONDecodeError as error:
        raise MailboxError(f"bad JSON ({error.msg} at column {error.colno}): {text[:80]!r}") from None
    if not isinstance(message, dict):
        raise MailboxError(f"not a JSON object: {text[:80]!r}")
    kinds = [k for k in ("event", "record") if k in message]
    if len(kinds) != 1:
        raise MailboxError(f'needs exactly one of "event" or "record": {text[:80]!r}')
    kind = kinds[0]
    name = message[kind]
    if not isinstance(name, str) or not name.strip():
        raise MailboxError(f'"{kind}" must be a non-empty string: {text[:80]!r}')
    data = message.get("data")
    if kind == "record" and data is None:
        raise MailboxError(f'a record needs "data": {text[:80]!r}')
    record_kind = message.get("kind") if kind == "record" else None
    if record_kind is not None and not (isinstance(record_kind, str) and _NAME.fullmatch(record_kind)):
        raise MailboxError(f'a record\'s "kind" must be a name: {text[:80]!r}')
    return kind, name, data, record_kind


def split_lines(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines of `buffer`, and the unfinished rest (kept until its newline arrives)."""
    if b"\n" not in buffer:
        if len(buffer) > MAX_LINE:
            return [buffer], b""
        return [], buffer
    *lines, rest = buffer.split(b"\n")
    return [line for line in lines if line.strip()], rest


# -- watching ------------------------------------------------------------------------------------------------

Deliver = "Callable[[str, str, str, Any], None]"      # (node, kind, name, data)


class Watcher:
    """Watches mailboxes (node → directory) and calls deliver(node, kind, name, data) for every line.

    One thread: a selector over the inotify fd (asyncinotify), every FIFO (opened read-write, so a writer
    closing never means EOF) and a wake-up pipe. Lines already in events.jsonl when watching starts are
    delivered too (programs started before the agent). Bad lines go to `complain(node, message)`.
    """

    def __init__(self, boxes: dict[str, str], deliver: Any, complain: Any = None):
        self.boxes = dict(boxes)
        self.deliver = deliver
        self.complain = complain or (lambda node, message: print(f"mailbox {node}: {message}", file=sys.stderr))
        self.offsets: dict[str, int] = {}
        self.partial: dict[str, bytes] = {}
        self.fifo_partial: dict[int, bytes] = {}
        self.fifo_node: dict[int, str] = {}
        self.by_wd: dict[int, str] = {}
        self.watches: dict[str, Any] = {}
        self._pending: list[tuple[dict[str, str], list[str]]] = []
        self._pending_lock = threading.Lock()
        self._stop_r, self._stop_w = os.pipe()
        self._thread: threading.Thread | None = None
        self.inotify: Any = None
        self.mode = "inotify"

    def start(self) -> None:
        self._setup()
        self._thread = threading.Thread(target=self._loop, name="mailboxes", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        os.write(self._stop_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _setup(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.selector.register(self._stop_r, selectors.EVENT_READ, None)
        try:
            from asyncinotify import Inotify, Mask
            self.inotify = Inotify(sync_timeout=0)
            self._mask = Mask.MODIFY | Mask.CLOSE_WRITE | Mask.CREATE | Mask.MOVED_TO
            self.selector.register(self.inotify.fd, selectors.EVENT_READ, "inotify")
        except ImportError:
            self.inotify = None
            self.mode = "polling (asyncinotify missing)"
        for node, directory in self.boxes.items():
            self._watch(node, directory)
        for node in self.boxes:              # what programs wrote before we watched
            self._read_file(node)

    def _watch(self, node: str, directory: str) -> None:
        if self.inotify is not None:
            try:
                watch = self.inotify.add_watch(directory, self._mask)
                self.by_wd[watch.wd] = node
                self.watches[node] = watch
            except OSError as error:
                self.complain(node, f"cannot watch {directory}: {error}")
        try:
            fd = os.open(os.path.join(directory, FIFO), os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return
        self.fifo_node[fd] = node
        self.selector.register(fd, selectors.EVENT_READ, "fifo")

    def _unwatch(self, node: str) -> None:
        watch = self.watches.pop(node, None)
        if watch is not None:
            self.by_wd.pop(watch.wd, None)
            try:
                self.inotify.rm_watch(watch)
            except OSError:
                pass               # its directory went first: the kernel dropped the watch
        for fd in [fd for fd, owner in self.fifo_node.items() if owner == node]:
            self.selector.unregister(fd)
            os.close(fd)
            del self.fifo_node[fd]
            self.fifo_partial.pop(fd, None)
        for table in (self.boxes, self.offsets, self.partial):
            table.pop(node, None)

    def change(self, added: dict[str, str], removed: list[str]) -> None:
        """Watch `added` (node → directory) too and forget `removed` (the host agent's reload): done by the
        watching thread, which alone touches its tables; what an added mailbox holds already is delivered."""
        with self._pending_lock:
            self._pending.append((dict(added), list(removed)))
        if self._thread is None:
            self._apply_pending()          # not watching yet: start() watches the new set
        else:
            os.write(self._stop_w, b"c")

    def _apply_pending(self) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, []
        started = self._thread is not None
        for added, removed in pending:
            for node in removed + [n for n in added if n in self.boxes]:
                if started:
                    self._unwatch(node)
                else:
                    self.boxes.pop(node, None)
            for node, directory in added.items():
                self.boxes[node] = directory
                if started:
                    self._watch(node, directory)
                    self._read_file(node)

    def _loop(self) -> None:
        timeout = None if self.inotify is not None else 0.5
        while True:
            ready = self.selector.select(timeout)
            if not ready and self.inotify is None:
                for node in self.boxes:
                    self._read_file(node)
            for key, _ in ready:
                if key.data is None:         # b"x": stop; b"c": a node-set change (change())
                    if b"x" in os.read(self._stop_r, 4096):
                        return
                    self._apply_pending()
                    continue
                if key.data == "inotify":
                    nodes = set()
                    while True:
                        event = self.inotify.sync_get()
                        if event is None:
                            break
                        watched = self.by_wd.get(event.watch.wd) if event.watch is not None else None
                        if watched is not None and event.name is not None and str(event.name) == EVENTS:
                            nodes.add(watched)
                    for node in nodes:
                        self._read_file(node)
                else:
                    self._read_fifo(key.fd)

    def _read_file(self, node: str) -> None:
        path = os.path.join(self.boxes[node], EVENTS)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return
        try:
            offset = self.offsets.get(node, 0)
            if os.fstat(fd).st_size < offset:       # truncated by the program: start over
                offset = 0
                self.partial[node] = b""
            chunks = []
            while True:
                data = os.pread(fd, 1 << 16, offset)
                if not data:
                    break
                chunks.append(data)
                offset += len(data)
            self.offsets[node] = offset
        finally:
            os.close(fd)
        if chunks:
            lines, self.partial[node] = split_lines(self.partial.get(node, b"") + b"".join(chunks))
            self._deliver_lines(node, lines)

    def _read_fifo(self, fd: int) -> None:
        node = self.fifo_node.get(fd)
        if node is None:
            return             # forgotten by a change in the same turn
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            self.selector.unregister(fd)
            return
        lines, self.fifo_partial[fd] = split_lines(self.fifo_partial.get(fd, b"") + data)
        self._deliver_lines(node, lines)

    def _deliver_lines(self, node: str, lines: list[bytes]) -> None:
        for line in lines:
            try:
                kind, name, data, record_kind = parse_line(line)
            except MailboxError as error:
                self.complain(node, str(error))
                continue
            try:
                self.deliver(node, kind, name, data, record_kind)
            except Exception as error:            # the agent must keep watching
                self.complain(node, f"could not deliver {kind} {name!r}: {error}")


# -- nestbed-event ---------------------------------------------------------------------------------------------

def event_main(argv: list[str] | None = None) -> int:
    """`nestbed-event NAME [JSON]`: append {"event": NAME, "data": JSON} to this node's mailbox."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help") or len(args) > 2:
        print("usage: nestbed-event NAME [JSON]   (inside a nestbed node: tells the experiment NAME happened)",
              file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    name = args[0]
    data = None
    if len(args) == 2:
        try:
            data = json.loads(args[1])
        except json.JSONDecodeError as error:
            print(f"nestbed-event: the data is not JSON ({error.msg} at column {error.colno}): {args[1]!r}",
                  file=sys.stderr)
            return 2
    box = os.environ.get("NESTBED_MAILBOX")
    if not box or not os.path.isdir(box) or not os.path.exists(os.path.join(box, EVENTS)):
        print("nestbed-event: not inside a nestbed node (no mailbox at "
              f"{box or '$NESTBED_MAILBOX (unset)'}); run it with 'nestbed exec EXPERIMENT NODE -- nestbed-event …'",
              file=sys.stderr)
        return 1
    line = json.dumps({"event": name, "data": data}, separators=(",", ":")) + "\n"
    try:
        fd = os.open(os.path.join(box, EVENTS), os.O_WRONLY | os.O_APPEND)
    except OSError as error:          # the mailbox is root's (realize/mailboxes.py): only root in the node posts
        print(f"nestbed-event: cannot write the mailbox {box} ({error.strerror}); events are posted as root",
              file=sys.stderr)
        return 1
    try:
        os.write(fd, line.encode())       # one write of one line: appends from many programs do not interleave
    finally:
        os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(event_main())
