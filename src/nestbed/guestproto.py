"""What the host and a VM's boot agent (agent/guestboot.py) agree on: how it starts, what it prints, where
it puts things, how a client proves it holds the VM's credential. The JSON-lines channel itself is
nestbed.channel.

Imports nothing when loaded: the boot agent loads this module under software emulation, where every import
costs. (`answer` imports CPython's own SHA-256 module on first use: not hashlib, which loads OpenSSL.)
"""

BOOT_PROGRAM = "import sys; from nestbed.agent.guestboot import main; sys.exit(main())"   # no runpy (-m) at boot
READY_LINE = "nestbed-agent: {name} ready"      # realize/vms.py watches the console for it
FAILED_LINE = "nestbed-agent: {name} FAILED"
HOSTS = "/run/nestbed-hosts"                    # every node's names (a vhost's nodes bind it over /etc/hosts)
MAILBOX_MOUNTPOINT = "/var/nestbed/mailbox"     # where a node's programs find their mailbox, on a host or in a VM

# A VM's credential is its own (realize/credential.py derives it), handed to qemu as a fw_cfg file: the guest
# reads it from sysfs, never from the tree the host shares with it.
CREDENTIAL_FW_CFG = "opt/nestbed/credential"
CREDENTIAL_SYSFS = f"/sys/firmware/qemu_fw_cfg/by_name/{CREDENTIAL_FW_CFG}/raw"
# Challenge–response: the agent's first line is {"challenge": HEX} (fresh random bytes per connection); the
# client's is {"answer": answer(credential, HEX)}. The credential never crosses the wire, an answer is good once.
CHALLENGE_BYTES = 16
REFUSED = "refused: wrong or missing credential"


def answer(credential: str, challenge: str) -> str:
    """HMAC-SHA256(credential, "nestbed-guest:" + challenge), hex (RFC 2104, as hmac.new would compute it)."""
    try:
        from _sha256 import sha256  # type: ignore[import-not-found]  # CPython ≤ 3.11 (built in on Debian's)
    except ImportError:
        from _sha2 import sha256  # type: ignore[import-not-found]  # CPython 3.12 and later
    key = credential.encode()
    if len(key) > 64:
        key = sha256(key).digest()
    key = key.ljust(64, b"\0")
    inner = sha256(bytes(k ^ 0x36 for k in key) + b"nestbed-guest:" + challenge.encode()).digest()
    return str(sha256(bytes(k ^ 0x5C for k in key) + inner).hexdigest())
