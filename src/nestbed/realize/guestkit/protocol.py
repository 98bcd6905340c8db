"""What the host and the guest's init say to each other: kernel command-line items in, console markers out.

The host puts the command (and environment) on the kernel command line as `nestbed.argv=`/`nestbed.env=`
items (see `encode_argv`); the init (templates/init.sh, stage2.sh) prints one line with a marker when a step
fails, just before it runs the command, and when the command ended.
"""
from __future__ import annotations

import base64
import re

FAILURE_MARKER = "NESTBED-GUEST-FAILED:"       # the init prints this (then powers off) when a step fails
EXIT_MARKER = "NESTBED-GUEST-EXIT:"            # ... and this when the command ended with status 0
HANDOFF_MARKER = "NESTBED-GUEST-HANDOFF:"      # ... and this just before running the command
DEFAULT_9P_CACHE = "mmap"                      # the init's 9p cache mode unless nestbed.9pcache= says otherwise

_PLAIN_ITEM = re.compile(r"[A-Za-z0-9_./:@=+-]*")


def _item(text: str) -> str:
    """One item of nestbed.argv/env: `%TEXT` when TEXT needs no quoting (stage 2 takes it as it is), else its
    base64 (stage 2 decodes it: one fork+exec in the guest)."""
    if _PLAIN_ITEM.fullmatch(text):
        return f"%{text}"
    return base64.b64encode(text.encode()).decode()


def encode_argv(argv: list[str]) -> str:
    """The value of `nestbed.argv=` for a command (NUL-free strings; a trailing newline of an argument is lost)."""
    return ",".join(_item(arg) for arg in argv)


def encode_env(env: dict[str, str]) -> str:
    return ",".join(_item(f"{k}={v}") for k, v in env.items())


def decode_items(value: str) -> list[str]:
    """encode_argv/encode_env's inverse (what stage 2 does in the guest)."""
    return [item[1:] if item.startswith("%") else base64.b64decode(item).decode() for item in value.split(",")]
