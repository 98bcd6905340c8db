"""Hostile archives from nodes: nothing is written outside the target, the legitimate members arrive.

Every test unpacks into tmp/box/target beside a sentinel directory tmp/box/sentinel (and tmp/box holds nothing
else): after unpacking, the sentinel is unchanged and tmp/box holds only the two.
"""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from nestbed.control import tarsafe


def file(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def directory(name: str) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info, None


@pytest.fixture
def box(tmp_path: Path) -> Path:
    (tmp_path / "box" / "sentinel").mkdir(parents=True)
    (tmp_path / "box" / "sentinel" / "passwd").write_text("root:x:0:0\n")
    return tmp_path / "box"


def unpack(box: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> tarsafe.Unpacked:
    archive = box.parent / "a.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    result = tarsafe.unpack(archive, box / "target")
    assert sorted(p.name for p in box.iterdir()) == ["sentinel", "target"]
    assert [p.name for p in (box / "sentinel").iterdir()] == ["passwd"]
    assert (box / "sentinel" / "passwd").read_text() == "root:x:0:0\n"
    return result


def everything_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_absolute_names_land_inside(box: Path):
    result = unpack(box, [file(str(box / "sentinel" / "passwd"), b"owned"), file("/etc/x", b"ok")])
    assert result.files == 2 and result.skipped == []
    assert (box / "target" / str(box).lstrip("/") / "sentinel" / "passwd").read_bytes() == b"owned"
    assert (box / "target" / "etc" / "x").read_bytes() == b"ok"


def test_dot_dot_names_are_skipped(box: Path):
    result = unpack(box, [file("../sentinel/passwd", b"owned"), file("a/../../sentinel/new"), file("ok", b"1")])
    assert result.skipped == ["/../sentinel/passwd", "/a/../../sentinel/new"]
    assert everything_under(box / "target") == ["ok"]


def test_a_file_through_a_symlink_is_never_written(box: Path):
    outside = str(box / "sentinel")
    result = unpack(box, [link("a/link", outside), file("a/link/passwd", b"owned"),
                          link("b/up", ".."), file("b/up/c", b"through a link inside"),
                          file("a/real", b"kept")])
    assert "/a/link" in result.skipped and "/b/up/c" in result.skipped
    assert (box / "target" / "a" / "real").read_bytes() == b"kept"
    assert os.readlink(box / "target" / "b" / "up") == ".."
    assert not (box / "target" / "c").exists()


def test_links_out_and_chains_of_links_are_skipped(box: Path):
    # each of these looks inside to a lexical check of its own, yet a chain climbs out (the 2025 bypasses)
    result = unpack(box, [link("d/s", ".."), link("d/t", "s/../sentinel"), link("e", "d/s/../../sentinel"),
                          link("f", "/etc/passwd"), link("g", "../sentinel"), link("h/i/j", "../../.."),
                          link("k/ok", "../d"), link("fine", "d/s")])
    assert sorted(result.skipped) == ["/d/t", "/e", "/f", "/g", "/h/i/j"]
    assert os.readlink(box / "target" / "k" / "ok") == "../d"
    for path in (box / "target").rglob("*"):        # every link kept resolves inside
        assert path.resolve().is_relative_to((box / "target").resolve())


def test_hard_links_are_copies_of_members_and_never_of_disk_files(box: Path):
    result = unpack(box, [file("data", b"inside"), link("copy", "data", tarfile.LNKTYPE),
                          link("steal", str(box / "sentinel" / "passwd"), tarfile.LNKTYPE),
                          link("steal2", "../sentinel/passwd", tarfile.LNKTYPE),
                          link("missing", "nope", tarfile.LNKTYPE)])
    assert sorted(result.skipped) == ["/missing", "/steal", "/steal2"]
    assert (box / "target" / "copy").read_bytes() == b"inside"
    assert os.stat(box / "target" / "copy").st_ino != os.stat(box / "target" / "data").st_ino
    assert result.files == 2 and result.bytes == 12


def test_long_names_and_deep_chains(box: Path):
    deep = "/".join(["d" * 200] * 40)               # 8 kB: past PATH_MAX, walked one component at a time
    result = unpack(box, [file(deep + "/leaf", b"deep"), file("x" * 300, b"too long a component"),
                          link("l" * 10 + "/" + "/".join([".."] * 60) + "/sentinel", "x"),
                          file("/".join([".."] * 50) + "/" + "y" * 200)])
    assert result.files == 1 and len(result.skipped) == 3
    fd = os.open(box / "target", os.O_RDONLY)
    try:
        for part in deep.split("/"):
            fd, old = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
            os.close(old)
        leaf = os.open("leaf", os.O_RDONLY, dir_fd=fd)
        assert os.read(leaf, 10) == b"deep"
        os.close(leaf)
    finally:
        os.close(fd)


def test_devices_fifos_and_set_id_bits(box: Path):
    members = []
    for name, kind in (("dev/sda", tarfile.BLKTYPE), ("dev/tty", tarfile.CHRTYPE), ("run/fifo", tarfile.FIFOTYPE)):
        info = tarfile.TarInfo(name)
        info.type = kind
        members.append((info, None))
    result = unpack(box, [*members, file("bin/tool", b"ok", 0o6755)])
    assert sorted(result.skipped) == ["/dev/sda", "/dev/tty", "/run/fifo"]
    assert (box / "target" / "bin" / "tool").stat().st_mode & 0o7777 == 0o755


def test_a_directory_is_not_replaced_by_a_link_and_a_later_copy_replaces_a_file(box: Path):
    result = unpack(box, [directory("etc"), file("etc/conf", b"v1"), link("etc", "../sentinel"),
                          link("etc", "."), file("etc/conf", b"v2"), file("etc", b"a file over a directory")])
    assert sorted(result.skipped) == ["/etc", "/etc", "/etc"]
    assert (box / "target" / "etc").is_dir() and not (box / "target" / "etc").is_symlink()
    assert (box / "target" / "etc" / "conf").read_bytes() == b"v2"


def test_a_target_that_is_a_link_is_refused(box: Path, tmp_path: Path):
    (box / "target").symlink_to(box / "sentinel")
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        info, data = file("passwd", b"owned")
        tar.addfile(info, io.BytesIO(data or b""))
    with pytest.raises(OSError):
        tarsafe.unpack(archive, box / "target")
    assert (box / "sentinel" / "passwd").read_text() == "root:x:0:0\n"
