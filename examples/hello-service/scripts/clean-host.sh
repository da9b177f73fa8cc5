#!/bin/sh
# Clean script of the hello-service image (scripts/clean-host.sh): stops and
# removes what init-host.sh and the welcome app installed.
set -u
systemctl disable --now kbuild-hello.service >/dev/null 2>&1 || true
rm -f /etc/systemd/system/kbuild-hello.service
systemctl daemon-reload
systemctl reset-failed kbuild-hello.service 2>/dev/null || true
rm -f /etc/kbuild-hello-welcome
echo "hello-service removed from $KBUILD_HOST"
