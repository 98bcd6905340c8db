"""What the host and a VM's boot agent (agent/guestboot.py) agree on: how it starts, what it prints, where
it puts things. The JSON-lines channel itself is nestbed.channel.

No imports at all: the boot agent loads this module under software emulation, where every import costs.
"""

BOOT_PROGRAM = "import sys; from nestbed.agent.guestboot import main; sys.exit(main())"   # no runpy (-m) at boot
READY_LINE = "nestbed-agent: {name} ready"      # realize/vms.py watches the console for it
FAILED_LINE = "nestbed-agent: {name} FAILED"
HOSTS = "/run/nestbed-hosts"                    # every node's names (a vhost's nodes bind it over /etc/hosts)
MAILBOX_MOUNTPOINT = "/var/nestbed/mailbox"     # where a node's programs find their mailbox, on a host or in a VM
