"""The control network's nftables table (its script, reading its mark back, removing only marked tables) and the
marks on links in the host's namespace (realize.control)."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from nestbed.netlinkwire import IFINFO, RTM_NEWLINK
from nestbed.realize import control, firewall, ownership

MARK = ownership.mark("lab", Path("/var/lib/nestbed/lab"))
LISTING = f"""table inet nestbed-nb-lab {{ # handle 7
\tcomment "{MARK}"
\tchain input {{ # handle 1
\t\ttype filter hook input priority filter - 10; policy accept;
\t\tiifname "control0" drop # handle 3
\t}}
}}
"""


def script() -> str:
    return firewall.ruleset("nestbed-nb-lab", MARK, "control0", ["nbk1a2b3c.*", "nbc1a2b3c.*"], "172.30.5.0/24",
                            "172.30.5.1")


def test_the_script_creates_a_marked_table_that_only_lets_in_replies_to_the_hosts_connections():
    lines = script().splitlines()
    assert lines[0] == f'create table inet nestbed-nb-lab {{ comment "{MARK}"; }}'     # fails if it exists
    inputs = [line.split(" input ", 1)[1] for line in lines if line.startswith("add rule inet nestbed-nb-lab input ")]
    assert inputs == ['iifname "control0" ip saddr 172.30.5.0/24 ip daddr 172.30.5.1 ct direction reply '
                      'ct state established,related accept',
                      'iifname "control0" drop', 'iifname "nbk1a2b3c.*" drop', 'iifname "nbc1a2b3c.*" drop']
    forwards = [line.split(" forward ", 1)[1] for line in lines
                if line.startswith("add rule inet nestbed-nb-lab forward ")]
    assert forwards[:3] == ['iifname "control0" oifname "control0" accept',   # switched within the bridge
                            'iifname "control0" drop', 'oifname "control0" drop']
    assert {f'{way} "{port}" drop' for port in ("nbk1a2b3c.*", "nbc1a2b3c.*") for way in ("iifname", "oifname")} \
        == set(forwards[3:])
    hooks = [line for line in lines if line.startswith("add chain")]
    assert [h.split()[4] for h in hooks] == ["input", "forward"]
    assert all("policy accept" in h and "priority filter - 10" in h for h in hooks)   # only the bridge's traffic


@pytest.mark.parametrize("bad", ['control0" accept; #', "nbk x", "", "a" * 256])
def test_a_name_that_is_not_nestbeds_never_reaches_the_script(bad):
    with pytest.raises(ValueError, match="is not a name nestbed puts"):
        firewall.ruleset("nestbed-nb-lab", MARK, bad, [], "172.30.5.0/24", "172.30.5.1")
    with pytest.raises(ValueError):
        firewall.ruleset("nestbed-nb-lab", MARK, "control0", [], "172.30.5.0/24", "not-an-address")


def test_the_listing_gives_the_tables_handle_and_mark():
    assert firewall.parse_listing(LISTING, "inet", "nestbed-nb-lab") == (7, MARK)
    unmarked = LISTING.replace(f'\tcomment "{MARK}"\n', "")
    assert firewall.parse_listing(unmarked, "inet", "nestbed-nb-lab") == (7, None)
    assert firewall.parse_listing(LISTING, "inet", "nestbed-other") == (None, None)
    rule_comment = unmarked.replace('drop # handle 3', 'drop comment "x" # handle 3')
    assert firewall.parse_listing(rule_comment, "inet", "nestbed-nb-lab") == (7, None)     # a rule's is not the table's


class FakeNft:
    def __init__(self, listing: str | None):
        self.listing = listing
        self.calls: list[list[str]] = []

    def __call__(self, args, script=None, preexec=None):
        self.calls.append(args)
        if args[:2] == ["-a", "list"]:
            if self.listing is None:
                return 1, "", "Error: No such file or directory"
            return 0, self.listing, ""
        return 0, "", ""


@pytest.mark.parametrize("listing, deleted, kept", [
    (LISTING, True, None),
    (LISTING.replace(MARK, "someone else"), False, "it carries 'someone else'"),
    (LISTING.replace(f'\tcomment "{MARK}"\n', ""), False, "it carries no mark"),
    (None, False, None),                                                    # gone already
])
def test_teardown_deletes_the_journaled_table_by_handle_only_when_it_carries_the_mark(monkeypatch, listing, deleted,
                                                                                     kept):
    fake = FakeNft(listing)
    monkeypatch.setattr(firewall, "nft", fake)
    lines = firewall.remove([{"t": "netns", "name": "x"}, firewall.entry("lab")], MARK)
    assert (["delete", "table", "inet", "handle", "7"] in fake.calls) == deleted
    assert all(call[0] != "delete" or call[-1] == "7" for call in fake.calls)
    if kept is None:
        assert lines == []
    else:
        assert len(lines) == 1 and lines[0].startswith("left nftables table inet nestbed-nb-lab: ") and kept in lines[0]


def test_marks_name_the_experiment_and_its_state_directory():
    assert MARK.startswith("nestbed:lab:")
    assert ownership.mark("lab", Path("/tmp/other/lab")) != MARK
    assert ownership.mark("lab", Path("/var/lib/nestbed/lab")) == MARK
    assert len(ownership.mark("a" * 15, Path("/x" * 200))) < 255             # fits a link's alias


def test_the_alias_message_names_the_link_and_carries_the_mark_without_a_nul():
    encoded = control.set_alias(0, MARK, "control0")
    length, kind = struct.unpack_from("=IH", encoded)
    assert (length, kind) == (len(encoded), RTM_NEWLINK)
    attrs, offset = {}, 16 + IFINFO.size
    while offset < len(encoded):
        size, code = struct.unpack_from("=HH", encoded, offset)
        attrs[code] = encoded[offset + 4:offset + size]
        offset += (size + 3) & ~3
    assert attrs[control.IFLA_IFALIAS] == MARK.encode()
    assert attrs[3] == b"control0\0"                                        # IFLA_IFNAME: found by name


class FakeLink:
    def __init__(self, alias):
        self.alias = alias

    def get_attr(self, name):
        assert name == "IFLA_IFALIAS"
        return self.alias


class FakeIPRoute:
    links: dict[str, tuple[int, str | None]] = {}
    deleted: list[int] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def link_lookup(self, ifname):
        return [self.links[ifname][0]] if ifname in self.links else []

    def link(self, command, index):
        if command == "get":
            return [FakeLink(next(alias for i, alias in self.links.values() if i == index))]
        assert command == "del"
        self.deleted.append(index)


def test_root_links_are_removed_only_with_the_experiments_mark(monkeypatch):
    import pyroute2
    FakeIPRoute.links = {"control0": (10, MARK), "nbk1a2b3c.0": (11, None), "nbc1a2b3c.0": (12, "nestbed:x:0")}
    FakeIPRoute.deleted = []
    monkeypatch.setattr(pyroute2, "IPRoute", FakeIPRoute)
    entries = [{"t": "rootlink", "name": name} for name in ("control0", "nbk1a2b3c.0", "nbc1a2b3c.0", "gone")]
    kept = control.remove_root_links(entries, MARK)
    assert FakeIPRoute.deleted == [10]
    assert sorted(kept) == [f"left link nbc1a2b3c.0: it carries 'nestbed:x:0', not {MARK!r}, so nestbed did not "
                            f"make it for this experiment",
                            f"left link nbk1a2b3c.0: it carries no mark, not {MARK!r}, so nestbed did not make it "
                            f"for this experiment"]
