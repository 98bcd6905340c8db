"""A real etcd for tests: Debian's etcd-server started by the test on loopback (and a unix socket, which the
emulated hosts' agents reach from inside their namespaces), unique ports, its own data dir, fast election flags;
healthy before it is handed out, always killed and its directory removed afterwards.

    with EtcdServer() as etcd:   etcd.url (http://127.0.0.1:P), etcd.unix_url (unix:///DIR/etcd.sock:P)
        etcd.halt(); etcd.start()   # an outage: the same member again, on its data dir and ports
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
READY_SECONDS = 15.0


def _free_ports(count: int) -> list[int]:
    held = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        held.append(sock)
    ports = [s.getsockname()[1] for s in held]
    for sock in held:
        sock.close()
    return ports


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class EtcdServer:
    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="nestbed-etcd."))
        self.client_port, self.peer_port, self.metrics_port = _free_ports(3)
        self.url = f"http://127.0.0.1:{self.client_port}"
        # etcd makes a unix listener's socket at the URL's host:port, relative to its working directory
        self.socket_name = f"etcd.sock:{self.client_port}"
        self.unix_url = f"unix://{self.directory / self.socket_name}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> EtcdServer:
        for port in (self.client_port, self.peer_port, self.metrics_port):
            if _answers(port):        # an older member there would answer our health check: refuse
                raise RuntimeError(f"port {port} is taken; not starting etcd there")
        peer = f"http://127.0.0.1:{self.peer_port}"
        argv = [ETCD, "--name", "nbtest", "--data-dir", str(self.directory / "data"),
                "--listen-client-urls", f"{self.url},unix://{self.socket_name}",
                "--advertise-client-urls", self.url,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"nbtest={peer}", "--initial-cluster-state", "new",
                "--listen-metrics-urls", f"http://127.0.0.1:{self.metrics_port}",
                "--heartbeat-interval", "10", "--election-timeout", "100", "--logger", "zap",
                "--log-outputs", str(self.directory / "etcd.log")]
        self.process = subprocess.Popen(argv, cwd=self.directory, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        deadline = time.monotonic() + READY_SECONDS
        while not self.healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.directory / "etcd.log").read_text(errors="replace")[-2000:] \
                    if (self.directory / "etcd.log").exists() else ""
                self.stop()
                raise RuntimeError(f"etcd did not become healthy: {log}")
            time.sleep(0.02)
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=0.5) as answer:
                return json.loads(answer.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def halt(self) -> None:
        """The member stopped, its data dir kept (start() brings it back with its keys and revisions)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.directory, ignore_errors=True)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> EtcdServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def keys_under(url: str, prefix: bytes) -> list[bytes]:
    """Every key under the prefix (a fresh connection)."""
    import asyncio

    from nestbed.cluster.etcd.client import Etcd

    async def run() -> list[bytes]:
        async with Etcd([url]) as etcd:
            return [kv.key for kv in (await etcd.range_prefix(prefix, keys_only=True)).kvs]
    return asyncio.run(run())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
