"""qemu VM nodes: the qemu command line, the accelerator probe, TAP devices in namespaces, and the qemu process.

A guest boots the kit of `guestkit` (kernel + initramfs, no disk): its root is a host directory over virtio-9p
(read-only, tmpfs overlay in the guest): for nestbed's VMs, an allowlist of the host's trees that exists only in
that qemu's mount namespace (export), and the command in VmSpec.argv runs as the guest's payload (the
guest agent). Each NIC is a TAP device that `taps.open_tap` creates inside a network namespace and passes to
qemu as an fd, so the TAP lives exactly as long as the qemu process.

Module map: cmdline (VmSpec, the qemu and kernel command lines; pure) · accelprobe (KVM or TCG, probed once) ·
taps (TAP fds in a namespace) · export (the guest's tree) · vmprocess (launch, console watch, QMP stop, boot).
"""
