"""What the web view's integration tests share: `nestbed web NAME` started and stopped as a user does (its URL
read from its first line, Ctrl-C at the end, no traceback), and Debian's chromium launched by Playwright."""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from typing import Any

from conftest import NESTBED, exec_in

URL = re.compile(r"^http://127\.0\.0\.1:(\d+)/\?token=([A-Za-z0-9_-]{43,})$")
CHROMIUM_ARGS = ["--disable-background-networking", "--disable-component-update", "--no-first-run"]


@dataclass
class Served:
    name: str
    port: int
    token: str
    server: subprocess.Popen[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?token={self.token}"


def start_web(name: str) -> Served:
    """`nestbed web NAME --port 0`, once it printed its URL (an AssertionError with its stderr if it did not)."""
    server = subprocess.Popen(NESTBED + ["web", name, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=os.environ.copy())
    found = URL.match((server.stdout.readline() if server.stdout else "").strip())
    if not found:
        server.kill()
        server.wait()
        raise AssertionError(server.stderr.read() if server.stderr else "nestbed web printed no URL")
    return Served(name, int(found.group(1)), found.group(2), server)


def stop_web(served: Served) -> None:
    """Ctrl-C; the server must exit 0 with no traceback."""
    served.server.send_signal(2)
    try:
        code = served.server.wait(timeout=10)
    finally:
        if served.server.poll() is None:
            served.server.kill()
            served.server.wait()
    stderr = served.server.stderr.read() if served.server.stderr else ""
    assert code == 0 and "Traceback" not in stderr, stderr


def launch_chromium(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=os.environ.get("NESTBED_CHROMIUM", "/usr/bin/chromium"),
                                      headless=True, args=CHROMIUM_ARGS)


def watched_page(browser: Any) -> tuple[Any, list[str]]:
    """A 1600×900 page, and the list its page errors and console errors are put in (a test asserts it empty)."""
    page = browser.new_page(viewport={"width": 1600, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    return page, errors


def open_ready(page: Any, url: str, timeout_ms: int = 15_000) -> None:
    """Load the page and wait until app.js says it has drawn both panes (`window.nestbed.ready`)."""
    page.goto(url)
    page.wait_for_function("window.nestbed && window.nestbed.ready", timeout=timeout_ms)


def ping_passes(name: str, source: str, target: str) -> bool:
    """One ping from node `source` to `target` by name, inside experiment `name`."""
    return exec_in(name, source, "ping", "-c1", "-W1", target, check=False).returncode == 0
