#!/bin/sh
# Prepare a debootstrapped Debian root filesystem to boot as a kbuild test
# host (a podman container running systemd and sshd).
#
# Usage: host-prepare.sh ROOTFS_DIR
#
# Run by kbuild.runtime.providers.podman on the build machine, against the directory
# (no chroot needed). Every container made from the image gets its own
# machine-id and its own ssh host keys on first boot.
set -eu

root=${1:?usage: host-prepare.sh ROOTFS_DIR}
[ -d "$root/etc/ssh" ] || { echo "not a rootfs with openssh-server: $root" >&2; exit 2; }

# sshd: root login with password or key, no DNS lookups, many sessions
# (kbuild opens one channel per command and runs hosts in parallel).
mkdir -p "$root/etc/ssh/sshd_config.d"
cat > "$root/etc/ssh/sshd_config.d/kbuild.conf" <<'CONF'
PermitRootLogin yes
PasswordAuthentication yes
PubkeyAuthentication yes
UseDNS no
MaxSessions 64
MaxStartups 64:30:128
CONF

# Host keys are made per container on first boot, never shared via the image.
rm -f "$root"/etc/ssh/ssh_host_*
mkdir -p "$root/etc/systemd/system/ssh.service.d"
cat > "$root/etc/systemd/system/ssh.service.d/kbuild-hostkeys.conf" <<'CONF'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
CONF

# An empty machine-id: systemd makes a fresh one for each container.
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"

# No consoles, no udev (the kernel is shared), no hardware units.
for unit in getty@tty1.service console-getty.service serial-getty@console.service \
    getty.target systemd-udevd.service systemd-udevd-control.socket \
    systemd-udevd-kernel.socket systemd-udev-trigger.service \
    systemd-modules-load.service sys-kernel-config.mount \
    systemd-firstboot.service systemd-remount-fs.service; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
done

# sshd enabled at boot (debootstrap's postinst already does; be explicit).
mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
ln -sf /lib/systemd/system/ssh.service "$root/etc/systemd/system/multi-user.target.wants/ssh.service"

# Smaller image: no apt lists or caches.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
