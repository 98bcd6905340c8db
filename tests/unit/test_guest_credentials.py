"""A VM's own credential and the challenge–response that proves it (no root, no VM)."""
from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from nestbed import guestproto, paths
from nestbed.realize import credential
from nestbed.realize.state import ExperimentState


def test_the_answer_is_hmac_sha256_of_the_challenge_under_the_credential():
    for secret in ("c0ffee" * 8, "x", "k" * 100):           # long keys are hashed first, as RFC 2104 says
        challenge = os.urandom(guestproto.CHALLENGE_BYTES).hex()
        expected = hmac.new(secret.encode(), b"nestbed-guest:" + challenge.encode(), hashlib.sha256).hexdigest()
        assert guestproto.answer(secret, challenge) == expected


def test_an_answer_fits_one_challenge_and_one_credential():
    assert guestproto.answer("a" * 64, "00" * 16) != guestproto.answer("a" * 64, "01" + "00" * 15)
    assert guestproto.answer("a" * 64, "00" * 16) != guestproto.answer("b" + "a" * 63, "00" * 16)


def test_each_vm_has_its_own_credential_derived_from_the_experiments(tmp_path):
    state = ExperimentState("lab", tmp_path)
    credential.ensure(state)
    secret = paths.credential(tmp_path).read_text().strip()
    one, two = credential.for_vm(state, "vm1"), credential.for_vm(state, "vm2")
    assert one != two and secret not in (one, two) and len(one) == 64
    assert one == credential.for_vm(state, "vm1")
    target = tmp_path / "vm1.credential"
    credential.write_for_vm(state, "vm1", target)
    assert target.read_text() == one and target.stat().st_mode & 0o777 == 0o600


def test_the_guest_reads_its_credential_from_fw_cfg_sysfs():
    assert guestproto.CREDENTIAL_SYSFS == "/sys/firmware/qemu_fw_cfg/by_name/opt/nestbed/credential/raw"
    assert Path(guestproto.CREDENTIAL_SYSFS).parts[-2] == "credential"
