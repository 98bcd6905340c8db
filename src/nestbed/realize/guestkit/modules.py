"""Kernel modules on disk: names, modules.dep (read, or generated from each module's .modinfo), dependency
order, and the appended signature the guest need not check."""
from __future__ import annotations

import gzip
import lzma
import os
import re
import struct
from collections.abc import Iterable
from pathlib import Path


def module_name(path_or_name: str) -> str:
    """`kernel/net/9p/9pnet_virtio.ko.xz` or `9pnet-virtio` -> `9pnet_virtio` (the kernel's spelling)."""
    base = path_or_name.rsplit("/", 1)[-1]
    for suffix in (".xz", ".zst", ".gz"):
        base = base.removesuffix(suffix)
    return base.removesuffix(".ko").replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """modules.dep -> {name: (path, (dependency paths...))}; paths relative to lib/modules/RELEASE."""
    table: dict[str, tuple[str, tuple[str, ...]]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        path, _, deps = line.partition(":")
        table[module_name(path.strip())] = (path.strip(), tuple(deps.split()))
    return table


def resolve(names: Iterable[str], dep: dict[str, tuple[str, tuple[str, ...]]],
            builtin: Iterable[str] = ()) -> list[str]:
    """Module paths to load for `names`, every dependency before its users, each once.

    Built-in modules are skipped; a name that is neither in modules.dep nor built in raises KeyError.
    modules.dep lists the full (transitive) dependencies, but this does not rely on it: it walks them.
    """
    by_path = {path: name for name, (path, _) in dep.items()}
    built = {module_name(b) for b in builtin}
    order: list[str] = []
    state: dict[str, int] = {}          # 1 visiting, 2 done

    def visit(name: str) -> None:
        if state.get(name) == 2 or name in built:
            return
        if state.get(name) == 1:
            return                      # a cycle (never in a valid kernel); break it
        if name not in dep:
            raise KeyError(name)
        state[name] = 1
        path, deps = dep[name]
        for dpath in deps:
            visit(by_path.get(dpath, module_name(dpath)))
        state[name] = 2
        order.append(path)

    for wanted in names:
        visit(module_name(wanted))
    return order


def _elf_section(data: bytes, wanted: str) -> bytes | None:
    """The contents of one section of a 64-bit little-endian ELF file (a .ko), or None."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return None
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQ", data, shoff + k * shentsize) for k in range(shnum)]
    strtab = sections[shstrndx]
    names = data[strtab[4]:strtab[4] + strtab[5]]
    for name_off, _type, _flags, _addr, offset, size in sections:
        end = names.find(b"\0", name_off)
        if names[name_off:end].decode() == wanted:
            return data[offset:offset + size]
    return None


def read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    return data


SIGNATURE_MAGIC = b"~Module signature appended~\n"


def strip_signature(data: bytes) -> bytes:
    """A module without its appended signature: the kernel skips the RSA check (tens of ms each under TCG)
    and loads it, tainted, unless module.sig_enforce (Debian: only under Secure Boot lockdown)."""
    if not data.endswith(SIGNATURE_MAGIC):
        return data
    body = data[:-len(SIGNATURE_MAGIC)]
    sig_len, = struct.unpack(">I", body[-4:])
    return body[:-(12 + sig_len)]


def modinfo(path: Path) -> tuple[list[str], list[str]]:
    """(`depends=`, `alias=` values) of a module's .modinfo (what depmod derives its files from)."""
    info = _elf_section(read_module(path), ".modinfo") or b""
    depends: list[str] = []
    aliases: list[str] = []
    for item in info.split(b"\0"):
        if item.startswith(b"depends="):
            depends = [module_name(n) for n in item[8:].decode().split(",") if n]
        elif item.startswith(b"alias="):
            aliases.append(item[6:].decode(errors="replace"))
    return depends, aliases


def modinfo_depends(path: Path) -> list[str]:
    return modinfo(path)[0]


def generate_modules_dep(modules_dir: Path) -> tuple[str, str]:
    """modules.dep and modules.alias texts for a tree that has none (Debian's package leaves them to depmod)."""
    paths = {}
    for ko in sorted(modules_dir.rglob("*.ko*")):
        if re.search(r"\.ko(\.xz|\.gz)?$", ko.name):
            paths[module_name(ko.name)] = str(ko.relative_to(modules_dir))
    infos = {name: modinfo(modules_dir / rel) for name, rel in paths.items()}
    direct = {name: info[0] for name, info in infos.items()}
    aliases = [f"alias {alias} {name}" for name, info in infos.items() for alias in info[1]]
    lines = []
    for name, rel in paths.items():
        seen: list[str] = []
        stack = list(direct[name])
        while stack:                              # transitive closure, users before their dependencies
            dep_name = stack.pop(0)
            if dep_name in seen or dep_name not in paths:
                continue
            seen.append(dep_name)
            stack.extend(direct[dep_name])
        lines.append(f"{rel}: {' '.join(paths[d] for d in seen)}".rstrip())
    return "\n".join(lines) + "\n", "\n".join(aliases) + "\n"


def load_modules_dep(modules_dir: Path, writable: bool) -> str:
    dep_file = modules_dir / "modules.dep"
    if dep_file.exists() and (not writable or (modules_dir / "modules.alias").exists()):
        return dep_file.read_text()
    text, aliases = generate_modules_dep(modules_dir)
    if writable:
        for name, content in (("modules.alias", aliases), ("modules.dep", text)):   # modules.dep last: the flag
            tmp = modules_dir / f"{name}.tmp"
            tmp.write_text(content)
            os.replace(tmp, modules_dir / name)
    return text


def read_builtin(modules_dir: Path) -> list[str]:
    try:
        return [module_name(line.strip()) for line in (modules_dir / "modules.builtin").read_text().splitlines()
                if line.strip()]
    except FileNotFoundError:
        return []
