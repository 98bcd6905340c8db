"""`nestbed agent install` / `uninstall`: the etcd engine's host agent as a systemd service on every real host.

    results = agentunit.install(cluster, ["http://10.0.0.5:2379"])     # HostResult per host: ok, one line
    results = agentunit.uninstall(cluster)
    text = agentunit.render_unit(UnitSpec("h7", ("http://10.0.0.5:2379",), bundle_dir=..., bundle_id=...))

Each host is reached as `up` reaches it (SshHost, one connection, cluster/real.py): a probe first (is systemd
running there — /run/systemd/system, sd_booted(3)'s test — and whose unit is in place), so a host that cannot
take the unit gets nothing at all, not even the bundle; then nestbed is brought (cluster/bundle.py) and the unit
`/etc/systemd/system/nestbed-agent.service` written atomically, `systemctl daemon-reload`, `enable --now` (and
`restart` when an older unit of ours was replaced). Its ExecStart runs the brought bundle with the host's
`python3 -S`, as the SSH transport's remote agent runs.

Ownership is the unit's first line, MARKER, naming nestbed and the bundle: install replaces and uninstall removes
only a unit carrying it (a unit of the same name written by anyone else is refused in one line), as teardown
removes only the iptables rules carrying an experiment's mark. The bundle stays on uninstall (bundle.py: bundles
are removed with `<state root>/bundles`).

`root` (the CLI's --root DIR, as `systemctl --root`; `{host}` in it is each host's name): the unit goes into an
image's root on the host instead (DIR/etc/systemd/system, enabled by the multi-user.target.wants link `systemctl
enable` makes), its bundle into DIR/<state root>/bundles, named there by the paths the image will have; nothing is
started and systemd need not run there.
"""
from __future__ import annotations

import re
import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from nestbed import __version__
from nestbed.cluster import real
from nestbed.errors import ExperimentError
from nestbed.model.cluster import Cluster

if TYPE_CHECKING:
    from nestbed.cluster.ssh import SshHost

UNIT = "nestbed-agent.service"
UNIT_DIR = "/etc/systemd/system"
UNIT_PATH = f"{UNIT_DIR}/{UNIT}"
WANTS = "multi-user.target.wants"       # where `systemctl enable` links a unit WantedBy=multi-user.target
MARKER = "# nestbed-agent-unit:"
DEFAULT_STATE_ROOT = "/var/lib/nestbed"
PARALLEL = 64
HOST_FIELD = "{host}"                   # in --root: each host's own image root
URL = re.compile(r"https?://[^\s/,]+/?|unix://[^\s,]+")
_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


@dataclass(frozen=True)
class UnitSpec:
    """What the unit runs: `nestbed agent --etcd URLS --host NAME` from the brought bundle (or the host's own
    nestbed, when the cluster file names its python)."""
    host: str
    etcd: tuple[str, ...]
    python: str = "python3"
    bundle_dir: str | None = None       # PYTHONPATH there; None: `python` has nestbed installed
    bundle_id: str | None = None
    state_dir: str | None = None        # the agent's NESTBED_STATE_DIR (None: the host's default)
    prefix: str | None = None           # its NESTBED_PREFIX (None: the host's default)


@dataclass(frozen=True)
class HostResult:
    host: str
    ok: bool
    line: str


# -- pure: the etcd list, the command line, the unit --------------------------------------------------------------
def parse_etcd(text: str) -> tuple[str, ...]:
    """`URL[,URL...]` (http://HOST:PORT, https://…, unix:///PATH), each checked; one line when one is not."""
    urls = tuple(part.strip() for part in text.split(","))
    for url in urls:
        if not URL.fullmatch(url):
            raise ExperimentError(f"--etcd {text!r}: {url!r} is not an etcd endpoint; give http://HOST:PORT "
                                  f"(several separated by commas)")
    return urls


def agent_argv(spec: UnitSpec) -> list[str]:
    """The agent's command line, as ExecStart runs it (env sets the brought nestbed's path and the host's root
    and prefix; -S: none of the host's own site packages)."""
    env = [f"PYTHONPATH={spec.bundle_dir}"] if spec.bundle_dir else []
    env += [f"NESTBED_STATE_DIR={spec.state_dir}"] if spec.state_dir else []
    env += [f"NESTBED_PREFIX={spec.prefix}"] if spec.prefix else []
    flags = ["-S"] if spec.bundle_dir else []
    return ["/usr/bin/env", *env, spec.python, *flags, "-m", "nestbed.cli.main", "agent",
            "--etcd", ",".join(spec.etcd), "--host", spec.host]


def systemd_word(word: str) -> str:
    """One word of a systemd command line: `%` and `$` are specifiers and variables there (doubled to stay
    literal); a word with anything else unusual is double-quoted with C escapes."""
    literal = word.replace("%", "%%").replace("$", "$$")
    if _PLAIN.fullmatch(word):
        return literal
    return '"' + literal.replace("\\", "\\\\").replace('"', '\\"') + '"'


def marker_line(bundle_id: str | None) -> str:
    brought = f"bundle {bundle_id}" if bundle_id else "the host's own nestbed"
    return f"{MARKER} written by nestbed {__version__} (nestbed agent install), {brought}; " \
           f"nestbed agent uninstall removes it"


def render_unit(spec: UnitSpec) -> str:
    """The unit file's text (pure)."""
    command = " ".join(systemd_word(word) for word in agent_argv(spec))
    description = f"nestbed host agent of {spec.host} (etcd engine: reconciles this host's experiments)"
    return "\n".join([
        marker_line(spec.bundle_id),
        "[Unit]",
        f"Description={description.replace('%', '%%')}",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={command}",
        "Restart=always",
        "RestartSec=2",
        "# Stopping or restarting the agent leaves the experiments' processes (host agents, launchers, nodes'",
        "# programs, VMs) running: they are the experiments', ended by teardown from their journals.",
        "KillMode=process",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])


# -- pure: the scripts run there (sh) -----------------------------------------------------------------------------
def _paths(root: str | None) -> tuple[str, str]:
    """(the unit's path, its enable link's) in sh, under an image's root or the host's own /."""
    top = shlex.quote(root.rstrip("/")) if root else ""
    return f"{top}{UNIT_PATH}", f"{top}{UNIT_DIR}/{WANTS}/{UNIT}"


def probe_script(root: str | None) -> str:
    """Prints one word: `nosystemd` (no systemd running: nothing can be started), `noroot` (the image root has no
    etc/systemd/system), `absent`, `ours` (MARKER first) or `foreign` (a unit of that name, not nestbed's)."""
    unit, _ = _paths(root)
    gate = (f"if [ ! -d {shlex.quote(root.rstrip('/'))}{UNIT_DIR} ]; then echo noroot; exit 0; fi" if root else
            "if [ ! -d /run/systemd/system ] || ! command -v systemctl >/dev/null 2>&1; then echo nosystemd; "
            "exit 0; fi")
    return "; ".join([gate, f"u={unit}", 'if [ ! -e "$u" ] && [ ! -L "$u" ]; then echo absent',
                      f"elif head -n 1 \"$u\" | grep -q '^{MARKER}'; then echo ours", "else echo foreign; fi"])


def write_script(root: str | None) -> str:
    """Writes the unit read on stdin (whole or not at all: beside it, then renamed), unless a foreign one appeared
    meanwhile; live: reload, enable and start it (restart an older one of ours). Prints `installed`, `updated` or
    `foreign`."""
    unit, link = _paths(root)
    lines = [f"set -e; u={unit}; w={link}",
             'was=installed; if [ -e "$u" ] || [ -L "$u" ]; then was=updated; '
             f"head -n 1 \"$u\" | grep -q '^{MARKER}' || {{ echo foreign; exit 0; }}; fi",
             't="$u.nestbed-part.$$"; trap \'rm -f "$t"\' EXIT; cat > "$t"; chmod 644 "$t"; mv -f "$t" "$u"']
    if root:
        lines.append(f'mkdir -p "${{w%/*}}"; ln -sfn {UNIT_PATH} "$w"')
    else:
        lines.append(f"{_quiet('systemctl daemon-reload')}; {_quiet(f'systemctl enable --now {UNIT}')}")
        lines.append(f'if [ "$was" = updated ]; then {_quiet(f"systemctl restart {UNIT}")}; fi')
    lines.append('echo "$was"')
    return "; ".join(lines)


def _quiet(command: str) -> str:
    """The command's chatter ("Created symlink …") kept from stdout, its error passed on to stderr."""
    return f'if ! said=$({command} 2>&1); then echo "$said" >&2; exit 1; fi'


def remove_script(root: str | None) -> str:
    """Removes our unit (stopped and disabled first when live) and its enable link. Prints `absent`, `foreign` or
    `removed`."""
    unit, link = _paths(root)
    lines = [f"set -e; u={unit}; w={link}",
             'if [ ! -e "$u" ] && [ ! -L "$u" ]; then echo absent; exit 0; fi',
             f"head -n 1 \"$u\" | grep -q '^{MARKER}' || {{ echo foreign; exit 0; }}"]
    if root:
        lines.append(f'if [ -L "$w" ] && [ "$(readlink "$w")" = {UNIT_PATH} ]; then rm -f "$w"; fi; '
                     'rmdir "${w%/*}" 2>/dev/null || true; rm -f "$u"')
    else:
        lines.append(f'{_quiet(f"systemctl disable --now {UNIT}")}; rm -f "$u"; {_quiet("systemctl daemon-reload")}; '
                     f'systemctl reset-failed {UNIT} >/dev/null 2>&1 || true')
    lines.append("echo removed")
    return "; ".join(lines)


# -- lines --------------------------------------------------------------------------------------------------------
def _where(root: str | None) -> str:
    return f"{root.rstrip('/')}{UNIT_PATH}" if root else UNIT_PATH


def _refusal(name: str, word: str, root: str | None) -> str | None:
    if word == "nosystemd":
        return (f"{name}: no systemd runs there (/run/systemd/system is absent): nothing written; run nestbed "
                f"agent under its own supervisor, or write the unit into an image's root with --root DIR")
    if word == "noroot":
        return f"{name}: {root} has no {UNIT_DIR.lstrip('/')} (not the root of a system with systemd): nothing written"
    if word == "foreign":
        return (f"{name}: {_where(root)} is not nestbed's (its first line is not '{MARKER} …'): left as it "
                f"is")
    return None


# -- per host -----------------------------------------------------------------------------------------------------
def _word(transport: SshHost, script: str, stdin: str | None = None) -> str:
    rc, out, err = transport.shell(script, stdin)
    words = out.split()
    if rc != 0 or not words:
        said = err.strip().splitlines()
        raise ExperimentError(f"{transport.label}: {said[-1] if said else f'exit status {rc}'}")
    return words[-1]


def install_host(host: real.RealHost, etcd: tuple[str, ...], root: str | None = None) -> HostResult:
    transport = host.transport()
    try:
        word = _word(transport, probe_script(root))
        refused = _refusal(host.name, word, root)
        if refused is not None:
            return HostResult(host.name, False, refused)
        info = transport.info
        bundle_dir = bundle_id = None
        if info.bring:          # <state root>/bundles/<id>; in an image's root, the path it will have there
            image_root = (host.state_dir or DEFAULT_STATE_ROOT) if root else None
            unpacked = transport.bring(f"{root.rstrip('/')}{image_root}" if root else None)
            bundle_dir = unpacked[len(root.rstrip("/")):] if root else unpacked
            bundle_id = PurePosixPath(unpacked).name
        spec = UnitSpec(host.name, etcd, info.python, bundle_dir, bundle_id, host.state_dir, host.prefix)
        word = _word(transport, write_script(root), render_unit(spec))
        refused = _refusal(host.name, word, root)
        if refused is not None:
            return HostResult(host.name, False, refused)
        running = (f"enabled in {root} (starts at its boot)" if root else
                   "enabled and started" if word == "installed" else "enabled and restarted")
        return HostResult(host.name, True, f"{host.name}: {word} {_where(root)} ({bundle_id or info.python}), "
                                           f"{running}: nestbed agent --etcd {','.join(etcd)} --host {host.name}")
    except ExperimentError as error:
        return HostResult(host.name, False, f"{host.name}: {_unlabelled(str(error), transport.label)}")
    finally:
        transport.close()


def uninstall_host(host: real.RealHost, root: str | None = None) -> HostResult:
    transport = host.transport()
    try:
        word = _word(transport, probe_script(root))
        if word == "ours":
            word = _word(transport, remove_script(root))
        refused = _refusal(host.name, word, root)
        if refused is not None:
            return HostResult(host.name, False, refused)
        if word == "absent":
            return HostResult(host.name, True, f"{host.name}: no {_where(root)}: nothing to remove")
        done = "removed" if root else "stopped, disabled and removed"
        return HostResult(host.name, True, f"{host.name}: {done} {_where(root)} (nestbed's bundle stays in its "
                                           f"state root)")
    except ExperimentError as error:
        return HostResult(host.name, False, f"{host.name}: {_unlabelled(str(error), transport.label)}")
    finally:
        transport.close()


def _unlabelled(text: str, label: str) -> str:
    return text[len(label):].lstrip(": ") if text.startswith(label) else text


# -- every host ---------------------------------------------------------------------------------------------------
def hosts_of(cluster: Cluster) -> list[real.RealHost]:
    """The cluster file's real hosts; emulated ones live only with an experiment and get no service."""
    if not real.is_real(cluster):
        raise ExperimentError(f"{cluster.source or 'the cluster'} lists no real hosts (ssh:): agents are installed "
                              f"on real hosts; emulated hosts live only with an experiment")
    return real.hosts_of(cluster)


def root_of(root: str | None, host: str) -> str | None:
    """A host's image root: `{host}` in the CLI's --root is its name (each host's unit names its host)."""
    return root.replace(HOST_FIELD, host) if root is not None else None


def check_root(root: str | None, hosts: list[real.RealHost]) -> None:
    if root is None:
        return
    if not root.startswith("/") or root.rstrip("/") == "":
        raise ExperimentError(f"--root {root!r}: give the absolute path of an image's root directory (not /)")
    if HOST_FIELD not in root and len(hosts) > 1:
        raise ExperimentError(f"--root {root!r}: {len(hosts)} hosts would write one unit (each names its host); "
                              f"put {HOST_FIELD} in it, e.g. --root /srv/images/{HOST_FIELD}")


def install(cluster: Cluster, etcd: tuple[str, ...], root: str | None = None) -> list[HostResult]:
    hosts = hosts_of(cluster)
    check_root(root, hosts)
    with ThreadPoolExecutor(min(PARALLEL, len(hosts))) as pool:
        return list(pool.map(lambda host: install_host(host, etcd, root_of(root, host.name)), hosts))


def uninstall(cluster: Cluster, root: str | None = None) -> list[HostResult]:
    hosts = hosts_of(cluster)
    check_root(root, hosts)
    with ThreadPoolExecutor(min(PARALLEL, len(hosts))) as pool:
        return list(pool.map(lambda host: uninstall_host(host, root_of(root, host.name)), hosts))
