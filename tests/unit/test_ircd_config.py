"""The ngircd configuration generator (apps.ircdconf) and the template of examples/catch: what it renders, what it
refuses, and that ngircd itself accepts the result (`ngircd -t`, when ngircd is installed; else the text)."""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from nestbed.apps import ircd, ircdconf
from nestbed.apps.ircdconf import ConfigError, Peer

TEMPLATE = Path(__file__).resolve().parents[2] / "examples" / "catch" / "ngircd.conf.template"
NGIRCD = shutil.which("ngircd") or ("/usr/sbin/ngircd" if os.access("/usr/sbin/ngircd", os.X_OK) else None)
IRC2 = Peer("irc2.catch", "irc2", 6667, "one-to-two", "two-to-one")
IRC3 = Peer("irc3.catch", "10.0.2.3", 6697, "one-to-three", "three-to-one")


def rendered(directory: Path, peers: Sequence[Peer] = (IRC2,), connect: bool = True) -> str:
    return ircdconf.render(TEMPLATE.read_text(), "irc1.catch", 6667, peers, connect, listen="0.0.0.0",
                           directory=str(directory))


def settings(text: str) -> dict[str, list[str]]:
    """KEY -> its values, in order, with the section: "Global.Name" -> ["irc1.catch"]."""
    found: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return found


def test_the_template_renders_every_placeholder(tmp_path):
    text = rendered(tmp_path)
    assert not [line for line in text.splitlines() if "$" in line and not line.startswith("#")]
    got = settings(text)
    assert got["Global.Name"] == ["irc1.catch"] and got["Global.Ports"] == ["6667"]
    assert got["Global.Listen"] == ["0.0.0.0"] and got["Global.Network"] == ["catch"]
    assert got["Global.Info"] == ["nestbed IRC server irc1.catch"]
    assert got["Options.IncludeDir"] == [f"{tmp_path}/conf.d"]
    assert "Global.PidFile" not in got and "Global.MotdFile" not in got and got["Global.MotdPhrase"]


def test_the_template_sets_what_the_demo_needs(tmp_path):
    got = settings(rendered(tmp_path))
    assert got["Limits.MaxPenaltyTime"] == ["0"]           # no throttling of the botmaster's commands
    assert got["Limits.MaxConnectionsIP"] == ["0"]         # every bot of a VM from one address
    assert got["Limits.MaxNickLength"] == ["30"]
    assert got["Limits.MaxJoins"] == ["0"]
    assert 2 <= int(got["Limits.ConnectRetry"][0]) <= 5
    assert got["Options.DNS"] == got["Options.Ident"] == got["Options.PAM"] == ["no"]


def test_an_active_server_dials_each_peer(tmp_path):
    got = settings(rendered(tmp_path, [IRC2, IRC3], connect=True))
    assert got["Server.Name"] == ["irc2.catch", "irc3.catch"]
    assert got["Server.Host"] == ["irc2", "10.0.2.3"]
    assert got["Server.Port"] == ["6667", "6697"]
    assert got["Server.MyPassword"] == ["one-to-two", "one-to-three"]
    assert got["Server.PeerPassword"] == ["two-to-one", "three-to-one"]


def test_a_passive_server_has_no_peer_port(tmp_path):
    got = settings(rendered(tmp_path, [IRC2], connect=False))
    assert got["Server.Name"] == ["irc2.catch"] and "Server.Port" not in got
    assert got["Server.MyPassword"] == ["one-to-two"]


def test_no_peers_no_server_block(tmp_path):
    assert "[Server]" not in [line.strip() for line in rendered(tmp_path, [], connect=True).splitlines()]


def test_the_two_ends_of_a_link_agree_on_the_passwords():
    one = ircdconf.parse_peer("irc2.catch=irc2:6667:p12:p21")
    two = ircdconf.parse_peer("irc1.catch=irc1:6667:p21:p12")
    assert one == Peer("irc2.catch", "irc2", 6667, "p12", "p21")
    assert (one.my_password, one.peer_password) == (two.peer_password, two.my_password)


@pytest.mark.parametrize("spec, words", [
    ("irc2.catch:irc2:6667:a:b", "NAME=HOST:PORT:MYPASS:PEERPASS"),
    ("irc2.catch=irc2:6667:a", "NAME=HOST:PORT:MYPASS:PEERPASS"),
    ("irc2.catch=irc2:6667:a:b:c", "NAME=HOST:PORT:MYPASS:PEERPASS"),
    ("irc2=irc2:6667:a:b", "dot"),
    ("irc2.catch=irc 2:6667:a:b", "host"),
    ("irc2.catch=irc2:http:a:b", "not a number"),
    ("irc2.catch=irc2:70000:a:b", "1..65535"),
    ("irc2.catch=irc2:6667::b", "password"),
    ("irc2.catch=irc2:6667:a b:c", "password"),
    ("irc2.catch=irc2:6667:a\n[Operator]:b", "password"),
])
def test_bad_peers_say_why(spec, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        ircdconf.parse_peer(spec)


@pytest.mark.parametrize("change, words", [
    ({"template": "Name = $name\nFoo = $foo\n"}, "$foo"),
    ({"template": "Price = 5$\n"}, "$$"),
    ({"name": "irc1"}, "dot"),
    ({"name": "irc1.catch\n[Server]"}, "dot"),
    ({"port": 0}, "1..65535"),
    ({"info": "two\nlines"}, "one line"),
    ({"network": "a network"}, "network"),
    ({"listen": "0.0.0.0\nPorts = 1"}, "listen"),
    ({"peers": [IRC2, IRC2]}, "named once"),
    ({"peers": [Peer("IRC1.catch", "x", 1, "a", "b")]}, "not as this server"),
    ({"directory": "relative/dir"}, "absolute"),
])
def test_bad_values_are_refused_not_written(change, words):
    args = {"template": "Name = $name\n", "name": "irc1.catch", "port": 6667, "peers": [], "listen": "0.0.0.0",
            "info": "", "network": "catch", "directory": "/tmp/x", **change}
    with pytest.raises(ConfigError, match=re.escape(words)):
        ircdconf.render(args.pop("template"), **args)


def test_a_dollar_sign_is_written_doubled():
    assert ircdconf.render("Info = $$5 $name\n", "a.b", 1) == "Info = $5 a.b\n"


def ngircd_check(text: str, directory: Path) -> str:
    """ngircd's own verdict on `text` (its -t output); its complaints are lines starting with ' - '."""
    (directory / "conf.d").mkdir(exist_ok=True)
    conf = directory / "ngircd.conf"
    conf.write_text(text)
    result = subprocess.run([str(NGIRCD), "-t", "-f", str(conf)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.mark.parametrize("connect", [True, False])
def test_ngircd_accepts_the_rendered_configuration(tmp_path, connect):
    text = rendered(tmp_path, [IRC2, IRC3], connect)
    if NGIRCD is None:                       # without ngircd: at least the structure ngircd reads
        assert [line for line in text.splitlines() if line.startswith("[")] == \
            ["[Global]", "[Limits]", "[Options]", "[Server]", "[Server]"]
        return
    out = ngircd_check(text, tmp_path)
    complaints = [line for line in out.splitlines() if line.startswith(" - ")]
    assert complaints == [" - Maximum penalty increase ('MaxPenaltyTime') is set to 0, this is not recommended!"], out
    dump = settings(out.split("Ok, dump of your server configuration follows:", 1)[1])
    assert dump["GLOBAL.Name"] == ["irc1.catch"]
    assert dump["LIMITS.MaxPenaltyTime"] == ["0"] and dump["LIMITS.MaxNickLength"] == ["30"]
    assert dump["OPTIONS.DNS"] == ["no"] and dump["OPTIONS.IncludeDir"] == [f"{tmp_path}/conf.d"]
    assert dump["SERVER.Name"] == ["irc2.catch", "irc3.catch"]
    assert dump["SERVER.Passive"] == ["no", "no"]
    assert dump["SERVER.Port"] == (["6667", "6697"] if connect else ["0", "0"])
    assert dump["SERVER.MyPassword"] == ["one-to-two", "one-to-three"]


def test_ngircd_would_complain_about_a_broken_file(tmp_path):
    """The check above can fail: ngircd -t does report what it cannot use."""
    if NGIRCD is None:
        pytest.skip("ngircd is not installed here (the test above checked the text)")
    out = ngircd_check("[Global]\n\tName = irc1.catch\n\tNoSuchThing = 1\n", tmp_path)
    assert any(line.startswith(" - ") and "NoSuchThing" in line for line in out.splitlines()), out


def test_listening_is_read_from_proc_for_one_process():
    other = subprocess.Popen(["sleep", "30"])
    try:
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            port = server.getsockname()[1]
            assert not ircd.listening(os.getpid(), port)
            server.listen()
            assert ircd.listening(os.getpid(), port)
            assert not ircd.listening(other.pid, port)       # another process's sockets do not count
    finally:
        other.kill()
        other.wait()


def _serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nestbed.apps.ircd", "serve", "--name", "irc1.catch", *args],
                          capture_output=True, text=True, timeout=30, env={**os.environ, "TMPDIR": str(tmp_path)})


@pytest.mark.parametrize("args, code, words", [
    (["--template-text", "Name = $name\nX = $nope\n"], 2, "$nope"),
    (["--template", "/nonexistent/ngircd.conf.template"], 2, "--template"),
    (["--template-text", "Name = $name\n", "--peer", "irc2=irc2:6667:a:b"], 2, "dot"),
    (["--template-text", "Name = $name\n", "--ngircd", "/nonexistent/ngircd"], 1, "not found"),
    ([], 2, "--template"),
])
def test_serve_says_bad_input_in_one_line_and_leaves_nothing(tmp_path, args, code, words):
    result = _serve(tmp_path, *args)
    assert result.returncode == code, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, words", [
    (["--host", "h", "--expect", "irc2"], "dot"),
    (["--host", "h", "--expect", "irc2.catch", "--timeout", "0"], "--timeout"),
    (["--host", "h", "--expect", "irc2.catch", "--port", "0"], "1..65535"),
])
def test_linked_says_bad_input_in_one_line(args, words):
    result = subprocess.run([sys.executable, "-m", "nestbed.apps.ircd", "linked", *args], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2 and words in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
