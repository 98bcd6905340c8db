"""The kernel command-line items the guest's stage 2 decodes (no root)."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nestbed.realize.guestkit import protocol

# Kernel command-line text: anything but NUL (and lone surrogates, which are not encodable text).
ARGUMENT = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)))


def test_plain_arguments_travel_as_they_are_others_as_base64():
    # stage 2 decodes a base64 item with one fork+exec in the guest: plain words skip it
    assert protocol.encode_argv(["/usr/bin/python3", "-S", "--config", "/a/b.json", ""]) == \
        "%/usr/bin/python3,%-S,%--config,%/a/b.json,%"
    encoded = protocol.encode_argv(["a b", "x,y", "%lit"])
    assert not any(item.startswith("%") for item in encoded.split(","))
    assert protocol.decode_items(encoded) == ["a b", "x,y", "%lit"]


@given(st.lists(ARGUMENT, min_size=1))
def test_any_argv_round_trips_as_one_comma_separated_word(argv):
    encoded = protocol.encode_argv(argv)
    assert protocol.decode_items(encoded) == argv
    assert len(encoded.split(",")) == len(argv)              # no item carries a comma...
    assert not any(c.isspace() for c in encoded)              # ...or splits the kernel command line


@given(st.dictionaries(st.from_regex(r"[A-Z_][A-Z0-9_]*", fullmatch=True), ARGUMENT, min_size=1))
def test_env_items_are_key_equals_value(env):
    assert protocol.decode_items(protocol.encode_env(env)) == [f"{k}={v}" for k, v in env.items()]


def test_text_a_shell_would_expand_is_base64():
    for risky in ("$HOME", "`id`", "a;b", "*", "~", "'", '"', "\\", "x\ny"):
        (item,) = protocol.encode_argv([risky]).split(",")
        assert not item.startswith("%") and protocol.decode_items(item) == [risky]
