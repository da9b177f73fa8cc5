#!/bin/sh
# A host moving to a newer Kubernetes image (`kbuild upgrade`). kbuild has
# mounted the new image at this rootfs already (running processes keep the old
# one), restarted the embedded registry on it and drained the node. Here: the
# host files again, `kubeadm upgrade apply` (KBUILD_UPGRADE_APPLY=1: the lead
# master) or `kubeadm upgrade node`, then every service whose binary or
# configuration changed restarts. Re-running it is safe (kubeadm skips what is
# at the target version already).
. ./scripts/lib.sh

# changed UNIT BINARY: true when the unit's main process does not run BINARY
# as this rootfs has it (or does not run at all)
changed() {
    _pid=$(systemctl show -p MainPID --value "$1" 2>/dev/null || echo 0)
    [ "${_pid:-0}" = 0 ] || ! cmp -s "/proc/$_pid/exe" "$2"
}

old_ctrd_conf=$(sha256sum </etc/containerd/config.toml 2>/dev/null || true)
install_host_files
systemctl daemon-reload
if changed containerd.service "$ROOTFS/bin/containerd" ||
    [ "$old_ctrd_conf" != "$(sha256sum </etc/containerd/config.toml)" ]; then
    # containers keep running (their shims are separate processes)
    log "restarting containerd (new binary or configuration)"
    systemctl restart containerd.service
    wait_for 180 "containerd's CRI" crictl info
fi
if ! is_master && changed kbuild-vip.service "$ROOTFS/bin/kbuild-vip"; then
    systemctl restart kbuild-vip.service
fi

if [ "${KBUILD_UPGRADE_APPLY:-}" = 1 ]; then
    withheld kubeadm upgrade apply "$KUBERNETES_VERSION" --yes --certificate-renewal=true \
        --ignore-preflight-errors="$KUBEADM_IGNORE_PREFLIGHT"
else
    withheld kubeadm upgrade node --ignore-preflight-errors="$KUBEADM_IGNORE_PREFLIGHT"
fi
systemctl restart kubelet.service
if is_master; then
    mkdir -p /root/.kube
    cp /etc/kubernetes/admin.conf /root/.kube/config
    chmod 600 /root/.kube/config
    # ready, and authorizing again (a restarted API server forbids a moment)
    wait_for 180 "the API server" kubectl get --raw /readyz
    wait_for 120 "the API server's authorization" kubectl get nodes
fi
