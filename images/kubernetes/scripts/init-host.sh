#!/bin/sh
# Every host: the embedded registry (serving this rootfs' registry/), containerd
# (+ runc, CNI) from the rootfs with kbuild's config and certs.d (every registry
# mirrored to the embedded one), the kubelet unit; on nodes the VIP agent.
. ./scripts/lib.sh

# directories kubelet creates for the control plane's hostPath volumes
# (DirectoryOrCreate): remember those that were not there, clean-host.sh removes them
if [ ! -f etc/kbuild/absent-dirs ]; then
    for d in $HOSTPATH_DIRS; do
        [ -e "$d" ] || echo "$d"
    done >etc/kbuild/absent-dirs.tmp
    mv etc/kbuild/absent-dirs.tmp etc/kbuild/absent-dirs
fi
for b in $LINKED; do ln -sfn "$ROOTFS/bin/$b" "/usr/local/bin/$b"; done
install_host_files
# kubeadm preflight wants these; a host that is a container may not let us write them
modprobe br_netfilter 2>/dev/null || true
for s in net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables; do
    f=/proc/sys/$(echo "$s" | tr . /)
    if [ -w "$f" ] && [ "$(cat "$f")" != 1 ]; then echo 1 >"$f" || true; fi
done
# A host without a default route (an air-gapped network) still needs a route for
# the service CIDR: a hostNetwork client's route lookup for a ClusterIP happens
# before kube-proxy's DNAT. On-link via the interface that reaches master0.
if [ -z "$(ip route show default)" ] && [ -n "${SvcCIDR:-}" ]; then
    dev=$(ip route get "$KBUILD_MASTER0" | sed -n 's/.* dev \([^ ]*\).*/\1/p')
    ip route replace "$SvcCIDR" dev "$dev"
    echo "$SvcCIDR dev $dev" >etc/kbuild/added-route
fi
systemctl daemon-reload
systemctl enable --now kbuild-registry.service
hex=$(printf %04X "$REGISTRY_PORT")
wait_for 30 "the embedded registry listening on :$REGISTRY_PORT" \
    grep -qE ":$hex [0-9A-F]+:0000 0A " /proc/net/tcp /proc/net/tcp6
if ! is_master; then
    # the VIP's rules exist before anything asks for apiserver.cluster.local
    vip --once --backends etc/kbuild/vip-backends
    systemctl enable --now kbuild-vip.service
fi
systemctl enable --now containerd.service
if ! wait_for 180 "containerd's CRI" crictl info; then
    journalctl -u containerd.service --no-pager -n 20 >&2
    exit 1
fi
systemctl enable kubelet.service
# the mirror works: pull the sandbox image through a name outside the registry
crictl pull "registry.k8s.io/pause:${SANDBOX_IMAGE##*:}" >/dev/null
