#!/bin/sh
# The welcome app: launched on master0 by CMDS once the hosts are up.
# It records which hosts the cluster has (a cluster-level step).
set -eu
printf 'cluster %s masters %s nodes %s\n' "$KBUILD_CLUSTER" "$KBUILD_MASTERS" "$KBUILD_NODES" \
    >/etc/kbuild-hello-welcome
echo "welcome written on $KBUILD_HOST"
