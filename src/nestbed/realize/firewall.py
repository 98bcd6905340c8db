"""The experiment's nftables table in the host's namespace: what its control network may send the host.

The control bridge holds the host's control address, so without a filter every VM and `control: true` node
would reach any service the host has on 0.0.0.0 and, with ip_forward on, other experiments' control networks and
beyond. Agents need nothing from guests but answers: the host agent connects to each guest agent's port, no agent
connects to the host (guest agents listen; the host agent listens on a unix socket). So the table
`inet nestbed-PREFIX-NAME` (PREFIX: paths.object_prefix(), nb by default) lets in from the bridge only
replies to connections the host opened, drops everything else in
from it, and drops whatever would be routed from or to it. Frames switched between the bridge's own ports (guests
of this experiment) are not routing: with br_netfilter loaded they pass the forward hook in and out of the bridge,
and are let through. The bridge's ports are named too, for the moment before they are enslaved.

Written with `nft -f -`: one file is one transaction, and Debian 12's nft (1.0.6) keeps table comments, which
carry the experiment's mark, only in its text syntax (its JSON drops them). Every name in the text is nestbed's
own and checked against a strict pattern first.
"""
from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

from nestbed import paths
from nestbed.errors import ExperimentError
from nestbed.realize import ownership

ENTRY = "nftables"                  # the journal entry's type
FAMILY = "inet"
PRIORITY = "filter - 10"            # before the usual filter chains; a drop anywhere is final whatever runs first
_SAFE = re.compile(r"[A-Za-z0-9_.:*-]{1,255}")


def table_name(experiment: str) -> str:
    """`nestbed-nb-NAME`: the object prefix keeps two installations' (or test runs') experiments of one name apart."""
    return f"nestbed-{paths.object_prefix()}-{experiment}"


def entry(experiment: str) -> dict[str, str]:
    return {"t": ENTRY, "family": FAMILY, "table": table_name(experiment)}


def ruleset(table: str, mark: str, bridge: str, ports: list[str], subnet: str, host_address: str) -> str:
    """The nft script creating the table (`create` fails if it exists). `ports`: patterns of the bridge's ports."""
    for name in [table, mark, bridge, *ports]:
        if not _SAFE.fullmatch(name):
            raise ValueError(f"{name!r} is not a name nestbed puts in an nft script")
    network = ipaddress.IPv4Network(subnet)
    host = ipaddress.IPv4Address(host_address)
    head = f"inet {table}"
    lines = [f'create table {head} {{ comment "{mark}"; }}']
    for chain in ("input", "forward"):
        lines.append(f"add chain {head} {chain} {{ type filter hook {chain} priority {PRIORITY}; policy accept; }}")
    lines += [f'add rule {head} input iifname "{bridge}" ip saddr {network} ip daddr {host} '
              f"ct direction reply ct state established,related accept",
              f'add rule {head} input iifname "{bridge}" drop']
    lines += [f'add rule {head} input iifname "{port}" drop' for port in ports]
    lines += [f'add rule {head} forward iifname "{bridge}" oifname "{bridge}" accept',
              f'add rule {head} forward iifname "{bridge}" drop',
              f'add rule {head} forward oifname "{bridge}" drop']
    lines += [f'add rule {head} forward {way} "{port}" drop' for port in ports for way in ("iifname", "oifname")]
    return "\n".join(lines) + "\n"


def nft(args: list[str], script: str | None = None, preexec: Callable[[], None] | None = None) -> tuple[int, str, str]:
    """Run nft: (exit code, stdout, its first error line). Exit 127 when nft is not installed."""
    binary = shutil.which("nft") or "/usr/sbin/nft"
    try:
        result = subprocess.run([binary, *args], input=script, text=True, capture_output=True, preexec_fn=preexec)
    except FileNotFoundError:
        return 127, "", "nft is not installed (Debian: apt-get install nftables)"
    errors = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    error = next((line for line in errors if "Error:" in line), errors[0] if errors else "")
    return result.returncode, result.stdout, error


def create(script: str, table: str) -> None:
    code, _out, error = nft(["-f", "-"], script)
    if code != 0:
        raise ExperimentError(f"cannot create the control network's firewall (nftables table {FAMILY} {table}): "
                              f"{error or f'nft exited with {code}'}")


def parse_listing(text: str, family: str, table: str) -> tuple[int | None, str | None]:
    """(handle, comment) of the table in `nft -a list table FAMILY TABLE`'s output."""
    handle = comment = None
    for line in text.splitlines():
        found = re.fullmatch(rf"table {re.escape(family)} {re.escape(table)} \{{ # handle (\d+)", line.strip())
        if found:
            handle = int(found.group(1))
            continue
        said = re.fullmatch(r'comment "(.*)"', line.strip())
        if said and handle is not None:
            comment = said.group(1)
            break
        if line.strip().startswith(("chain ", "set ", "map ", "}")):
            break                                   # the table's comment comes before its contents
    return handle, comment


def remove(entries: list[dict[str, Any]], mark: str) -> list[str]:
    """Delete each journaled table that carries `mark` (by handle: a table made anew meanwhile is another);
    returns a line for each one of that name left alone."""
    kept: list[str] = []
    for item in entries:
        if item["t"] != ENTRY:
            continue
        family, table = str(item["family"]), str(item["table"])
        what = f"nftables table {family} {table}"
        code, listing, error = nft(["-a", "list", "table", family, table])
        if code != 0:
            if "No such file or directory" not in error:
                kept.append(f"left {what}: nft could not list it: {error}")
            continue
        handle, comment = parse_listing(listing, family, table)
        if handle is None or comment != mark:
            kept.append(ownership.not_ours(what, comment, mark))
            continue
        code, _out, error = nft(["delete", "table", family, "handle", str(handle)])
        if code != 0 and "No such file or directory" not in error:
            kept.append(f"left {what}: nft could not delete it: {error}")
    return kept
