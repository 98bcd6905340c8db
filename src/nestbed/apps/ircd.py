"""One ngircd of the CATCH demo, and a probe that tells when the servers are linked.

    python -m nestbed.apps.ircd serve --name irc1.catch (--template FILE | --template-text TEXT) --port 6667 \
        [--peer NAME=HOST:PORT:MYPASS:PEERPASS ...] [--connect] [--listen ADDR] [--info TEXT] [--network NAME] \
        --agent AGENT
    python -m nestbed.apps.ircd linked --host irc1 --port 6667 --expect irc2.catch[,irc3.catch] --timeout 30

serve renders the template (ircdconf) into a private temporary directory (owned by nobody, whom ngircd becomes
when started as root), runs `ngircd -n -f CONF`, records {"event": "started", "server": NAME} (kind ircd) once it
listens, and waits for it; SIGTERM is passed on, and the directory goes when ngircd has ended.
linked connects as a client and sends LINKS until every expected server is listed; it prints one JSON line
{"linked": BOOL, "servers": [...], "seconds": S}; exit 0 when linked, 1 on timeout.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from nestbed.apps import ircdconf, quickack
from nestbed.apps.args import Parser, fail
from nestbed.apps.ircconn import Connection, IrcError
from nestbed.apps.mailbox import Stop, record

NGIRCD = "/usr/sbin/ngircd"
LISTEN_TIMEOUT = 30.0            # a TCG guest starts ngircd slowly
CONFIG = "ngircd.conf"


def _owner_nobody(*paths: str) -> None:
    """ngircd started as root becomes nobody: let it read its configuration again on REHASH. Nobody else can."""
    if os.geteuid() != 0:
        return
    import pwd
    nobody = pwd.getpwnam("nobody")
    for path in paths:
        os.chown(path, nobody.pw_uid, nobody.pw_gid)


def _socket_inodes(pid: int) -> set[str] | None:
    try:
        targets = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return None
    return {t[8:-1] for t in targets if t.startswith("socket:[")}


def listening(pid: int, port: int) -> bool:
    """Whether process `pid` has a TCP socket listening on `port` (from /proc: no connection, nothing logged)."""
    inodes = _socket_inodes(pid)
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as file:
                rows = [line.split() for line in file.readlines()[1:]]
        except OSError:
            continue
        for row in rows:
            if len(row) > 9 and row[3] == "0A" and int(row[1].rsplit(":", 1)[1], 16) == port \
                    and (inodes is None or row[9] in inodes):
                return True
    return False


def serve(args: argparse.Namespace) -> int:
    stop = Stop()                                # before the directory exists: SIGTERM never leaves it behind
    if args.template_text is not None:
        template = args.template_text
    else:
        try:
            with open(args.template) as file:
                template = file.read()
        except OSError as error:
            fail("ircd", f"--template {args.template}: {error.strerror}")
    binary = shutil.which(args.ngircd) or (args.ngircd if os.access(args.ngircd, os.X_OK) else None)
    if binary is None:
        fail("ircd", f"{args.ngircd} not found (Debian: apt-get install ngircd)", code=1)
    directory = tempfile.mkdtemp(prefix="nestbed-ngircd.")
    try:
        try:
            peers = [ircdconf.parse_peer(spec) for spec in args.peer]
            text = ircdconf.render(template, args.name, args.port, peers, args.connect, args.listen, args.info,
                                   args.network, directory)
        except ircdconf.ConfigError as error:
            fail("ircd", str(error))
        config = os.path.join(directory, CONFIG)
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(text)
        os.mkdir(os.path.join(directory, "conf.d"), 0o700)      # the template's IncludeDir: empty
        _owner_nobody(directory, config, os.path.join(directory, "conf.d"))
        if args.quickack:
            quickack.ack_at_once("ircd")
        return _run(binary, config, args, stop)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _run(binary: str, config: str, args: argparse.Namespace, stop: Stop) -> int:
    started = time.monotonic()
    proc = subprocess.Popen([binary, "-n", "-f", config], stdin=subprocess.DEVNULL)
    up = False
    try:
        while proc.poll() is None and not stop:
            if not up and listening(proc.pid, args.port):
                up = True
                record(args.agent, {"event": "started", "server": args.name, "port": args.port, "pid": proc.pid,
                                    "seconds": round(time.monotonic() - started, 3)}, kind="ircd")
            elif not up and time.monotonic() - started > LISTEN_TIMEOUT:
                sys.stderr.write(f"ircd: ngircd does not listen on port {args.port} after {LISTEN_TIMEOUT:g} s\n")
                break
            time.sleep(0.01 if not up else 0.1)
    finally:
        if proc.poll() is None:
            proc.terminate()                     # SIGTERM: ngircd says goodbye to its clients and peers
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    record(args.agent, {"event": "stopped", "server": args.name, "returncode": proc.returncode,
                        "by_signal": bool(stop)}, kind="ircd")
    if stop:
        return 0
    if up:
        sys.stderr.write(f"ircd: ngircd ended by itself (exit status {proc.returncode})\n")
    elif proc.returncode is not None and proc.returncode != -15:
        sys.stderr.write(f"ircd: ngircd exited ({proc.returncode}) before it listened on port {args.port}\n")
    return 1


def probe(host: str, port: int, expect: list[str], timeout: float) -> dict:
    """LINKS until every expected server is listed, connecting again when the server is not up (yet)."""
    started = time.monotonic()
    deadline = started + timeout
    wanted = {name.lower() for name in expect}
    servers: list[str] = []
    nick = f"link{os.urandom(3).hex()}"
    while time.monotonic() < deadline:
        try:
            conn = Connection.open(host, port, nick, max(deadline - time.monotonic(), 0.1))
        except (OSError, IrcError):             # not up yet (TimeoutError is an OSError)
            time.sleep(0.25)
            continue
        try:
            while True:
                conn.send("LINKS")
                servers = []
                while (line := conn.read(deadline - time.monotonic())).command != "365":
                    if line.command == "364" and len(line.params) >= 2:
                        servers.append(line.params[1])
                if wanted <= {s.lower() for s in servers}:
                    return {"linked": True, "servers": servers, "seconds": round(time.monotonic() - started, 3)}
                time.sleep(0.2)
        except (OSError, IrcError):
            pass
        finally:
            conn.close()
    return {"linked": False, "servers": servers, "seconds": round(time.monotonic() - started, 3)}


def linked(args: argparse.Namespace) -> int:
    expect = [name for name in args.expect.split(",") if name]
    try:
        for name in expect:
            ircdconf.check_server_name(name)
        ircdconf.check_port(args.port)
    except ircdconf.ConfigError as error:
        fail("ircd linked", str(error))
    if not 0 < args.timeout <= 3600:
        fail("ircd linked", "--timeout must be in (0, 3600]")
    result = probe(args.host, args.port, expect, args.timeout)
    if args.agent:
        record(args.agent, {"event": "linked", "server": args.host, **result}, kind="ircd")
    sys.stdout.write(json.dumps(result) + "\n")
    return 0 if result["linked"] else 1


def main() -> None:
    parser = Parser(prog="ircd", description=__doc__)
    sub = parser.add_subparsers(dest="verb", required=True, parser_class=Parser)
    s = sub.add_parser("serve", help="run one ngircd")
    s.add_argument("--name", required=True, help="IRC server name, with a dot (irc1.catch)")
    source = s.add_mutually_exclusive_group(required=True)
    source.add_argument("--template", help="the configuration template file")
    source.add_argument("--template-text", help="the template's text (VMs do not see the controller's files)")
    s.add_argument("--port", type=int, default=6667)
    s.add_argument("--peer", action="append", default=[], metavar="NAME=HOST:PORT:MYPASS:PEERPASS")
    s.add_argument("--connect", action="store_true", help="dial the peers (else wait for them)")
    s.add_argument("--listen", default="0.0.0.0", help="addresses to listen on (ngircd's Listen)")
    s.add_argument("--info", default="")
    s.add_argument("--network", default="catch")
    s.add_argument("--agent", default="ircd")
    s.add_argument("--quickack", action="store_true",
                   help="ACK at once on this node's routes (ngircd leaves Nagle on: see apps/quickack.py)")
    s.add_argument("--ngircd", default=NGIRCD, help=argparse.SUPPRESS)
    link = sub.add_parser("linked", help="wait until the servers are linked")
    link.add_argument("--host", required=True)
    link.add_argument("--port", type=int, default=6667)
    link.add_argument("--expect", required=True, help="server names, comma-separated")
    link.add_argument("--timeout", type=float, default=30.0)
    link.add_argument("--agent", default="")
    args = parser.parse_args()
    sys.exit(serve(args) if args.verb == "serve" else linked(args))


if __name__ == "__main__":
    main()
