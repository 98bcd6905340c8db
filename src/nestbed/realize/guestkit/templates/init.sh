#!/bin/sh
# nestbed guest init (nestbed.realize.guestkit, format @FORMAT@): modules, host root over 9p + tmpfs overlay, handoff
export PATH=/bin
t() { [ -z "$TRACE" ] || echo "nestbed-trace $(cat /proc/uptime) $*" >/dev/console; }
fail() {
  echo "@FAIL@ $*" >/dev/console
  sync; poweroff -f; sleep 2; reboot -f
}
mount -t devtmpfs dev /dev 2>/dev/null
mount -t proc proc /proc
mount -t sysfs sys /sys
case " $(cat /proc/cmdline) " in *" nestbed.trace "*) TRACE=1 ;; esac
t init
V=@VERSION@
for m in @REQUIRED@; do insmod /lib/modules/$V/$m || fail "cannot load module $m (kernel $V)"; done
t required modules loaded
for m in @OPTIONAL@; do insmod /lib/modules/$V/$m 2>/dev/null; done
t optional modules loaded
CACHE=@CACHE@
for p in $(cat /proc/cmdline); do
  case "$p" in
    nestbed.argv=*) ARGV="${p#nestbed.argv=}" ;;
    nestbed.env=*) ENVS="${p#nestbed.env=}" ;;
    nestbed.hostname=*) hostname "${p#nestbed.hostname=}" ;;
    nestbed.9pcache=*) CACHE="${p#nestbed.9pcache=}" ;;
  esac
done
[ -n "$ARGV" ] || fail "no nestbed.argv= on the kernel command line (nothing to run)"
mkdir -p /lower /rw /newroot
mount -t 9p -o ro,trans=virtio,version=9p2000.L,cache=$CACHE,msize=512000 hostroot /lower ||
  fail "cannot mount the host root over virtio-9p (mount_tag hostroot)"
mount -t tmpfs -o mode=0755 rw /rw && mkdir -p /rw/upper /rw/work || fail "cannot mount the tmpfs upper layer"
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot ||
  fail "cannot mount the overlay on the host root"
t overlay mounted
N=/newroot
mkdir -p $N/.nestbed $N/lib/modules $N/run $N/tmp $N/dev $N/proc $N/sys || fail "cannot write to the overlay"
cp /stage2 $N/.nestbed/stage2 && cp -a /acpi $N/.nestbed/acpi || fail "cannot write to the overlay"
# busybox for stage 2 and the modules: the host's files seen over 9p when they are there (no copy), else ours
if [ -x "$N@HOSTBB@" ]; then ln -s "@HOSTBB@" $N/.nestbed/busybox; else cp /bin/busybox $N/.nestbed/busybox; fi
ln -s busybox $N/.nestbed/modprobe
if [ ! -e $N/lib/modules/$V ]; then
  if [ -n "@MODLINK@" ] && [ -f "$N@MODLINK@/modules.dep" ]; then ln -s "@MODLINK@" $N/lib/modules/$V
  else cp -a /lib/modules/$V $N/lib/modules/$V; fi
fi
[ -n "@KMODPROBE@" ] || echo /.nestbed/modprobe > /proc/sys/kernel/modprobe
mount -t tmpfs -o mode=0755 run $N/run
echo "$ARGV" > $N/run/nestbed-argv
echo "$ENVS" > $N/run/nestbed-env
mount --move /dev $N/dev && mount --move /proc $N/proc && mount --move /sys $N/sys || fail "cannot move /dev /proc /sys"
mkdir -p $N/dev/pts $N/dev/shm
mount -t devpts -o mode=0620,ptmxmode=0666 devpts $N/dev/pts
mount -t tmpfs -o mode=1777 shm $N/dev/shm
t switch_root
exec switch_root $N /.nestbed/busybox sh /.nestbed/stage2
fail "switch_root failed"
