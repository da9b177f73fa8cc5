#!/bin/sh
# A host leaving the cluster (delete --nodes / --all): kubeadm reset, then no
# kube processes, mounts, units, CNI interfaces, iptables rules of the cluster
# or files outside the rootfs are left (kbuild then unmounts and removes the rootfs).
. ./scripts/lib.sh
set +e

if [ -S /run/containerd/containerd.sock ] && { [ -d /etc/kubernetes ] || [ -d /var/lib/kubelet ]; }; then
    timeout 180 kubeadm reset -f --cri-socket "$CRI_SOCKET" >/dev/null 2>&1 ||
        log "kubeadm reset failed; cleaning by hand"
    timeout 60 crictl rmp -af >/dev/null 2>&1
fi
for u in $UNITS; do
    systemctl disable --now "$u" >/dev/null 2>&1
done
# the VIP agent's nftables table and the VIP on lo (nodes)
if [ -x "$ROOTFS/bin/kbuild-vip" ] && [ -n "${VIP:-}" ]; then
    vip --cleanup --status /run/kbuild-vip/status.json >/dev/null 2>&1
    rmdir /run/kbuild-vip 2>/dev/null
fi
# containerd's shims (KillMode=process) and anything else still running from the rootfs
for p in /proc/[0-9]*; do
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    case "$exe" in "$ROOTFS"/*) kill -9 "${p#/proc/}" 2>/dev/null ;; esac
done
sleep 1
# mounts of pods, snapshots and network namespaces, deepest first
for d in /var/lib/kubelet "$CONTAINERD_ROOT" /run/containerd /run/netns /var/run/netns; do
    grep -o " ${d}[^ ]*" /proc/mounts | sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
    done
done
if [ -f etc/kbuild/added-route ]; then
    # shellcheck disable=SC2046 # "CIDR dev IF" written by init-host.sh
    ip route del $(cat etc/kbuild/added-route) 2>/dev/null
fi
for l in cni0 flannel.1 flannel-v6.1 kube-ipvs0; do
    ip link delete "$l" >/dev/null 2>&1
done
# iptables/nft rules of kube-proxy, flannel and the CNI plugins (tools from the image)
NF=$ROOTFS/opt/netfilter
if [ -x "$NF/usr/sbin/xtables-nft-multi" ]; then
    for t in iptables ip6tables; do
        for mode in nft legacy; do
            rules=$(chroot "$NF" "/usr/sbin/$t-$mode-save" 2>/dev/null) || continue
            if printf '%s\n' "$rules" | grep -qE 'KUBE-|FLANNEL|CNI-'; then
                printf '%s\n' "$rules" | grep -vE 'KUBE-|FLANNEL|CNI-' | chroot "$NF" "/usr/sbin/$t-$mode-restore"
            fi
        done
    done
    for fam in ip ip6; do chroot "$NF" /usr/sbin/nft delete table "$fam" kube-proxy >/dev/null 2>&1; done
fi
for b in $LINKED; do
    if [ "$(readlink "/usr/local/bin/$b")" = "$ROOTFS/bin/$b" ]; then rm -f "/usr/local/bin/$b"; fi
done
for u in $UNITS; do rm -f "/etc/systemd/system/$u"; done
rm -rf /etc/systemd/system/kubelet.service.d
systemctl daemon-reload
systemctl reset-failed >/dev/null 2>&1
rm -rf /etc/kubernetes /var/lib/kubelet /var/lib/etcd /var/lib/cni /run/flannel /run/kubeadm \
    /etc/containerd /run/containerd "$CONTAINERD_ROOT" /var/lib/containerd /root/.kube /etc/crictl.yaml \
    /var/log/pods /var/log/containers /var/lib/kbuild-backup /var/lib/etcd.kbuild-restore \
    /var/lib/etcd.kbuild-before-restore
rm -f /etc/cni/net.d/10-flannel.conflist
rmdir /etc/cni/net.d /etc/cni 2>/dev/null
if [ -f etc/kbuild/absent-dirs ]; then
    # deepest first; only if still empty (something else may have filled them)
    sort -r etc/kbuild/absent-dirs | while read -r d; do rmdir "$d" 2>/dev/null; done
fi
exit 0
