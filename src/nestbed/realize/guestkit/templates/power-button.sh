#!/.nestbed/busybox sh
# nestbed: ACPI power button -> SIGTERM to the guest's command; stage 2 powers off when it ends
B=/.nestbed/busybox
$B touch /run/nestbed-powerdown
$B kill -TERM "$($B cat /run/nestbed-command.pid)" 2>/dev/null
$B sleep 3
$B sync; $B poweroff -f
