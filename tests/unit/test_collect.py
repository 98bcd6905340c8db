"""File collection's pure parts (no root): paths, the tar command, missing paths, safe unpacking."""
from __future__ import annotations

import io
import tarfile

import pytest

from nestbed.control import collect
from nestbed.errors import ExperimentError


def test_paths_must_be_absolute_and_not_the_root():
    assert collect.check_paths(["/var/log/../log/syslog", "/tmp/x/"]) == ["/var/log/syslog", "/tmp/x"]
    with pytest.raises(ExperimentError, match=r"must be absolute.*e\.g\. /tmp/out\.pcap"):
        collect.check_paths(["out.pcap"])
    with pytest.raises(ExperimentError, match="whole machine"):
        collect.check_paths(["/.."])
    with pytest.raises(ExperimentError, match="at least one path"):
        collect.check_paths([])


def test_tar_runs_from_the_nodes_root_and_names_what_it_lacks():
    assert collect.tar_command(["/var/log/syslog", "/tmp"]) == \
        ["tar", "-C", "/", "-cf", "-", "--ignore-failed-read", "--", "var/log/syslog", "tmp"]
    stderr = ("tar: nope: Warning: Cannot stat: No such file or directory\n"
              "tar: root/secret: Cannot open: Permission denied\n")
    assert collect.missing_paths(stderr) == ["/nope", "/root/secret"]


def _archive(path, members):
    with tarfile.open(path, "w") as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)


def test_unpack_keeps_files_and_skips_what_would_escape(tmp_path):
    def file(name, data=b"x"):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        return info, data

    def link(name, target):
        info = tarfile.TarInfo(name)
        info.type, info.linkname = tarfile.SYMTYPE, target
        return info, None
    _archive(tmp_path / "a.tar", [file("var/log/syslog", b"hello"), link("var/log/rel", "syslog"),
                                  link("var/log/out", "/etc/passwd"), file("../escape"), link("up", "../../x")])
    files, size, skipped = collect.unpack(tmp_path / "a.tar", tmp_path / "node")
    assert (files, size) == (1, 5)
    assert (tmp_path / "node/var/log/syslog").read_bytes() == b"hello"
    assert (tmp_path / "node/var/log/rel").is_symlink()
    assert sorted(skipped) == ["/../escape", "/up", "/var/log/out"]
    assert not (tmp_path / "escape").exists()


def test_unpack_skips_devices_and_fifos_and_drops_set_id_bits(tmp_path):
    members = []
    for name, kind in (("dev/sda", tarfile.BLKTYPE), ("dev/tty", tarfile.CHRTYPE), ("run/fifo", tarfile.FIFOTYPE)):
        info = tarfile.TarInfo(name)
        info.type = kind
        members.append((info, None))
    suid = tarfile.TarInfo("usr/bin/tool")
    suid.size, suid.mode = 2, 0o4755
    members.append((suid, b"ok"))
    _archive(tmp_path / "a.tar", members)
    files, _, skipped = collect.unpack(tmp_path / "a.tar", tmp_path / "node")
    assert files == 1 and sorted(skipped) == ["/dev/sda", "/dev/tty", "/run/fifo"]
    assert (tmp_path / "node/usr/bin/tool").stat().st_mode & 0o7777 == 0o755


def test_collect_reports_per_node_with_a_fake_exec(tmp_path):
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w") as archive:
        info = tarfile.TarInfo("tmp/out.txt")
        info.size = 3
        archive.addfile(info, io.BytesIO(b"abc"))

    def exec_in(node, argv, on_out, on_err):
        if node == "gone":
            raise ExperimentError("the agent of VM gone went away while the command ran")
        on_out(payload.getvalue())
        on_err(b"tar: nope: Warning: Cannot stat: No such file or directory\n")
        return 0
    results = collect.collect(exec_in, ["a", "gone"], ["/tmp/out.txt", "/nope"], tmp_path / "out")
    assert (results[0].files, results[0].bytes, results[0].missing) == (1, 3, ["/nope"])
    assert (tmp_path / "out/a/tmp/out.txt").read_text() == "abc"
    assert results[1].error and "went away" in results[1].error
    assert not list((tmp_path / "out").glob(".*.tar"))          # temporary archives are gone


def test_nothing_found_anywhere_leaves_no_directory(tmp_path):
    def exec_in(node, argv, on_out, on_err):
        empty = io.BytesIO()
        tarfile.open(fileobj=empty, mode="w").close()
        on_out(empty.getvalue())
        on_err(b"tar: nope: Warning: Cannot stat: No such file or directory\n")
        return 0
    results = collect.collect(exec_in, ["a", "b"], ["/nope"], tmp_path / "out")
    assert [r.missing for r in results] == [["/nope"], ["/nope"]]
    assert not (tmp_path / "out").exists()
