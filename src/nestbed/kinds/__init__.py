"""Node kinds as plugins: `registry` finds a kind by name, `base.NodeKind` is what a kind answers, and one module
per built-in kind (process, qemu, vhost, physical) says how it differs."""
