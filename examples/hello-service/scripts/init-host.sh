#!/bin/sh
# Host init script of the hello-service image (the runtime contract's
# scripts/init-host.sh): installs and starts the service on every host.
# Runs as root in the cluster rootfs; KBUILD_ROOTFS is its absolute path.
set -eu
unit=/etc/systemd/system/kbuild-hello.service
cat >"$unit.tmp" <<UNIT
[Unit]
Description=kbuild example hello-service
RequiresMountsFor=$KBUILD_ROOTFS
After=network.target

[Service]
EnvironmentFile=$KBUILD_ROOTFS/etc/hello-service.env
ExecStart=/bin/sh -c 'exec $KBUILD_ROOTFS/bin/hello-service -listen :\${HELLO_PORT}'
Restart=on-failure

[Install]
WantedBy=multi-user.target
UNIT
mv -f "$unit.tmp" "$unit"
systemctl daemon-reload
systemctl enable kbuild-hello.service >/dev/null 2>&1
systemctl restart kbuild-hello.service
echo "hello-service started on $KBUILD_HOST"
