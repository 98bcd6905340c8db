# nestbed guest stage 2: PID 1 in the host root overlay; runs the command, then powers off
B=/.nestbed/busybox
fail() { echo "@FAIL@ $*" >/dev/console; $B sync; $B poweroff -f; $B sleep 2; $B reboot -f; }
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=linux
# Items are `%RAW` or base64 (see encode_argv); shell builtins only, but one base64 per encoded item: under
# emulation every fork+exec costs ~15 ms of a booting VM's CPU.
item() { case "$1" in %*) ITEM="${1#%}" ;; *) ITEM="$(echo "$1" | $B base64 -d)" ;; esac; }
read -r ENVS < /run/nestbed-env
read -r ARGS < /run/nestbed-argv
IFS=,
for e in $ENVS; do item "$e"; export "$ITEM"; done
set --
for a in $ARGS; do item "$a"; set -- "$@" "$ITEM"; done
unset IFS
cd /
read -r CMDLINE < /proc/cmdline
case " $CMDLINE " in *" nestbed.trace "*) read -r UP < /proc/uptime; echo "nestbed-trace $UP handoff" ;; esac
echo "@HANDOFF@ $*" >/dev/console
# the ACPI power button (QMP system_powerdown): SIGTERM to the command, power off when it ends (or after 3 s)
[ -e /dev/input/event0 ] && $B acpid -c /.nestbed/acpi -p /run/nestbed-acpid.pid 2>/dev/null
"$@" </dev/console &
echo $! > /run/nestbed-command.pid
wait $!
rc=$?
if [ -e /run/nestbed-powerdown ]; then
  echo "@EXIT@ powered down (command ended with status $rc)" >/dev/console
  $B sync; $B poweroff -f; $B sleep 2; $B reboot -f
fi
[ $rc -eq 0 ] || fail "command exited with status $rc: $*"
echo "@EXIT@ command exited with status 0" >/dev/console
$B sync; $B poweroff -f; $B sleep 2; $B reboot -f
